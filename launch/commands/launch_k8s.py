"""`evo launch k8s URL -n N --image IMAGE`: N workers as a Kubernetes Indexed Job (e.g. on GKE).

The manifest, and how its pods fail, are replaced and reach the population:
``launch.clusters.k8s``. ``--dry-run`` only writes the manifest (to ``-o FILE`` or
stdout); without it the manifest is applied with ``kubectl apply -f -``, after checking
that the population has a config.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys

from ..clusters.k8s import SPOT_LABEL, job_manifest
from ..errors import UserError
from ..options import add_command, add_worker_limits, device, non_negative_int, positive_int


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
        max_failed_children=args.max_failed_children,
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
    add_worker_limits(p)
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
