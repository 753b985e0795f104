"""Every room of docs/layout.md against entries someone who can write the store planted there.

For each folder the layout lists (and config.json's neighbours at the top), a symlink to a
secret outside the store, a FIFO, a folder and a garbage file are planted under names the
room's own readers would pick up. Then, without root's permission bypass: every inspection
command runs without a traceback, ``evo check`` names each planted entry and exits non-zero,
``evo check --repair`` moves them aside and touches no live individual, a second ``check``
is clean, and no byte of the secret is ever inside the store.

The per-room tests (test_hostile_policy/datacache/segments/retrain/runinfo) plant the
well-formed-but-wrong records; this one proves no room was forgotten.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

import storage
from helpers_hostile import CAN_DROP_BYPASS, NO_BYPASS_REASON, SECRET, run_evo, store_bytes_contain, write_secret
from helpers_store import REPO, publish_random
from storage.records import new_id

LAYOUT = REPO / "docs" / "layout.md"


def layout_rooms() -> set[str]:
    """The top-level folders named in docs/layout.md's "Files and folders" listing."""
    text = LAYOUT.read_text()
    block = text.split("## Files and folders", 1)[1].split("```", 2)[1]
    return {line.split("/", 1)[0] for line in block.splitlines() if "/" in line.split(" ", 1)[0]}


def _id() -> str:
    return new_id(1.7e9)[0]


# A name each room's readers would take for one of theirs (so planted entries are not
# skipped for their name alone). Keep in step with docs/layout.md: test_every_room_is_planted
# fails when a room is added there and not here.
PLAUSIBLE = {
    "alive": lambda: f"{_id()}~0.999999.json",
    "payload": lambda: f"{_id()}.{'ab' * 8}.safetensors",
    "history": lambda: f"{_id()}.json",
    "segments": lambda: f"{_id()}~{_id()}~3~{'cd' * 8}.jsonl.gz",
    "quarantine": lambda: f"{_id()}.json",
    "kept": lambda: f"{_id()}~0.999999.json",
    "workers": lambda: f"w-planted-{os.urandom(3).hex()}.json",
    "state": lambda: f"planted-{os.urandom(3).hex()}",
    "launches": lambda: f"slurm-{int.from_bytes(os.urandom(3), 'big')}.json",
    "data": lambda: f"digits-{os.urandom(4).hex()}.g1.json",
    "policy": lambda: f"v{int.from_bytes(os.urandom(2), 'big') + 2:010d}.json",
    "retrain": lambda: f"planted-{os.urandom(6).hex()}.json",
}


def test_every_room_is_planted():
    assert layout_rooms() == set(PLAUSIBLE), "docs/layout.md and PLAUSIBLE name different rooms"


def _plant(root: Path, outside: Path) -> list[str]:
    planted = []
    for room, name_of in sorted(PLAUSIBLE.items()):
        folder = root / room
        folder.mkdir(exist_ok=True)
        link, fifo, sub, garbage = name_of(), name_of(), name_of(), name_of()
        os.symlink(outside / "secret.txt", folder / link)
        os.mkfifo(folder / fifo)
        (folder / sub).mkdir()
        (folder / sub / "inside").write_bytes(b"planted")
        (folder / garbage).write_bytes(b"\x80\x81 " + b"[" * 5000)
        long_ago = os.stat(folder / garbage).st_mtime - 7 * 86400   # past every grace period
        os.utime(folder / garbage, (long_ago, long_ago))
        planted += [f"{room}/{n}" for n in (link, fifo, sub, garbage)]
    return planted


@pytest.mark.slow
@pytest.mark.skipif(not CAN_DROP_BYPASS, reason=NO_BYPASS_REASON)
def test_check_names_and_repair_moves_planted_entries_in_every_room(tmp_path):
    root = tmp_path / "pop"
    outside = tmp_path / "outside"
    write_secret(outside)
    assert run_evo("init", str(root), "--dataset", "digits").returncode == 0
    store = storage.open_store(str(root))
    rng = np.random.default_rng(0)
    for f in (0.3, 0.5, 0.7):
        publish_random(store, rng, fitness=f)
    alive_before = sorted(p.name for p in (root / "alive").iterdir())
    planted = _plant(root, outside)

    for command in (["status"], ["status", "--json"], ["lineage"], ["audit"], ["check"],
                    ["report", "--output", str(tmp_path / "report.html")],
                    ["plot", "--output", str(tmp_path / "plot.png")]):
        done = run_evo(command[0], str(root), *command[1:])
        assert "Traceback" not in done.stderr + done.stdout, (command, done.stderr[-3000:])

    found = run_evo("check", str(root), "--json")
    assert found.returncode != 0
    text = found.stdout
    missed = [key for key in planted if key not in text and json.dumps(key) not in text]
    assert missed == [], f"check does not name: {missed}"

    repaired = run_evo("check", str(root), "--repair", "--json")
    assert "Traceback" not in repaired.stderr, repaired.stderr[-3000:]
    again = run_evo("check", str(root), "--json")
    assert again.returncode == 0, again.stdout[-3000:]
    for key in planted:
        assert not os.path.lexists(root / key), f"{key} is still in place after --repair"
    assert sorted(p.name for p in (root / "alive").iterdir()) == alive_before
    assert store_bytes_contain(root, SECRET.encode()) == []
