"""How long does an idle ``lmnt-local serve`` take to exit after SIGTERM?  (issue 18, item 3)

Run from the repository root::

    python benchmarks/sigterm_idle.py                     # 5 runs per configuration
    git archive 10882af src | tar -x -C /tmp/old          # before the fix (one src/ then) ...
    python benchmarks/sigterm_idle.py --src /tmp/old/src --module videosdk.plugins.lmnt.cli

Each run starts ``lmnt-local serve --port 0`` (tone with 1 and 2 workers, and the default
engine), waits for its URL and one more second (idle: encoding processes started, nothing in
flight), sends SIGTERM and times the exit.  The target is under 1 s (docs/cli.md).  Printed:
median and worst per configuration, beside the cost it avoids (a Python process importing
the same modules and exiting normally), the CPU model and the load average.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import subprocess
import sys
import time
from pathlib import Path

from _common import cpu_model, load_note, table

ROOT = Path(__file__).resolve().parent.parent
UNLOAD = """
import importlib, sys
importlib.import_module(sys.argv[1])
try:
    import lmnt_local.server.app
except ImportError:  # a checkout from before the split
    import videosdk.plugins.lmnt.server.app
print("ready", flush=True)
sys.stdin.readline()
"""


def once(argv: list[str], env: dict[str, str], by_signal: bool) -> float:
    proc = subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env=env,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        if not proc.stdout.readline():
            raise RuntimeError(f"{argv} printed nothing")
        time.sleep(1.0)
        started = time.monotonic()
        if by_signal:
            proc.send_signal(signal.SIGTERM)
        else:
            proc.stdin.write("\n")
            proc.stdin.flush()
        proc.wait(30)
        return time.monotonic() - started
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument(
        "--src",
        default=os.pathsep.join((str(ROOT / "server" / "src"), str(ROOT / "src"))),
        help="PYTHONPATH of the checkout to measure (default: this one)",
    )
    parser.add_argument("--module", default="lmnt_local.cli.app", help="what -m runs")
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": args.src}
    serve = [sys.executable, "-m", args.module, "serve", "--port", "0"]
    configs = {
        "serve --engine tone --workers 1": ([*serve, "--engine", "tone", "--workers", "1"], True),
        "serve --engine tone --workers 2": ([*serve, "--engine", "tone", "--workers", "2"], True),
        "serve (default engine)": (serve, True),
        "baseline: import the same modules, exit normally": (
            [sys.executable, "-c", UNLOAD, args.module],
            False,
        ),
    }
    rows = []
    for name, (argv, by_signal) in configs.items():
        times = [once(argv, env, by_signal) for _ in range(max(1, min(args.runs, 50)))]
        rows.append((name, f"{statistics.median(times):.3f}", f"{max(times):.3f}", len(times)))
    print(f"{cpu_model()}, {load_note()}\n")
    print(table(("SIGTERM to exit (idle)", "median s", "worst s", "runs"), rows))


if __name__ == "__main__":
    main()
