"""`evo launch k8s URL -n N --image IMAGE`: N workers as a Kubernetes Indexed Job (e.g. on GKE).

The manifest is plain JSON (``kubectl`` accepts it; no YAML library needed): a ``batch/v1``
Job with ``completionMode: Indexed`` and ``completions = parallelism = N``. Each pod runs
``evo worker URL --device ...``; the worker takes its index (its seed stream) from
``JOB_COMPLETION_INDEX``, which Kubernetes sets in Indexed Jobs. GPUs are requested as
``nvidia.com/gpu`` (requests = limits, as Kubernetes requires for extended resources), with
the usual GKE toleration. On GKE the pods reach a ``gs://`` population with Workload
Identity: give ``--service-account`` a Kubernetes service account bound to a Google service
account that may read and write the bucket (Application Default Credentials do the rest).

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

from .errors import UserError
from .options import device, non_negative_int, positive_int, positive_seconds

_NAME = re.compile(r"[a-z0-9]([-a-z0-9]{0,50}[a-z0-9])?")


def job_manifest(url: str, n: int, image: str, *, name: str = "evo-workers", namespace: str | None = None,
                 gpus_per_worker: int = 1, device: str = "auto", cpu: str | None = "4", memory: str | None = "16Gi",
                 service_account: str | None = None, accelerator: str | None = None,
                 max_seconds: float | None = None, max_individuals: int | None = None,
                 backoff_limit: int | None = None, restart_policy: str = "OnFailure",
                 env: dict[str, str] | None = None, ttl_seconds: int | None = 86400) -> dict[str, Any]:
    """The Indexed Job manifest (a JSON-ready dict) for ``n`` workers on ``url``.

    ``device`` ``auto`` means ``cuda`` with GPUs and ``cpu`` without. ``backoff_limit``
    defaults to ``4 * n`` (a worker crash costs one retry; the run heals itself).
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
    if restart_policy not in ("OnFailure", "Never"):
        raise UserError("--restart-policy must be OnFailure or Never (Jobs allow no other)")
    if device == "auto":
        device = "cuda" if gpus_per_worker > 0 else "cpu"
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
    if gpus_per_worker:
        requests["nvidia.com/gpu"] = limits["nvidia.com/gpu"] = str(gpus_per_worker)
    labels = {"app.kubernetes.io/name": "evo", "app.kubernetes.io/component": "worker", "evo/job": name}
    container: dict[str, Any] = {
        "name": "worker", "image": image, "command": command,
        "env": [{"name": "EVO_POPULATION", "value": url}, {"name": "PYTHONUNBUFFERED", "value": "1"}]
        + [{"name": k, "value": v} for k, v in sorted((env or {}).items())],
        "resources": {"requests": requests, "limits": limits},
    }
    pod_spec: dict[str, Any] = {"restartPolicy": restart_policy, "containers": [container]}
    if service_account:
        pod_spec["serviceAccountName"] = service_account
    if gpus_per_worker:
        pod_spec["tolerations"] = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
        if accelerator:
            pod_spec["nodeSelector"] = {"cloud.google.com/gke-accelerator": accelerator}
    metadata: dict[str, Any] = {"name": name, "labels": labels,
                                "annotations": {"evo/population": url}}
    if namespace:
        metadata["namespace"] = namespace
    spec: dict[str, Any] = {
        "completions": n, "parallelism": n, "completionMode": "Indexed",
        "backoffLimit": backoff_limit if backoff_limit is not None else 4 * n,
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    }
    if ttl_seconds is not None:
        spec["ttlSecondsAfterFinished"] = ttl_seconds
    return {"apiVersion": "batch/v1", "kind": "Job", "metadata": metadata, "spec": spec}


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
        backoff_limit=args.backoff_limit, restart_policy=args.restart_policy, env=_env_pairs(args.env))
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
    from ._snapshot import open_population

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
    p = sub.add_parser("launch-k8s", prog="evo launch k8s",
                       description="Start N workers as a Kubernetes Indexed Job (GKE + GCS). The population "
                                   "must exist (evo init gs://...). --dry-run writes the manifest only.")
    p.add_argument("url", help="population URL every pod can reach, normally gs://BUCKET/PREFIX")
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
    p.add_argument("--backoff-limit", type=non_negative_int, help="pod failures before the Job gives up (default 4*N)")
    p.add_argument("--restart-policy", default="OnFailure", help="OnFailure or Never")
    p.add_argument("-o", "--output", help="write the manifest here (JSON)")
    p.add_argument("--dry-run", action="store_true", help="only write the manifest (stdout without -o)")
    p.set_defaults(func=run)
