"""evo.registry: plug-ins load once, completely, even when threads ask at the same moment."""

from __future__ import annotations

import sys
import threading

from evo.registry import Registry


def test_threads_asking_during_the_first_load_wait_for_all_of_it(tmp_path, monkeypatch):
    # A built-in module that takes a while to import: before the fix, the second thread saw the
    # registry marked loaded but still empty ("unknown search space 'x' (known: )").
    (tmp_path / "slow_plugin_for_registry_test.py").write_text(
        "import time\n"
        "from tests_registry_target import REG\n"
        "time.sleep(0.3)\n"
        "@REG.register\n"
        "class Slow:\n"
        "    name = 'slow'\n")
    reg = Registry("thing", ("slow_plugin_for_registry_test",), "evo.no_such_group")
    target = type(sys)("tests_registry_target")
    target.REG = reg
    monkeypatch.setitem(sys.modules, "tests_registry_target", target)
    monkeypatch.syspath_prepend(str(tmp_path))
    seen: list[object] = []

    def ask() -> None:
        try:
            seen.append(reg.get("slow").name)
        except ValueError as exc:
            seen.append(str(exc))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert seen == ["slow"] * 8
    assert reg.names() == ["slow"]
