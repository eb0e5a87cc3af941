"""A raw LMNT WebSocket client for engine tests: init, text, eof; collects everything sent."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

import aiohttp


@dataclass
class Received:
    audio: bytearray = field(default_factory=bytearray)
    #: (stream seconds of the audio before the message, parsed JSON) in arrival order
    messages: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    first_audio: float | None = None  # seconds from sending the text
    close_code: int | None = None

    def errors(self) -> list[dict[str, Any]]:
        return [m for _, m in self.messages if "error" in m or m.get("type") == "error"]


async def stream(ws_url: str, text: str, *, timeout: float = 30.0, **init: Any) -> Received:
    """Speak ``text`` in one session (init fields default to voice ava, pcm_s16le 24 kHz)."""
    frame = {"X-API-Key": "k", "voice": "ava", "format": "pcm_s16le", "sample_rate": 24000}
    frame.update(init)
    rate = int(frame["sample_rate"])
    typed = frame.get("lmnt-version") in ("1.1", "1.2")
    got = Received()
    async with aiohttp.ClientSession() as session, session.ws_connect(ws_url) as ws:
        await ws.send_str(json.dumps(frame))
        sent = time.monotonic()
        await ws.send_str(json.dumps({"type": "text", "text": text} if typed else {"text": text}))
        await ws.send_str(json.dumps({"type": "finish"} if typed else {"eof": True}))
        async with asyncio.timeout(timeout):
            async for msg in ws:
                if msg.type is aiohttp.WSMsgType.BINARY:
                    if got.first_audio is None:
                        got.first_audio = time.monotonic() - sent
                    got.audio += msg.data
                elif msg.type is aiohttp.WSMsgType.TEXT:
                    got.messages.append((len(got.audio) / 2 / rate, json.loads(msg.data)))
        got.close_code = ws.close_code
    return got
