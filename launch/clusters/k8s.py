"""`evo launch k8s URL -n N --image IMAGE`: N workers as a Kubernetes Indexed Job (e.g. on GKE).

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
once. ``--spot`` schedules on GKE Spot nodes (node selector and toleration),
``--node-selector`` adds any selector, ``--ephemeral-storage`` requests local disk.

``--dry-run`` only writes the manifest (to ``-o FILE`` or stdout); without it the manifest is
applied with ``kubectl apply -f -``, after checking that the population has a config.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
from typing import Any

from ..errors import UserError
from ..options import add_command, device, non_negative_int, positive_int, positive_seconds

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
                 backoff_limit_per_index: int = 4, spot: bool = False,
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
        if max_seconds is not None or max_individuals is not None:
            raise UserError("--max-seconds/--max-individuals limit search workers, not --retrain pods")
        command = ["evo", "retrain", url, "--pending", "--device", device]
    else:
        command = ["evo", "worker", url, "--device", device]
    if max_seconds is not None:
        command += ["--max-seconds", f"{max_seconds:g}"]
    if max_individuals is not None:
        command += ["--max-individuals", str(max_individuals)]
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


def _selector_pairs(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise UserError(f"--node-selector expects KEY=VALUE, got {item!r}")
        out[key] = value
    return out


def _env_pairs(items: list[str] | None) -> dict[str, str]:
    out = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise UserError(f"--env expects NAME=VALUE, got {item!r}")
        out[key] = value
    return out


def run(args: argparse.Namespace) -> int:
    manifest = job_manifest(
        args.url, args.n, args.image, name=args.name, namespace=args.namespace,
        gpus_per_worker=args.gpus_per_worker, device=args.device, cpu=args.cpu or None,
        memory=args.memory or None, service_account=args.service_account, accelerator=args.accelerator,
        max_seconds=args.max_seconds, max_individuals=args.max_individuals,
        backoff_limit_per_index=args.backoff_limit_per_index, spot=args.spot,
        node_selector=_selector_pairs(args.node_selector), ephemeral_storage=args.ephemeral_storage or None,
        env=_env_pairs(args.env), retrain=args.retrain)
    text = json.dumps(manifest, indent=2) + "\n"
    if args.output:
        try:
            with open(args.output, "w", encoding="utf-8") as f:
                f.write(text)
        except OSError as exc:
            raise UserError(f"{args.output}: {exc.strerror or exc}") from None
        print(f"wrote {args.output}: Indexed Job {args.name!r}, {args.n} worker(s), image {args.image}, "
              f"{args.gpus_per_worker} GPU(s) each, population {args.url}", file=sys.stderr)
    if args.dry_run:
        if not args.output:
            sys.stdout.write(text)
        return 0
    if not args.url.startswith("gs://"):
        print(f"warning: {args.url} is not a gs:// URL: every pod must see it at that path", file=sys.stderr)
    from ..views.snapshot import open_population

    open_population(args.url)  # a population with a config, or a one-line error
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        raise UserError("kubectl not found; write the manifest with --dry-run -o job.json and apply it yourself")
    done = subprocess.run([kubectl, "apply", "-f", "-"], input=text, text=True, capture_output=True)
    if done.returncode != 0:
        lines = (done.stderr or done.stdout or f"exit status {done.returncode}").strip().splitlines()
        raise UserError(f"kubectl apply failed: {lines[-1][:500]}")
    print(done.stdout.strip())
    print(f"follow it with: evo status {args.url} --watch   (pods: kubectl get pods -l evo/job={args.name})")
    return 0


def register(sub) -> None:
    p = add_command(sub, "launch-k8s", prog="evo launch k8s",
                    description="Start N workers as a Kubernetes Indexed Job (GKE + GCS). The population "
                                "must exist (evo init gs://...). --dry-run writes the manifest only.", url_help="population URL every pod can reach, normally gs://BUCKET/PREFIX")
    p.add_argument("-n", type=positive_int, required=True, help="number of workers (completions = parallelism = N)")
    p.add_argument("--image", required=True, help="container image with evo installed (`evo` on PATH)")
    p.add_argument("--name", default="evo-workers", help="Job name")
    p.add_argument("--namespace", help="Kubernetes namespace")
    p.add_argument("--gpus-per-worker", type=non_negative_int, default=1, help="nvidia.com/gpu per pod (0: CPU)")
    p.add_argument("--accelerator", help="GKE accelerator node selector, e.g. nvidia-l4")
    p.add_argument("--device", type=device(), default="auto", help="worker --device (default: cuda with GPUs, else cpu)")
    p.add_argument("--cpu", default="4", help="CPU request per pod ('' for none)")
    p.add_argument("--memory", default="16Gi", help="memory request and limit per pod")
    p.add_argument("--service-account", help="Kubernetes service account (Workload Identity to GCS)")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", help="extra environment variable (repeatable)")
    p.add_argument("--max-seconds", type=positive_seconds, metavar="T",
                   help="each worker stops starting children after T seconds (default: no limit)")
    p.add_argument("--max-individuals", type=positive_int, metavar="K",
                   help="each worker stops after publishing K individuals (default: no limit)")
    p.add_argument("--backoff-limit-per-index", type=non_negative_int, default=4, metavar="K",
                   help="failures (crashes, not preemptions) of one worker index before it is given up")
    p.add_argument("--spot", action="store_true",
                   help=f"run on GKE Spot nodes ({SPOT_LABEL} node selector and toleration)")
    p.add_argument("--node-selector", action="append", metavar="KEY=VALUE",
                   help="schedule only on nodes with this label (repeatable)")
    p.add_argument("--ephemeral-storage", metavar="QUANTITY", help="local disk requested per pod, e.g. 20Gi")
    p.add_argument("--retrain", action="store_true",
                   help="pods train the final-training requests of `evo retrain URL ... --no-train` "
                        "(evo retrain URL --pending) instead of running search workers")
    p.add_argument("-o", "--output", help="write the manifest here (JSON)")
    p.add_argument("--dry-run", action="store_true", help="only write the manifest (stdout without -o)")
    p.set_defaults(func=run)
