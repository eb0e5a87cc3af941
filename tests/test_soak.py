"""Soak, short: 150 mixed turns in one process, and nothing may accumulate.

The driver is ``benchmarks/soak.py`` (the long run is ``python benchmarks/soak.py``, 2,000
turns): plain, streamed and typed turns, interrupts and cancellations mid-audio, a failing turn
for every server fault, and fresh instances created and closed.  After a warm-up round the
baseline is taken; at the end open file descriptors, asyncio tasks, ``lmnt-*`` tasks, open
connections and traced memory must be back within a small tolerance, no turn may miss its
bound, and once every plugin and server is closed the process is back to where it started.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

_SOAK = Path(__file__).resolve().parent.parent / "benchmarks" / "soak.py"


def _driver() -> ModuleType:
    name = "lmnt_benchmarks_soak"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _SOAK)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


@pytest.mark.timeout(40)
async def test_short_soak_returns_to_baseline() -> None:
    soak = _driver()
    result = await soak.run_soak(150, every=50, seed=7, max_seconds=30.0)
    print(soak.report(result))
    assert result.turns == 150, "the run stopped early (time budget)"
    assert result.seconds < 30
    assert soak.problems(result) == []
    b, f = result.baseline, result.final
    assert f.fds - b.fds <= 2 and f.tasks - b.tasks <= 2
    assert f.connections <= b.connections and f.lmnt_tasks <= b.lmnt_tasks
    assert f.traced_mb - b.traced_mb < 0.25  # MB; a leak of 2 KB a turn would show
    # Every kind of turn ran, and the ones that must succeed did.
    for kind, outcomes in result.kinds.items():
        assert outcomes.count, f"{kind} never ran"
    for kind in ("plain", "stream", "typed", "fresh instance"):
        assert result.kinds[kind].results == {"ok": result.kinds[kind].count}, kind
    assert result.kinds["cancel"].results.get("cancelled", 0) >= 1
    assert result.kinds["fail: invalid key"].results == {
        "raised LMNTAuthError": result.kinds["fail: invalid key"].count
    }


def test_the_soak_verdict_can_fail() -> None:
    """``problems`` reports growth: a leak of three sockets would not go unnoticed."""
    soak = _driver()
    base = soak.Sample(0, 0.0, 20, 20, 5, 3, 1.0, 100.0)
    leaky = soak.Sample(150, 9.0, 23, 20, 5, 3, 1.0, 100.0)
    result = soak.SoakResult(150, 9.0, base, leaky, [base, leaky], {}, 0, 10, 10, 1, 1)
    assert any("fds grew by 3" in p for p in soak.problems(result))
    clean = soak.SoakResult(150, 9.0, base, base, [base, base], {}, 0, 10, 10, 1, 1)
    assert soak.problems(clean) == []
