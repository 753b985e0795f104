"""The Kubernetes Indexed Job (e.g. on GKE) that runs N workers: :func:`job_manifest`, which
`evo launch k8s URL -n N --image IMAGE` (``launch.commands.launch_k8s``) writes or applies.

The manifest is plain JSON (``kubectl`` accepts it; no YAML library needed): a ``batch/v1``
Job with ``completionMode: Indexed`` and ``completions = parallelism = N``. Each pod runs
``evo worker URL --device ...``; the worker takes its index (its seed stream) from
``JOB_COMPLETION_INDEX``, which Kubernetes sets in Indexed Jobs. GPUs are requested as
``nvidia.com/gpu`` (requests = limits, as Kubernetes requires for extended resources), with
the usual GKE toleration. On GKE the pods reach a ``gs://`` population with Workload
Identity: give ``--service-account`` a Kubernetes service account bound to a Google service
account that may read and write the bucket (Application Default Credentials do the rest).

Failures and disruptions: pods run with ``restartPolicy: Never`` and each index may fail
``backoffLimitPerIndex`` times (a crash, an out-of-memory kill) before that index is given
up; a ``podFailurePolicy`` keeps disruptions from counting: a pod with the
``DisruptionTarget`` condition (Spot preemption, eviction, node drain or shutdown) or one
whose worker stopped cleanly on SIGTERM (exit 143) is simply replaced, and a worker that
exits with 2 (a bad population URL or config: retrying cannot help) fails its index at
once. A worker whose circuit breaker tripped (exit 3: ``--max-failed-children`` children in a
row failed) counts as an ordinary failure: the fault may be its node's (a bad GPU), so the
index is retried on a new pod, at most ``backoffLimitPerIndex`` times. ``--spot`` schedules on GKE Spot nodes (node selector and toleration),
``--node-selector`` adds any selector, ``--ephemeral-storage`` requests local disk.
"""

from __future__ import annotations

import re
from typing import Any

from ..errors import UserError

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?")
# Label keys: an optional DNS-subdomain prefix and "/", then a name of up to 63 characters.
_LABEL_KEY = re.compile(r"([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?")
_LABEL_VALUE = re.compile(r"([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?")
_QUANTITY = re.compile(r"\d+(\.\d+)?([KMGTPE]i|[kMGTPE]|m)?")
SPOT_LABEL = "cloud.google.com/gke-spot"   # GKE labels and taints Spot nodes with this key
EXIT_STOPPED_BY_SIGTERM = 128 + 15        # evo worker's exit after a clean stop on SIGTERM
EXIT_USER_ERROR = 2                        # evo's exit for bad input (URL, config): no retry helps


def job_manifest(url: str, n: int, image: str, *, name: str = "evo-workers", namespace: str | None = None,
                 gpus_per_worker: int = 1, device: str = "auto", cpu: str | None = "4", memory: str | None = "16Gi",
                 service_account: str | None = None, accelerator: str | None = None,
                 max_seconds: float | None = None, max_individuals: int | None = None,
                 max_failed_children: int | None = None, backoff_limit_per_index: int = 4, spot: bool = False,
                 node_selector: dict[str, str] | None = None, ephemeral_storage: str | None = None,
                 env: dict[str, str] | None = None, ttl_seconds: int | None = 86400,
                 retrain: bool = False) -> dict[str, Any]:
    """The Indexed Job manifest (a JSON-ready dict) for ``n`` workers on ``url``.

    ``device`` ``auto`` means ``cuda`` with GPUs and ``cpu`` without. Pods are never
    restarted in place (``restartPolicy: Never``); an index is retried up to
    ``backoff_limit_per_index`` times after real failures, while disruptions (Spot
    preemption, eviction) and clean SIGTERM stops do not count (``podFailurePolicy``).
    ``spot``: GKE Spot nodes only; ``node_selector``: more node labels to match;
    ``ephemeral_storage``: local disk requested per pod (e.g. ``20Gi``). ``retrain``: each
    pod runs ``evo retrain URL --pending`` (the final trainings ``evo retrain ... --no-train``
    queued; a replaced pod resumes from their checkpoints) instead of a worker.
    ``max_seconds``, ``max_individuals``, ``max_failed_children``: each worker's limits and
    circuit breaker (``evo worker``'s options; None: its defaults).
    Raises UserError for values Kubernetes would refuse.
    """
    if n < 1:
        raise UserError("-n must be at least 1")
    if not _NAME.fullmatch(name):
        raise UserError(f"bad job name {name!r}: lower-case letters, digits and '-', at most 52 characters")
    if not image or any(c.isspace() for c in image):
        raise UserError(f"bad image {image!r}")
    if gpus_per_worker < 0:
        raise UserError("--gpus-per-worker must be >= 0")
    if not 0 <= backoff_limit_per_index <= 1000:
        raise UserError(f"--backoff-limit-per-index must be in [0, 1000], got {backoff_limit_per_index}")
    if ephemeral_storage is not None and not _QUANTITY.fullmatch(ephemeral_storage):
        raise UserError(f"--ephemeral-storage expects a Kubernetes quantity such as 20Gi, got {ephemeral_storage!r}")
    selectors: dict[str, str] = {}
    if gpus_per_worker and accelerator:
        selectors["cloud.google.com/gke-accelerator"] = accelerator
    if spot:
        selectors[SPOT_LABEL] = "true"
    for key, value in (node_selector or {}).items():
        if not _LABEL_KEY.fullmatch(key) or not _LABEL_VALUE.fullmatch(value):
            raise UserError(f"--node-selector {key}={value}: not a valid Kubernetes label key and value")
        selectors[key] = value
    if device == "auto":
        device = "cuda" if gpus_per_worker > 0 else "cpu"
    if retrain:
        if max_seconds is not None or max_individuals is not None or max_failed_children is not None:
            raise UserError("--max-seconds/--max-individuals/--max-failed-children limit search workers, "
                            "not --retrain pods")
        command = ["evo", "retrain", url, "--pending", "--device", device]
    else:
        command = ["evo", "worker", url, "--device", device]
    if max_seconds is not None:
        command += ["--max-seconds", f"{max_seconds:g}"]
    if max_individuals is not None:
        command += ["--max-individuals", str(max_individuals)]
    if max_failed_children is not None:
        command += ["--max-failed-children", str(max_failed_children)]
    limits: dict[str, str] = {}
    requests: dict[str, str] = {}
    if cpu:
        requests["cpu"] = cpu
    if memory:
        requests["memory"] = limits["memory"] = memory
    if ephemeral_storage:
        requests["ephemeral-storage"] = ephemeral_storage
    if gpus_per_worker:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus_per_worker)
    labels = {"app.kubernetes.io/name": "evo", "app.kubernetes.io/component": "retrain" if retrain else "worker",
              "evo/job": name}
    container: dict[str, Any] = {
        "name": "worker", "image": image, "command": command,
        "env": [{"name": "EVO_POPULATION", "value": url}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
        + [{"name": k, "value": v} for k, v in sorted((env or {}).items())],
        "resources": {"requests": requests, "limits": limits},
    }
    pod_spec: dict[str, Any] = {"restartPolicy": "Never", "containers": [container]}
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    tolerations = []
    if gpus_per_worker:
        tolerations.append({"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"})
    if spot:
        tolerations.append({"key": SPOT_LABEL, "operator": "Equal", "value": "true", "effect": "NoSchedule"})
    if tolerations:
        pod_spec["tolerations"] = tolerations
    if selectors:
        pod_spec["nodeSelector"] = selectors
    metadata: dict[str, Any] = {"name": name, "labels": labels,
                                "annotations": {"evo/population": url}}
    if namespace:
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {
        "completions": n, "parallelism": n, "completionMode": "Indexed",
        "backoffLimitPerIndex": backoff_limit_per_index,
        "podFailurePolicy": {"rules": [
            # Spot preemption, eviction, node drain or shutdown: replace the pod, count nothing.
            {"action": "Ignore", "onPodConditions": [{"type": "DisruptionTarget", "status": "True"}]},
            # The worker stopped cleanly on SIGTERM (e.g. the pod was deleted): not its fault.
            {"action": "Ignore", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                 "values": [EXIT_STOPPED_BY_SIGTERM]}},
            # Bad population URL or config: every retry would fail the same way.
            {"action": "FailIndex", "onExitCodes": {"containerName": "worker", "operator": "In",
                                                    "values": [EXIT_USER_ERROR]}},
        ]},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}
