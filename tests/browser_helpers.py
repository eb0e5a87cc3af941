"""A real headless Chromium for the playground tests, driven by Playwright.

Playwright never downloads a browser here: it drives Debian's ``chromium`` (installed by
``.ci/run``), found on PATH or at /usr/bin/chromium.  Each launch gets a fresh temporary
profile (Playwright's default for ``launch``), no network beyond loopback is ever needed, and
Web Audio runs without a user gesture so Speak can play in a headless tab.
"""

from __future__ import annotations

import shutil
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
)


def find_chromium() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    fallback = Path("/usr/bin/chromium")
    return str(fallback) if fallback.exists() else None


@dataclass
class PageLog:
    """What the page said: console errors, uncaught exceptions, and every request URL."""

    errors: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)

    def attach(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda exc: self.errors.append(f"pageerror: {exc}"))
        page.on("request", lambda req: self.requests.append(req.url))
        page.on("websocket", lambda ws: self.requests.append(ws.url))

    def _console(self, msg: Any) -> None:
        if msg.type == "error":
            self.errors.append(f"console: {msg.text}")


@asynccontextmanager
async def chromium_page(
    executable: str, *, width: int = 1280, height: int = 900, ignore_https_errors: bool = False
) -> AsyncIterator[tuple[Any, PageLog]]:
    """A new page in a freshly launched headless Chromium, and its log."""
    from playwright.async_api import async_playwright

    async with async_playwright() as pw:
        browser = await pw.chromium.launch(
            executable_path=executable, args=list(FLAGS), headless=True
        )
        try:
            context = await browser.new_context(
                viewport={"width": width, "height": height},
                accept_downloads=True,
                ignore_https_errors=ignore_https_errors,  # the tests' throwaway CA
            )
            page = await context.new_page()
            log = PageLog()
            log.attach(page)
            yield page, log
        finally:
            await browser.close()
