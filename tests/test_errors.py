"""evo.errors: one base, four kinds (the lower layers' errors registered), one one_line."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

import dna
import storage
from evo.errors import DataError, EvoError, PluginError, SettingsError, StoreFailure, caught, kind_of, one_line

REPO = Path(__file__).resolve().parent.parent


def kinds():
    from dna.portable_images import ImageProblem
    from evo.config import ConfigError
    from evo.data.cacheformat import CacheDamaged
    from evo.data.base import DatasetError
    from evo.data.decoding import DataProblem
    from evo.data.safe_pickle import RefusedPickle
    from evo.search.worker import ChildrenFailing
    from evo.strategies.policy_state import PolicyError
    from evo.data.nasbench201_tables import TableError
    from launch.errors import UserError

    return {ConfigError: SettingsError, UserError: SettingsError, dna.DNAError: SettingsError,
            DatasetError: DataError, DataProblem: DataError, CacheDamaged: DataError, RefusedPickle: DataError,
            TableError: DataError, ImageProblem: DataError,
            storage.StoreError: StoreFailure, storage.UnreadableEntry: StoreFailure,
            storage.CorruptRecord: StoreFailure, PolicyError: StoreFailure, ChildrenFailing: PluginError}


def test_every_error_class_has_its_kind():
    for cls, kind in kinds().items():
        assert issubclass(cls, kind) and issubclass(cls, EvoError), cls
        assert kind_of(cls.__new__(cls)) is kind, cls
    assert kind_of(ValueError("x")) is None and kind_of(KeyboardInterrupt()) is None


def test_the_old_bases_still_hold():
    from evo.config import ConfigError
    from evo.data.nasbench201_tables import TableError

    assert issubclass(ConfigError, ValueError) and issubclass(TableError, RuntimeError)
    assert issubclass(dna.DNAError, ValueError)


def test_lower_layer_errors_are_caught_through_caught_not_by_the_bare_kind():
    with pytest.raises(storage.StoreError):   # CPython's except ignores ABC registration
        try:
            raise storage.StoreError("bucket gone")
        except StoreFailure:
            pytest.fail("an except clause does not see registered classes")
    try:
        raise storage.StoreError("bucket gone")
    except caught(StoreFailure) as exc:
        assert one_line(exc) == "bucket gone"
    assert dna.DNAError in caught(EvoError) and dna.DNAError in caught(SettingsError)
    assert dna.DNAError not in caught(StoreFailure)


def test_one_line_never_raises_and_serves_both_meanings():
    class Hostile(Exception):
        def __str__(self):
            raise RuntimeError("no")

    assert one_line(Hostile()) == "Hostile" and one_line(Hostile(), with_type=True) == "Hostile"
    assert one_line(OSError()) == "OSError" and one_line(ValueError("  \n ")) == "ValueError"
    assert one_line(ValueError("first\n  second\tthird\n")) == "first second third"
    assert one_line(KeyError("k"), with_type=True) == "KeyError: 'k'"
    long = one_line(ValueError("x" * 1000))
    assert len(long) == 300 and long.endswith("…")
    assert one_line(ValueError("abcdef"), limit=4) == "abc…"


def test_importing_evo_errors_imports_nothing_else():
    code = ("import sys; before = set(sys.modules); import evo.errors\n"
            "new = {m for m in set(sys.modules) - before if m.split('.')[0] in ('evo', 'storage', 'dna', 'torch')}\n"
            "print(sorted(new))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=REPO).stdout.strip()
    assert out == "['evo', 'evo.errors']"


def test_one_line_is_the_only_one_line_helper():
    pattern = re.compile(r"splitlines\(\)\[0\]|def _one_line|def _first_line|def first_line")
    found = [f"{p.relative_to(REPO)}:{n}" for package in ("evo", "launch", "bench")
             for p in sorted((REPO / package).rglob("*.py"))
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []


def test_the_sbatch_failure_path_survives_an_empty_message():
    assert f"submission failed: {one_line(RuntimeError(''), with_type=True)}" == "submission failed: RuntimeError"
