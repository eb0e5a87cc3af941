"""What it costs to install and start the local server: venv size, packages, start-up time.

For each virtualenv given (made beforehand, e.g. ``python3 -m venv /tmp/s && /tmp/s/bin/pip
install "./server[local]"`` for the server alone, ``".[local]"`` for plugin and server, or a
checkout of an older commit), prints its size on disk, whether it holds a ``videosdk`` package,
how long importing the server takes, and how long ``lmnt-local serve`` takes until it prints its
URL and until ``/readyz`` answers 200 (the engine loaded).  Every run is bounded (60 s each); the
best of ``--runs`` is reported, with the CPU model and the load average, since start-up time is
mostly disk and import work that a busy machine slows down.

    python benchmarks/server_footprint.py --venv /tmp/before /tmp/server-only /tmp/full
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import time
import urllib.request
from pathlib import Path

from _common import cpu_model


def _size_mb(path: Path) -> float:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                pass
    return total / 1e6


def _packages(python: Path) -> list[str]:
    out = subprocess.run(
        [str(python), "-m", "pip", "list", "--format=json"],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    return sorted(p["name"].lower() for p in json.loads(out))


def _server_module(python: Path) -> str:
    """``lmnt_local.server`` (since the split) or the old ``videosdk.plugins.lmnt.server``."""
    probe = subprocess.run(
        [str(python), "-c", "import importlib.util as u; print(bool(u.find_spec('lmnt_local')))"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    return "lmnt_local.server" if probe.stdout.strip() == "True" else "videosdk.plugins.lmnt.server"


def _import_seconds(python: Path, module: str) -> float:
    code = f"import time; t = time.perf_counter(); import {module}; print(time.perf_counter() - t)"
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, timeout=60)
    return float(out.stdout.strip().splitlines()[-1])


def _serve_seconds(venv: Path, engine: str) -> tuple[float, float]:
    """Seconds from spawning ``serve`` to its URL on stdout, and to ``/readyz`` = 200."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LMNT_", "PYTHON"))}
    start = time.perf_counter()
    proc = subprocess.Popen(
        [str(venv / "bin" / "lmnt-local"), "serve", "--port", "0", "--engine", engine,
         "--workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        url = ""
        for _ in range(50):
            line = proc.stdout.readline()
            found = re.search(r"http://\S+", line)
            if found:
                url = found.group(0).rstrip("/")
                break
            if not line:
                break
        printed = time.perf_counter() - start
        if not url:
            raise RuntimeError("serve printed no URL")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(url + "/readyz", timeout=2) as resp:
                    if resp.status == 200:
                        return printed, time.perf_counter() - start
            except OSError:
                pass
            time.sleep(0.01)
        raise RuntimeError("never ready")
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--venv", nargs="+", type=Path, required=True)
    parser.add_argument("--engine", default="auto")
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    print(f"CPU: {cpu_model()}; load average at start: {os.getloadavg()}")
    print(f"engine: {args.engine}; best of {args.runs} runs\n")
    print(
        "| venv | size (MB) | packages | videosdk-* | import server (s) | serve → URL (s) "
        "| serve → ready (s) |"
    )
    print("|---|---:|---:|---|---:|---:|---:|")
    for venv in args.venv:
        python = venv / "bin" / "python"
        packages = _packages(python)
        videosdk = [p for p in packages if p.startswith("videosdk")]
        module = _server_module(python)
        imports = min(_import_seconds(python, module) for _ in range(args.runs))
        runs = [_serve_seconds(venv, args.engine) for _ in range(args.runs)]
        printed = min(r[0] for r in runs)
        ready = min(r[1] for r in runs)
        print(
            f"| {venv} | {_size_mb(venv):.0f} | {len(packages)} | {', '.join(videosdk) or 'none'} "
            f"| {imports:.2f} | {printed:.2f} | {ready:.2f} |",
            flush=True,
        )
    print(f"\nload average at end: {os.getloadavg()}")


if __name__ == "__main__":
    main()
