"""The official ``lmnt`` Python SDK 2.13, unmodified, against the local server over loopback.

Every call the SDK offers is made as a user would make it (``AsyncLmnt(base_url=...)``): speech
bytes in every format, the detailed JSON speech, a 1.2 speech session with flush, reset and
finish, every voice call, the account.  What cannot work locally (cloning, deleting a system
voice) must come back as the SDK's typed error with the server's explanation.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator

import pytest
import pytest_asyncio

from lmnt_local.server import LocalLMNTServer, ToneEngine

lmnt = pytest.importorskip("lmnt")

pytestmark = pytest.mark.asyncio

TONE = ToneEngine()
KEY = "sesame-python-sdk"
OTHER_KEY = "sesame-other"


def pcm_len(text: str, rate: int = 24000, width: int = 2) -> int:
    return round(TONE.seconds_per_char * rate) * len(text) * width


@pytest_asyncio.fixture
async def server() -> AsyncIterator[LocalLMNTServer]:
    async with LocalLMNTServer(engine=TONE, api_keys={KEY, OTHER_KEY}) as srv:
        yield srv


def client(server: LocalLMNTServer, key: str = KEY) -> lmnt.AsyncLmnt:
    return lmnt.AsyncLmnt(api_key=key, base_url=server.http_url, max_retries=0, timeout=10)


MAGIC = {
    "mp3": lambda b: b[0] == 0xFF and b[1] & 0xE0 == 0xE0,
    "webm": lambda b: b[:4] == b"\x1a\x45\xdf\xa3",
    "aac": lambda b: b[0] == 0xFF and b[1] & 0xF0 == 0xF0,
    "wav": lambda b: b[:4] == b"RIFF" and b[8:12] == b"WAVE",
    "ulaw": lambda b: b[:4] == b"RIFF" and b[20:22] == b"\x07\x00",
}


async def test_generate_every_format(server: LocalLMNTServer) -> None:
    async with asyncio.timeout(20):
        c = client(server)
        for fmt, rate, width in (("pcm_s16le", 16000, 2), ("pcm_f32le", 8000, 4)):
            resp = await c.speech.generate(
                text="Hello there.", voice="ava", format=fmt, sample_rate=rate
            )
            assert len(await resp.read()) == pcm_len("Hello there.", rate, width), fmt
        for fmt, check in MAGIC.items():
            resp = await c.speech.generate(text="Hello there.", voice="leah", format=fmt)
            data = await resp.read()
            assert len(data) > 100 and check(data), fmt


async def test_generate_detailed_timestamps(server: LocalLMNTServer) -> None:
    async with asyncio.timeout(10):
        c = client(server)
        result = await c.speech.generate_detailed(
            text="Hello big world.", voice="ava", format="pcm_s16le", return_timestamps=True
        )
        assert len(base64.b64decode(result.audio)) == pcm_len("Hello big world.")
        assert result.timestamps is not None
        assert [(t.text, t.start, t.duration) for t in result.timestamps] == [
            ("Hello", 0.0, 0.25),
            ("big", 0.3, 0.15),
            ("world.", 0.5, 0.3),
        ]
        plain = await c.speech.generate_detailed(text="Hi.", voice="ava", format="mp3")
        assert plain.timestamps is None and len(base64.b64decode(plain.audio)) > 100


async def test_session_flush_reset_finish(server: LocalLMNTServer) -> None:
    """A 1.2 session: flushed text is spoken whole, the unflushed text a reset drops is not."""
    async with asyncio.timeout(10):
        c = client(server)
        session = await c.speech.sessions.create(
            voice="ava", format="pcm_s16le", sample_rate=24000, return_timestamps=True
        )
        await session.send_text("Hello world. ")
        flush_nonce = await session.send_flush()
        await session.send_text("never spoken")
        reset_nonce = await session.send_reset()
        await session.send_text("ok")
        await session.send_finish()
        kinds: list[str] = []
        audio = bytearray()
        acks: list[tuple[str, int]] = []
        async for msg in session:
            kinds.append(msg.type)
            if msg.type == "audio":
                audio += msg.audio
            elif msg.type in ("flush_complete", "reset_complete"):
                acks.append((msg.type, msg.nonce))
        await session.close()
    assert kinds[0] == "ready"
    assert acks == [("flush_complete", flush_nonce), ("reset_complete", reset_nonce)]
    assert len(audio) == pcm_len("Hello world. ") + pcm_len("ok")


async def test_voices_every_call(server: LocalLMNTServer) -> None:
    async with asyncio.timeout(10):
        c = client(server)
        voices = await c.voices.list()
        assert [v.id for v in voices] == [v.id for v in TONE.voices()]
        assert await c.voices.list(owner="me") == []
        assert await c.voices.list(starred="true") == []
        voice = await c.voices.retrieve("leah")
        assert (voice.id, voice.owner, voice.state, voice.starred) == (
            "leah",
            "system",
            "ready",
            False,
        )
        updated = await c.voices.update("leah", starred=True, description="mine", tags=["a"])
        assert (updated.voice.starred, updated.voice.description, updated.voice.tags) == (
            True,
            "mine",
            ["a"],
        )
        assert [v.id for v in await c.voices.list(starred="true")] == ["leah"]
        assert (await c.voices.retrieve("leah")).description == "mine"
        # another key sees its own stars and metadata only
        theirs = await client(server, OTHER_KEY).voices.retrieve("leah")
        assert (theirs.starred, theirs.description) == (False, "Warm, conversational")
        with pytest.raises(lmnt.NotFoundError, match="not found"):
            await c.voices.retrieve("no-such-voice")
        with pytest.raises(lmnt.PermissionDeniedError, match="cannot be deleted"):
            await c.voices.delete("leah")
        with pytest.raises(lmnt.APIStatusError, match="cloning is not available") as info:
            await c.voices.create(file=("v.wav", b"RIFF" + bytes(4000)), name="clone")
        assert info.value.status_code == 501


async def test_account_counts_characters_per_key(server: LocalLMNTServer) -> None:
    async with asyncio.timeout(10):
        c = client(server)
        before = await c.accounts.retrieve()
        assert before.usage.characters == 0 and before.plan.type == "local"
        resp = await c.speech.generate(text="Twelve chars", voice="ava", format="pcm_s16le")
        await resp.read()
        session = await c.speech.sessions.create(voice="ava", format="pcm_s16le")
        await session.send_text("abc")
        await session.send_finish()
        async for _ in session:
            pass
        await session.close()
        assert (await c.accounts.retrieve()).usage.characters == 12 + 3


async def test_errors_are_typed_sdk_exceptions(server: LocalLMNTServer) -> None:
    async with asyncio.timeout(10):
        with pytest.raises(lmnt.PermissionDeniedError) as info:
            await client(server, "wrong-key").voices.list()
        assert info.value.body == {
            "error": {"type": "permission_error", "message": "Invalid API key"}
        }
        assert info.value.response.headers["request-id"].startswith("req_")
        c = client(server)
        with pytest.raises(lmnt.UnprocessableEntityError, match="unknown voice 'nobody'"):
            await c.speech.generate(text="Hi", voice="nobody")
        with pytest.raises(lmnt.UnprocessableEntityError, match="at most 5000"):
            await c.speech.generate_detailed(text="x" * 5001, voice="ava")
        session = await c.speech.sessions.create(voice="nobody", format="pcm_s16le")
        messages = [msg async for msg in session]
        await session.close()
        assert [m.type for m in messages] == ["error"]
        assert messages[0].error.type == "invalid_request_error"
        assert "unknown voice 'nobody'" in messages[0].error.message
