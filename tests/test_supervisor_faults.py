"""Issue 21 items 1 and 9: ``serve --workers N`` under supervisor faults.

Real processes, real signals, loopback only; every wait is bounded.  A worker must never
outlive its supervisor (it would keep serving the port with the old keys), a new server must
not share its port with such orphans, and a stop signal that arrives while a worker is being
restarted must reach the new worker too.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

pytestmark = [
    pytest.mark.timeout(300),  # real processes with bounded waits of their own
    pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals"),
    pytest.mark.skipif(not Path("/proc/self/task").exists(), reason="reads /proc (Linux)"),
]
SERVE = [sys.executable, "-m", "lmnt_local.cli.app", "serve", "--engine", "tone"]


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, IndexError):
        return False
    return state != "Z"


def _wait_gone(pids: list[int], limit: float) -> list[int]:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        left = [pid for pid in pids if _alive(pid)]
        if not left:
            return []
        time.sleep(0.1)
    return [pid for pid in pids if _alive(pid)]


def _kill(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
        proc.wait(5)


def _first_line(proc: subprocess.Popen[str], limit: float) -> str | None:
    """The first stdout line, or None if the process exits or stays silent for ``limit`` s."""
    assert proc.stdout is not None
    stdout = proc.stdout
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.append(stdout.readline()), daemon=True)
    reader.start()
    reader.join(limit)
    return lines[0] if lines and lines[0] else None


def test_workers_die_with_a_killed_supervisor() -> None:
    proc = subprocess.Popen(
        [*SERVE, "--port", "0", "--workers", "2", "--drain-timeout", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    workers: list[int] = []
    try:
        assert _first_line(proc, 120) is not None, "the supervisor did not start"
        workers = _children(proc.pid)
        assert len(workers) == 2
        proc.kill()  # SIGKILL: the supervisor cannot forward anything
        proc.wait(5)
        # Drain deadline (2 s) plus the runner's grace: the orphans must be gone well within.
        left = _wait_gone(workers, 40)
        assert not left, f"workers {left} outlived their SIGKILLed supervisor"
    finally:
        _kill(proc)
        for pid in workers:
            if _alive(pid):
                os.kill(pid, signal.SIGKILL)


def test_a_new_supervisor_does_not_share_its_port_with_an_orphan() -> None:
    # A lone --reuse-port worker is what an orphan of a killed supervisor looks like.
    orphan = subprocess.Popen(
        [*SERVE, "--port", "0", "--workers", "1", "--reuse-port"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = _first_line(orphan, 120)
        assert line is not None, "the stand-in orphan did not start"
        port = line.split()[-1].split("://", 1)[1].split("/", 1)[0].rsplit(":", 1)[1]
        new = subprocess.Popen(
            [*SERVE, "--port", port, "--workers", "2"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            started = _first_line(new, 60)
            assert started is None, f"a new server shared port {port} with an orphan"
            assert new.wait(30) != 0
            assert new.stderr is not None
            assert "in use" in new.stderr.read()
        finally:
            _kill(new)
    finally:
        _kill(orphan)


def test_sigterm_during_a_worker_restart_reaches_the_new_worker() -> None:
    # A long drain deadline: a worker the signal never reached would hold the supervisor for
    # drain + grace (over 70 s) before being SIGKILLed; one that got it stops at once (idle).
    proc = subprocess.Popen(
        [*SERVE, "--port", "0", "--workers", "2", "--drain-timeout", "60"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert _first_line(proc, 120) is not None, "the supervisor did not start"
        workers = _children(proc.pid)
        assert len(workers) == 2
        os.kill(workers[0], signal.SIGKILL)
        assert proc.stderr is not None
        stderr = proc.stderr
        notes: list[str] = []

        def read_until_restart() -> None:
            for _ in range(50):
                note = stderr.readline()
                notes.append(note)
                if not note or "restarting it" in note:
                    return

        reader = threading.Thread(target=read_until_restart, daemon=True)
        reader.start()
        reader.join(60)
        assert notes and "restarting it" in notes[-1], notes
        proc.send_signal(signal.SIGTERM)  # inside the restart: the new worker is not up yet
        code = proc.wait(40)  # well under the 70 s it would take if a worker missed it
        assert code == 0
        assert not _wait_gone(_children(proc.pid), 5)
    finally:
        _kill(proc)
