"""The checks of a history record read without its DNA (what status, plot, lineage and audit
read, 20,000 times per command on a big run): the fast path of ``check_history`` accepts
exactly what the full checks accept, and no number in an untrusted record, however large,
stops a reader."""

from __future__ import annotations

import json
import re

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

import storage
from helpers_store import publish_random
from dna.numbers import is_finite_number
from storage.records import CorruptRecord, check_commit, check_history, HISTORY_EXTRA

_GOOD = {
    "schema": 1, "id": "20261201T012113.610251Z-bc69635f", "parent": "20261201T011113.610251Z-0c69635f",
    "mutation": "alter_stride", "dna_hash": "a" * 64, "fitness": 0.5, "birth": 1796088073.6, "worker": "w-1",
    "metrics": {"steps": 3}, "payload": "payload/20261201T012113.610251Z-bc69635f.7233f44092e8bf1e.safetensors",
    "payload_sha256": "b" * 64, "payload_size": 328, "death": 1796088078.1, "killer": "w-2", "reason": "selection",
}
_ODD_VALUES = [None, True, False, 0, -1, 1, 2**70, 10**400, 1.5, float("nan"), float("inf"), -float("inf"), "",
               "x", "0" * 64, "A" * 64, "payload/x.safetensors", "20261201T012113.610251Z-bc69635f", [], {}, "é" * 300]


def _full(obj, ident):
    """The full checks alone (no fast path): check_commit plus the death fields."""
    if not isinstance(obj, dict):
        raise CorruptRecord("not an object")
    rec = check_commit(obj, extra=HISTORY_EXTRA, with_dna=False)
    if ident is not None and rec["id"] != ident:
        raise CorruptRecord("other id")
    if not is_finite_number(rec.get("death")):
        raise CorruptRecord("death")
    if not isinstance(rec.get("killer"), str) or not isinstance(rec.get("reason"), str) \
            or len(rec["killer"]) > 256 or len(rec["reason"]) > 64:
        raise CorruptRecord("killer")
    return rec


def _verdict(fn, obj, ident):
    try:
        return ("ok", fn(obj, ident))
    except CorruptRecord:
        return ("corrupt", None)


@settings(max_examples=400, deadline=None)
@given(changes=st.lists(st.tuples(st.sampled_from(sorted(_GOOD) + ["extra", "dna"]),
                                  st.sampled_from(range(len(_ODD_VALUES) + 1))), max_size=3),
       other_ident=st.booleans())
def test_the_fast_path_accepts_exactly_what_the_full_checks_accept(changes, other_ident):
    obj = json.loads(json.dumps(_GOOD))
    for key, k in changes:
        if k == len(_ODD_VALUES):
            obj.pop(key, None)
        else:
            obj[key] = _ODD_VALUES[k]
    ident = "20261201T000000.000000Z-00000000" if other_ident else _GOOD["id"]
    expected = _verdict(_full, dict(obj), ident)
    got = _verdict(lambda o, i: check_history(o, i, with_dna=False), dict(obj), ident)
    assert got[0] == expected[0], (changes, got, expected)
    if got[0] == "ok":
        assert got[1] == expected[1]


def test_a_record_with_a_huge_integer_costs_that_record_not_the_reader(tmp_path):
    """JSON may hold a 400-digit integer where a time or fitness belongs; ``math.isfinite``
    raises OverflowError on it. It must make the record corrupt, for every reader."""
    url = str(tmp_path / "pop")
    store = storage.open_store(url)
    store.runinfo.init_config("{}")
    rng = np.random.default_rng(3)
    infos = [publish_random(store, rng)[0] for _ in range(3)]
    assert store.population.kill(infos[0], worker="w")
    key = f"history/{infos[0].id}.json"
    text = store.backend.read(key).decode()
    store.backend.delete(key)
    store.backend.write(key, re.sub(r'"birth":[0-9.e+-]+', '"birth":1' + "0" * 400, text).encode())
    for with_dna in (True, False):
        records, broken = storage.open_store(url).history.scan_history(with_dna=with_dna)
        assert records == [] and [b.key for b in broken] == [key]
    assert storage.open_store(url).check(grace_seconds=0).corrupt == 1
