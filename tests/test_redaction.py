"""Credentials never shown, and redaction that does not garble messages (issue 10 item 16,
issue 11 item 3).

A ``ws_url`` may carry credentials of its own (``wss://user:pass@host/...``, ``?token=``): they
must reach no error text, ``"error"`` event, log line or ``repr``, exactly like the API key.
And masking must not eat ordinary words: the keyless CLI's placeholder key ``local`` must leave
``ws://localhost`` and ``unable to get local issuer certificate`` readable.
"""

from __future__ import annotations

import asyncio
import logging

import pytest

from videosdk.plugins.lmnt import LMNTTTS, LMNTError, errors
from videosdk.plugins.lmnt.errors import LMNTServerError, redact

from track_helpers import free_port, make_track

pytestmark = pytest.mark.timeout(30)

USER, PASSWORD, TOKEN = "deploy-user", "pa55-w0rd-xyz", "tok-QUERY-91f2"
KEY = "sk-redaction-test-5c1d9e7a"


def _credentials_in(text: str) -> list[str]:
    return [c for c in (PASSWORD, TOKEN, KEY) if c in text]


class _Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


async def test_credentials_in_ws_url_reach_no_error_event_log_or_repr() -> None:
    """A refused connection on a URL with userinfo and a token: every surface is checked."""
    url = f"ws://{USER}:{PASSWORD}@127.0.0.1:{free_port()}/v1/ai/speech/stream?token={TOKEN}"
    handler = _Lines()
    log = logging.getLogger("videosdk.plugins.lmnt")
    log.addHandler(handler)
    old_level = log.level
    log.setLevel(logging.DEBUG)
    try:
        tts = LMNTTTS(api_key=KEY, ws_url=url, max_retries=0, connect_timeout=2)
        tts.audio_track = make_track()
        events: list[str] = []
        tts.on("error", lambda msg: events.append(str(msg)))
        texts = [repr(tts), str(tts), repr(tts._pool.settings)]
        with pytest.raises(LMNTError) as info:
            await tts.synthesize("Hello there.")
        texts += [str(info.value), repr(info.value), repr(info.value.args)]
        await tts.prewarm()  # logs its failure as a WARNING
        await tts.aclose()
    finally:
        log.removeHandler(handler)
        log.setLevel(old_level)
    assert events and handler.lines  # the failure was reported on every channel
    assert "127.0.0.1" in str(info.value)  # still says where it tried
    for text in texts + events + handler.lines:
        assert not _credentials_in(text), text
    assert tts.ws_url == url  # the property itself still gives the user what they set


def test_a_refused_ws_url_is_shown_without_its_credentials() -> None:
    url = f"ws://{USER}:{PASSWORD}@api.example.com/x?token={TOKEN}"
    with pytest.raises(ValueError) as info:
        LMNTTTS(api_key=KEY, ws_url=url)
    assert "api.example.com" in str(info.value)
    assert not _credentials_in(str(info.value)), info.value


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "wss://u:p@host:443/v1?token=abc&voice=x#f",
            "wss://***@host:443/v1?token=***&voice=***#f",
        ),
        ("wss://host/path", "wss://host/path"),
        ("ws://localhost:8765/x", "ws://localhost:8765/x"),
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert errors.redact_url(url) == expected


@pytest.mark.parametrize(
    "text",
    [
        "could not connect to LMNT at ws://localhost:1: connection refused",
        "TLS certificate could not be verified (unable to get local issuer certificate)",
        "a locally cached voice",
    ],
)
def test_the_placeholder_key_local_does_not_garble_messages(text: str) -> None:
    assert redact(text, "local") == text


def test_short_keys_are_masked_where_a_key_goes() -> None:
    """A short key is a word in prose, but a key in a key's place: masked there only."""
    for text in ('{"X-API-Key": "abc"}', "api_key=abc", "Invalid API key: abc",
                 "Authorization: Bearer abc"):  # fmt: skip
        out = redact(text, "abc")
        assert "abc" not in out and "***" in out, out
    assert redact("abc is not a key here", "abc") == "abc is not a key here"


def test_long_keys_are_masked_anywhere_even_glued() -> None:
    assert redact(f"bad key {KEY}.", KEY) == "bad key ***."
    assert KEY not in redact(f"request req_{KEY}", KEY)


def test_errors_scrub_url_credentials_they_carry() -> None:
    err = LMNTServerError(f"failed at wss://{USER}:{PASSWORD}@h/x?token={TOKEN}")
    err.scrub(KEY)
    assert not _credentials_in(str(err)) and not _credentials_in(repr(err.args))


async def test_cli_placeholder_key_error_is_readable() -> None:
    """The keyless path (key ``local``) against a refused port: the URL reads as written."""
    port = free_port()
    tts = LMNTTTS(api_key="local", ws_url=f"ws://localhost:{port}/x", max_retries=0)
    tts.audio_track = make_track()
    try:
        with pytest.raises(LMNTError) as info:
            await asyncio.wait_for(tts.synthesize("Hi."), 10)
    finally:
        await tts.aclose()
    assert f"ws://localhost:{port}" in str(info.value), str(info.value)
    assert "***" not in str(info.value)
