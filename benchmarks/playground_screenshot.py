"""Render ``docs/playground.png``: the playground page mid-sentence, in headless Chromium.

Run from the repository root (needs Debian's ``chromium`` and the ``[test]`` extra)::

    python benchmarks/playground_screenshot.py [-o docs/playground.png]

It starts the local server with its default engine (espeak-ng when installed), speaks a
sentence with one voice, and takes the picture once about half the words have been heard, so
the shot shows the voices, the metrics, the highlighted word and the snippet.  Bounded: it
gives up after 20 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

# _common sits beside this script; browser_helpers is the tests' launcher of chromium.
sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))
from _common import REPO, ensure_package

ensure_package()

from lmnt_local.server import LocalLMNTServer

from browser_helpers import chromium_page, find_chromium

TEXT = (
    "Welcome to the local LMNT server. Pick a voice, press Speak, "
    "and watch every word light up the moment you hear it."
)


async def shoot(out: Path, voice: str, port: int) -> None:
    chromium = find_chromium()
    if chromium is None:
        raise SystemExit("no chromium found (Debian: apt-get install -y chromium)")
    async with (
        LocalLMNTServer(port=port) as srv,
        chromium_page(chromium, width=1280, height=860) as (page, log),
    ):
        await page.goto(srv.http_url + "/")
        await page.wait_for_selector(".voice")
        await page.click(f'.voice[data-voice="{voice}"]')
        await page.fill("#text", TEXT)
        await page.click("#speak")
        words = len(TEXT.split())
        for _ in range(400):  # 20 s at most
            heard = await page.locator(".word.heard").count()
            if heard >= words // 2 and await page.locator(".word.now").count():
                break
            await asyncio.sleep(0.05)
        else:
            raise SystemExit("the page did not reach the middle of the sentence in 20 s")
        await page.screenshot(path=str(out), full_page=True)
        if log.errors:
            raise SystemExit(f"console errors: {log.errors}")
    print(f"wrote {out} (engine {srv.engine.name}, voice {voice})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", type=Path, default=REPO / "docs" / "playground.png")
    parser.add_argument("--voice", default="leah")
    parser.add_argument("--port", type=int, default=8765, help="shown in the snippet (0: any)")
    args = parser.parse_args()
    asyncio.run(shoot(args.out, args.voice, args.port))


if __name__ == "__main__":
    main()
