"""Planting hostile entries in a population directory, and running commands without root's
permission bypass (so that ``chmod 000`` really makes a file unreadable to them).

Shared by tests/test_store_hostile.py (units) and tests/test_hostile_fleet.py (real workers).
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np

import dna
import storage
from helpers_store import REPO, publish_random, subprocess_env, weights_blob
from storage.records import dna_hash, new_id

# A secret outside the store: no byte of it may ever appear inside the store.
SECRET = "evo-test-secret-4f1c9b2e-never-copy-me"

# Root bypasses file permissions (CAP_DAC_OVERRIDE / CAP_DAC_READ_SEARCH); drop both from the
# bounding and inheritable sets so commands see permissions as any user would.
_DROP = "-dac_override,-dac_read_search"
WITHOUT_BYPASS = ["setpriv", f"--bounding-set={_DROP}", f"--inh-caps={_DROP}"] \
    if os.geteuid() == 0 and shutil.which("setpriv") else []
CAN_DROP_BYPASS = os.geteuid() != 0 or bool(WITHOUT_BYPASS)
NO_BYPASS_REASON = "running as root without setpriv: permission errors cannot be produced"


def evo_cmd(*args: str) -> list[str]:
    """``python -m launch ARGS`` run without root's permission bypass."""
    return [*WITHOUT_BYPASS, sys.executable, "-m", "launch", *args]


def run_evo(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run an evo command (no permission bypass) and return it; stdout/stderr as text."""
    return subprocess.run(evo_cmd(*args), cwd=REPO, env=subprocess_env(), capture_output=True,
                          text=True, timeout=timeout)


_MEASURE = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "sys.stderr.write('\\nPEAK_RSS_KIB %d\\n' % resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)\n"
            "sys.exit(code)\n")


def peak_rss_mib(cmd: list[str], timeout: float = 120) -> tuple[subprocess.CompletedProcess, float]:
    """Run ``cmd`` in a wrapper process; return it (stderr without the measurement) and the
    peak resident memory of ``cmd`` in MiB."""
    done = subprocess.run([sys.executable, "-c", _MEASURE, *cmd], cwd=REPO, env=subprocess_env(),
                          capture_output=True, text=True, timeout=timeout)
    err, _, tail = done.stderr.rpartition("\nPEAK_RSS_KIB ")
    done.stderr = err
    return done, int(tail.split()[0]) / 1024


def write_secret(outside: Path) -> Path:
    """A file outside the store holding SECRET."""
    outside.mkdir(parents=True, exist_ok=True)
    path = outside / "secret.txt"
    path.write_text(SECRET + "\n")
    return path


def alive_name(fitness: float) -> str:
    """A fresh, well-formed ``alive/`` name with this fitness (for planted entries)."""
    ident, _ = new_id(__import__("time").time())
    return f"{ident}~{fitness:.6f}.json"


def absurd_dna() -> dict:
    """A DNA that parses as JSON but no run allows: a billion channels."""
    d = dna.initial().to_dict()
    d["vertices"].append({"id": 3, "kind": "bn_relu"})
    d["edges"] = [{"id": 4, "src": 0, "dst": 3, "kind": "conv", "filter_h": 3, "filter_w": 3,
                   "channels": 10**9, "stride": 1},
                  {"id": 5, "src": 3, "dst": 1, "kind": "identity"}]
    d["next_id"] = 6
    return d


def plant_commit(store: storage.PopulationStore, dna_obj: dict, fitness: float,
                 history: bool = False) -> str:
    """Write a commit (or a history record) whose fields check out except, maybe, its DNA."""
    rng = np.random.default_rng(99)
    weights = weights_blob(rng)
    ident, birth = new_id(__import__("time").time())
    payload = f"payload/{ident}.{'0' * 16}.safetensors"
    store.backend.write(payload, weights)
    import hashlib
    commit = {"schema": 1, "id": ident, "parent": None, "mutation": "planted", "dna": dna_obj,
              "dna_hash": dna_hash(dna_obj), "fitness": fitness, "birth": birth, "worker": "attacker",
              "metrics": {}, "payload": payload, "payload_sha256": hashlib.sha256(weights).hexdigest(),
              "payload_size": len(weights)}
    if history:
        commit.update(death=birth + 1, killer="attacker", reason="selection")
        store.backend.write(f"history/{ident}.json", json.dumps(commit).encode())
    else:
        store.backend.write(f"alive/{ident}~{fitness:.6f}.json", json.dumps(commit).encode())
    return ident


def store_bytes_contain(root: Path, needle: bytes) -> list[str]:
    """Regular files under ``root`` (symlinks not followed) whose bytes contain ``needle``."""
    hits = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        for name in filenames:
            path = os.path.join(dirpath, name)
            st = os.lstat(path)
            if not stat.S_ISREG(st.st_mode) or st.st_size > 64 * 2**20:
                continue
            with open(path, "rb") as f:
                if needle in f.read():
                    hits.append(os.path.relpath(path, root))
    return hits


def plant_everything(store: storage.PopulationStore, root: Path, outside: Path,
                     victims: list | None = None) -> dict[str, str]:
    """Every hostile entry of issue 11 that a local store can hold; returns what was planted.

    ``victims``: three live individuals to make unreadable (default: published here).
    """
    if victims is None:
        rng = np.random.default_rng(4)
        infos = [publish_random(store, rng, fitness=f)[0] for f in (0.2, 0.4, 0.6, 0.8)]
        store.population.kill(infos[0], worker="w")
    else:
        infos = [None] + list(victims)
    for folder in ("alive", "history", "workers"):
        (root / folder).mkdir(exist_ok=True)
    planted = {}
    for target, what in ((outside / "secret.txt", "link-secret"), (outside, "link-folder"),
                         (Path("/dev/zero"), "link-zero"), (Path("/etc/passwd"), "link-passwd")):
        name = alive_name(0.999999)
        os.symlink(target, root / "alive" / name)
        planted[f"alive/{name}"] = what
    os.symlink(outside, root / "history" / f"{alive_name(0.5).split('~')[0]}.json")
    sparse = alive_name(0.999998)
    with open(root / "alive" / sparse, "wb") as f:
        f.truncate(2**30)
    planted[f"alive/{sparse}"] = "sparse"
    fifo = alive_name(0.999997)
    os.mkfifo(root / "alive" / fifo)
    planted[f"alive/{fifo}"] = "fifo"
    (root / "alive" / alive_name(0.999996)).mkdir()
    plant_commit(store, absurd_dna(), 1.0, history=True)
    plant_commit(store, absurd_dna(), 0.999995)
    store.backend.write("workers/garbage.json", b"\x80 not a heartbeat")
    # unreadable without root's bypass: a live commit and another's weights (with running
    # workers a victim may die first: then the next one is taken)
    candidates = iter(infos[1:])
    for make_unreadable in (_chmod_commit, _chmod_weights):
        for info in candidates:
            try:
                planted[make_unreadable(root, info)] = make_unreadable.__name__
                break
            except FileNotFoundError:
                continue
    return planted


def _chmod_commit(root: Path, info) -> str:
    os.chmod(root / info.key, 0)
    return info.key


def _chmod_weights(root: Path, info) -> str:
    payload = json.loads((root / info.key).read_text())["payload"]
    os.chmod(root / payload, 0)
    return payload
