"""``python -m bench inspect``: how fast the inspection commands read a big population.

Builds (or reuses) a synthetic run (``bench._synthrun``: the records W synthetic workers write,
written through the store API by one process), then measures wall time and peak RSS of
``evo status``, ``evo status --json``, ``evo plot -o p.png``, ``evo lineage URL best`` and
``evo audit``, each a fresh process of the real CLI:

- on the local directory with every dead individual's record in ``history/`` ("files",
  what older versions of evo read), then after rolling them up into segments
  ("segments"), with the tail that a running population has left unsealed;
- the first read right after the roll-up, measured once ("first read", ``evo status``: no
  reader keeps anything per machine on a local store, so it costs what any read costs);
- on the GCS emulator (a fake-gcs-server started here; the same objects uploaded): each
  command with an empty read cache and no marks of its own ("cold"), then each again after
  one ``evo status`` filled a shared cache ("warm");
- one refresh of ``evo status --watch`` (the store object kept from the previous refresh
  reads only the listings and what is new), local and on the emulator ("refresh").

Each command is a fresh process of the installed code, its bytecode compiled first (as a
pip install leaves it), so what it costs to import the libraries (numpy; matplotlib for
``evo plot``; gcsfs on ``gs://``) is in every number.

Full mode: P = 1000 and 20,000 dead individuals; small mode (CI): P = 20, 300 dead.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from ._report import REPO, markdown_table, write_report

COMMANDS = (
    ("status", ["status", "{url}"]),
    ("status --json", ["status", "{url}", "--json"]),
    ("plot", ["plot", "{url}", "-o", "{tmp}/p.png"]),
    ("lineage best", ["lineage", "{url}", "best"]),
    ("audit", ["audit", "{url}"]),
)
# (P, dead, records per segment, tail left in history/, commands on GCS, runs of each command)
SIZES = {"small": (20, 300, 50, 30, ("status", "audit"), 1),
         "full": (1000, 20000, 1000, 500, tuple(name for name, _ in COMMANDS), 3)}
TARGETS = {"local_s": 2.0, "gcs_cold_s": 10.0, "gcs_warm_s": 2.0, "rss_mib": 200.0}


# A small parent for each measured command: a child forked from this (large) process would
# count this process's pages in its peak RSS until it execs.
_RUNNER = ("import resource, subprocess, sys, time\n"
           "t = time.perf_counter()\n"
           "p = subprocess.run(sys.argv[1:], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)\n"
           "wall = time.perf_counter() - t\n"
           "sys.stderr.buffer.write(p.stderr[-300:])\n"
           "u = resource.getrusage(resource.RUSAGE_CHILDREN)\n"
           "print(wall, u.ru_maxrss, p.returncode, u.ru_utime + u.ru_stime)\n")


def measure(args: list[str], env: dict[str, str]) -> dict[str, Any]:
    """Run ``python -m launch ARGS``; its wall seconds, CPU seconds (user + system: what a
    machine shared with other jobs slows down least), peak RSS (MiB) and exit code."""
    proc = subprocess.run([sys.executable, "-c", _RUNNER, sys.executable, "-m", "launch", *args], cwd=REPO,
                          env=env, capture_output=True, text=True)
    wall, rss_kb, code, cpu = proc.stdout.split()
    return {"wall_s": round(float(wall), 3), "cpu_s": round(float(cpu), 3), "peak_rss_mib": round(int(rss_kb) / 1024, 1),
            "exit": int(code), "stderr": proc.stderr.strip()[-300:] if int(code) else ""}


_REFRESH = ("import sys, time\n"
            "from launch.views.snapshot import open_population, take_snapshot\n"
            "from launch.commands.status import format_status\n"
            "from launch.views.status import status_report\n"
            "url = sys.argv[1]\n"
            "population = open_population(url)\n"
            "def refresh():\n"
            "    snap = take_snapshot(url, spinner=False, history_dna=False, alive_dna=False, population=population)\n"
            "    return format_status(status_report(snap))\n"
            "refresh()\n"
            "t = time.perf_counter()\n"
            "refresh()\n"
            "print(time.perf_counter() - t)\n")


def measure_refresh(url: str, env: dict[str, str]) -> dict[str, Any]:
    """Seconds of one ``evo status --watch`` refresh after the first (the same code path:
    one store object across refreshes), in a fresh process."""
    proc = subprocess.run([sys.executable, "-c", _REFRESH, url], cwd=REPO, env=env, capture_output=True, text=True)
    if proc.returncode:
        return {"wall_s": None, "exit": proc.returncode, "stderr": proc.stderr.strip()[-300:]}
    return {"wall_s": round(float(proc.stdout.split()[-1]), 3), "exit": 0}


def run_commands(url: str, env: dict[str, str], names: tuple[str, ...], tmp: str,
                 cold: bool = False, repeats: int = 1) -> dict[str, Any]:
    """Each named command on ``url``, ``repeats`` times in turn; per command the run of median
    wall time (``walls``: every wall time). ``cold``: each run with an empty read cache of
    its own."""
    runs: dict[str, list[dict[str, Any]]] = {}
    for r in range(repeats):
        for k, (name, args) in enumerate(COMMANDS):
            if name in names:
                run_env = dict(env, EVO_CACHE_DIR=f"{tmp}/cold-cache-{k}-{r}") if cold else env
                runs.setdefault(name, []).append(measure([a.format(url=url, tmp=tmp) for a in args], run_env))
    out = {}
    for name, got in runs.items():
        ordered = sorted(got, key=lambda m: m["wall_s"])
        out[name] = dict(ordered[len(ordered) // 2], walls=[m["wall_s"] for m in got],
                         peak_rss_mib=max(m["peak_rss_mib"] for m in got), exit=max(m["exit"] for m in got))
    return out


def build(store_dir: Path, population: int, dead: int, say) -> tuple[Path, bool]:
    """The synthetic run under ``store_dir`` (built unless a finished one is there); whether
    it was built now (then its records are still all in ``history/``)."""
    from ._synthrun import build_synthetic_run

    path = store_dir / f"inspect-P{population}-D{dead}"
    marker = store_dir / f"inspect-P{population}-D{dead}.built.json"
    if marker.exists() and path.exists():
        say(f"reusing the synthetic run at {path}")
        return path, False
    shutil.rmtree(path, ignore_errors=True)
    store_dir.mkdir(parents=True, exist_ok=True)
    say(f"building a synthetic run at {path}: P={population}, {dead} dead")
    made = build_synthetic_run(str(path), population=population, dead=dead, progress=say)
    marker.write_text(json.dumps(made) + "\n")
    return path, True


def roll_up(url: str, records: int, tail: int) -> dict[str, Any]:
    """Roll all but about ``tail`` of the dead up into segments of ``records`` (what the workers'
    roll-ups leave on a running population: full segments, and the newest records as files)."""
    from launch.views.snapshot import open_population

    store, _ = open_population(url)
    t = time.perf_counter()
    done = store.history.roll_up(min_age=0, segment_records=records)
    return {"seconds": round(time.perf_counter() - t, 1), "segments": done.segments, "records": done.records,
            "layout": store.history.history_layout(), "tail_asked": tail}


def upload(local: Path, emulator_url: str, bucket: str, prefix: str, say) -> float:
    """Copy the population at ``local`` to ``gs://bucket/prefix`` on the emulator (every
    object, as it is; gcsfs's batched uploads, not the store's one-by-one writes)."""
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")
    from gcsfs.core import GCSFileSystem

    fs = GCSFileSystem(token="anon", endpoint_url=emulator_url, skip_instance_cache=True)
    t = time.time()
    files = {}
    for root, _, names in os.walk(local):
        for name in names:
            if name.startswith(".tmp-"):
                continue
            path = Path(root) / name
            files[f"{bucket}/{prefix}/{path.relative_to(local).as_posix()}"] = path.read_bytes()
    items = sorted(files.items())
    for start in range(0, len(items), 2000):
        fs.pipe(dict(items[start:start + 2000]))
    say(f"uploaded {len(items)} objects to gs://{bucket}/{prefix} in {time.time() - t:.0f} s")
    return time.time() - t


def run(mode: str, out_dir: str | Path, *, store_dir: str | None = None, gcs: bool = True,
        progress=None) -> dict[str, Any]:
    """Build or reuse the run, measure, write ``inspect-MODE-cpu.{json,md}``; return the document."""
    say = progress or (lambda msg: None)
    population, dead, records, tail, gcs_commands, repeats = SIZES[mode]
    work = Path(tempfile.mkdtemp(prefix="evo-inspect-"))
    env = dict(os.environ, PYTHONUNBUFFERED="1", EVO_CACHE_DIR=str(work / "cache"))
    results: dict[str, Any] = {"repeats": repeats}
    # as a pip install leaves it: no measured process compiles its modules first
    subprocess.run([sys.executable, "-m", "compileall", "-q", "dna", "mutations", "storage", "evo", "launch"],
                   cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    try:
        base = Path(store_dir) if store_dir else work
        path, _ = build(base, population, dead + tail, say)
        url = str(path)
        all_names = tuple(name for name, _ in COMMANDS)
        from storage import open_store
        if not open_store(url).history.history_layout()["segments"]:   # not rolled up yet
            say("measuring with every record in history/ (files)")
            results["local_files"] = run_commands(url, env, all_names, str(work))   # once: slow, no target
            results["rollup"] = roll_up(url, records, tail)
            say(f"rolled up: {results['rollup']}")
        else:
            results["rollup"] = roll_up(url, records, tail)   # nothing left to do when reused
        say("measuring the first read after the roll-up")
        results["local_first_read"] = run_commands(url, env, ("status",), str(work))
        say("measuring with segments")
        results["local_segments"] = run_commands(url, env, all_names, str(work), repeats=repeats)
        results["local_refresh"] = measure_refresh(url, env)
        # the floor: the same commands on a run of P=20 and nobody dead (starting Python and
        # importing numpy, matplotlib for plot, gcsfs on gs://), what no reading can save
        from ._synthrun import build_synthetic_run
        floor = work / "floor"
        build_synthetic_run(str(floor), population=20, dead=0)
        say("measuring the floor (the same commands on a run of 20 individuals)")
        results["local_floor"] = run_commands(str(floor), env, all_names, str(work), repeats=repeats)
        if gcs:
            results.update(_on_emulator(path, work, env, gcs_commands, say, repeats, floor))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    summary, table = _summarize(results, population, dead + tail)
    settings = {"population": population, "dead": dead + tail, "segment_records": records,
                "store": "local directory" + (" and the GCS emulator" if gcs else ""),
                "generator": "bench._synthrun (store API, one process, 8 threads)"}
    return write_report("inspect", mode, "cpu", out_dir, settings=settings, results=results,
                        markdown=table, summary=summary)


def _on_emulator(path: Path, work: Path, env: dict[str, str], names: tuple[str, ...], say,
                 repeats: int, floor: Path) -> dict[str, Any]:
    from ._emulator import emulator_env, make_bucket, start_emulator

    with start_emulator(work / "emulator.log") as emulator:
        genv = dict(env, **emulator_env(emulator.url))
        saved = {k: os.environ.get(k) for k in genv}
        os.environ.update(emulator_env(emulator.url))
        try:
            bucket = f"evo-inspect-{uuid.uuid4().hex[:10]}"
            make_bucket(emulator.url, bucket)
            url = f"gs://{bucket}/pop"
            seconds = upload(path, emulator.url, bucket, "pop", say)
            say("measuring on the emulator, cold cache")
            cold = run_commands(url, genv, names, str(work), cold=True, repeats=repeats)
            run_commands(url, genv, ("status",), str(work))   # fills the shared cache
            say("measuring on the emulator, warm cache")
            warm = run_commands(url, genv, names, str(work), repeats=repeats)
            refresh = measure_refresh(url, genv)
            upload(floor, emulator.url, bucket, "floor", say)
            floor_url = f"gs://{bucket}/floor"
            run_commands(floor_url, genv, ("status",), str(work))   # fills the shared cache
            say("measuring the floor on the emulator, warm cache")
            floor_warm = run_commands(floor_url, genv, names, str(work), repeats=repeats)
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
    return {"gcs_upload_s": round(seconds, 1), "gcs_cold": cold, "gcs_warm": warm, "gcs_refresh": refresh,
            "gcs_floor_warm": floor_warm}


def _summarize(results: dict[str, Any], population: int, dead: int) -> tuple[str, str]:
    rows = []
    misses = []
    for name, _ in COMMANDS:
        cells: list[Any] = [f"`evo {name}`"]
        for where, limit in (("local_files", None), ("local_segments", TARGETS["local_s"]),
                             ("gcs_cold", TARGETS["gcs_cold_s"]), ("gcs_warm", TARGETS["gcs_warm_s"])):
            m = (results.get(where) or {}).get(name)
            if m is None:
                cells += ["-", "-"]
                continue
            cells += [f"{m['wall_s']:.2f} ({m.get('cpu_s', 0):.2f})" + ("" if m["exit"] == 0 else f" (exit {m['exit']})"),
                      m["peak_rss_mib"]]
            if limit is not None and (m["wall_s"] > limit or m["exit"] != 0):
                misses.append(f"{name} {where} {m['wall_s']:.2f} s")
            if where != "local_files" and m["peak_rss_mib"] > TARGETS["rss_mib"]:
                misses.append(f"{name} {where} {m['peak_rss_mib']} MiB")
        rows.append(cells)
    table = markdown_table(["command", "files: s (CPU s)", "MiB", "segments: s (CPU s)", "MiB",
                            "emulator cold: s (CPU s)", "MiB", "emulator warm: s (CPU s)", "MiB"], rows)
    first = (results.get("local_first_read") or {}).get("status")
    if first:
        table += (f"\n\nFirst `evo status` right after the roll-up: {first['wall_s']:.2f} s "
                  f"({first.get('cpu_s', 0):.2f} s CPU), {first['peak_rss_mib']} MiB.")
    refreshes = [f"{where} {results[key]['wall_s']:.2f} s" for key, where in
                 (("local_refresh", "local"), ("gcs_refresh", "emulator"))
                 if (results.get(key) or {}).get("wall_s") is not None]
    if refreshes:
        table += " One `evo status --watch` refresh (after the first read): " + ", ".join(refreshes) + "."
    floors = [[f"`evo {name}`"] + [f"{m['wall_s']:.2f}" if m else "-" for m in
                                   ((results.get(where) or {}).get(name) for where in ("local_floor", "gcs_floor_warm"))]
              for name, _ in COMMANDS]
    if results.get("local_floor"):
        table += ("\n\nThe floor: the same commands on a run of 20 individuals, nobody dead (starting Python, "
                  "importing numpy, matplotlib for `evo plot`, gcsfs on `gs://`: what no way of reading "
                  "the store can save), median wall seconds:\n\n"
                  + markdown_table(["command", "local", "emulator, warm cache"], floors))
    layout = results.get("rollup", {}).get("layout", {})
    table += (f"\n\nHistory: {layout.get('segments')} segments holding {layout.get('in_segments')} records, "
              f"{layout.get('files')} records left in history/ (the unsealed tail). \"files\": every record "
              "in history/ (before roll-ups), measured once. Segments and emulator: the median of "
              f"{results.get('repeats', 1)} runs of each command (every run's wall time is in the JSON). Wall seconds, and in brackets the command's CPU seconds (user + "
              "system; on the emulator the emulator's own CPU is not in it). Targets: < 2 s local, < 10 s cold / "
              "< 2 s warm on the emulator, < 200 MiB peak RSS.\n")
    summary = (f"P={population}, {dead} dead: " +
               ("every target met" if not misses else "missed: " + "; ".join(misses)))
    return summary, table
