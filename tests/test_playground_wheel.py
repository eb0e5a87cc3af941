"""The playground's HTML/JS/CSS ship in the wheel, and an installed (non-editable) copy serves them.

Package data is easy to lose without noticing: an editable install reads the source tree, so
every other test would still pass if hatch left ``server/static/`` out of the wheel.  This
builds the real wheel, installs it (no deps) into a directory of its own, and serves the page
from that copy in a separate interpreter.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SERVER_ROOT = ROOT / "server"
STATIC = SERVER_ROOT / "src" / "lmnt_local" / "server" / "api" / "static"
ASSETS = ("index.html", "playground.js", "playground.css")

_SERVE = textwrap.dedent(
    """
    import asyncio, json, sys
    import aiohttp
    import lmnt_local.server.api.playground as playground
    from lmnt_local.server import LocalLMNTServer, ToneEngine

    async def main():
        async with LocalLMNTServer(engine=ToneEngine()) as srv, aiohttp.ClientSession() as http:
            bodies = {}
            for path in ("/", "/playground/playground.js", "/playground/playground.css"):
                async with http.get(srv.http_url + path) as resp:
                    bodies[path] = [resp.status, await resp.text()]
        print(json.dumps({"module": playground.__file__, "bodies": bodies}))

    asyncio.run(main())
    """
)


def test_the_wheel_ships_the_page_and_an_installed_copy_serves_it(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            *(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"),
            *("-w", str(wheels), str(SERVER_ROOT)),
        ],
        check=True,
        timeout=240,
        capture_output=True,
    )
    (wheel,) = wheels.glob("*.whl")
    inside = "lmnt_local/server/api/static/"
    with zipfile.ZipFile(wheel) as zf:
        for name in ASSETS:
            assert zf.read(inside + name) == (STATIC / name).read_bytes(), name

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "-t", str(target), str(wheel)],
        check=True,
        timeout=120,
        capture_output=True,
    )
    # The installed copy comes first on the path, ahead of this checkout's editable install.
    done = subprocess.run(
        [sys.executable, "-c", _SERVE],
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        check=True,
        timeout=60,
        capture_output=True,
        text=True,
    )
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(result["module"]).is_relative_to(target), result["module"]
    bodies = result["bodies"]
    assert bodies["/"][0] == 200 and "<title>LMNT local playground</title>" in bodies["/"][1]
    assert bodies["/playground/playground.js"] == [200, (STATIC / "playground.js").read_text()]
    assert bodies["/playground/playground.css"] == [200, (STATIC / "playground.css").read_text()]
