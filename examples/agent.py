"""A real VideoSDK voice agent that speaks through LMNTTTS.

It joins a VideoSDK room, listens with speech-to-text, answers with an LLM and speaks with LMNT.
Speech-to-text and the LLM come from VideoSDK's inference gateway (part of videosdk-agents
1.0.30), so your VideoSDK credentials are the only other account it needs.

Environment:

    VIDEOSDK_AUTH_TOKEN   a VideoSDK token; or set VIDEOSDK_API_KEY and VIDEOSDK_SECRET_KEY and
                          the framework makes one.  Joins the room and pays for STT and the LLM.
    VIDEOSDK_ROOM_ID      optional: the room to join.  Without it a new room is created, and
                          with playground=True the framework logs a link to talk to the agent.
    LMNT_API_KEY          the LMNT key.  Any non-empty value works with ``lmnt-local serve``
                          unless it was started with ``--api-key``.
    LMNT_WS_URL           optional: an LMNT-compatible streaming endpoint instead of LMNT's
                          (e.g. the local server below).  Read by LMNTTTS itself.
    LMNT_VOICE            optional: voice id (default ``ava``).

Run against the local LMNT-compatible server (offline speech, no LMNT account).  ``serve``
speaks with the best engine installed: with the ``local`` extra that is hibari (a neural engine,
female voice ``heart``, which every LMNT voice id such as ``ava`` maps to); without hibari,
Piper's neural ``en_US-joe-medium``, then espeak-ng, then a test tone.  Its first line names the
engine; ``--engine espeak`` picks the lightest one (least CPU per reply, robotic voice):

    pip install ".[local]"                    # in a checkout of this repository
    lmnt-local serve --port 8765 &
    export LMNT_WS_URL=ws://127.0.0.1:8765/v1/ai/speech/stream LMNT_API_KEY=local
    export VIDEOSDK_AUTH_TOKEN=...            # from https://app.videosdk.live
    python examples/agent.py

``ws://`` is accepted for loopback, private addresses and cluster names (``ws://tts:8765``);
for a public host use ``wss://`` (or pass ``allow_insecure=True`` / set
``LMNT_ALLOW_INSECURE=1`` knowingly).  To try the plugin with no account at all, see
``examples/offline_conversation.py``.

Before joining, it checks what it can and stops with one line naming the cause (exit 2 for a
setting that cannot work, 1 for a service it cannot reach): missing credentials, an
``LMNT_WS_URL`` that is malformed or has nothing listening, a room that cannot be created.
Left to the framework, a room that cannot be created still starts the agent, without a room,
and its greeting then fails in the TTS ("no audio track is set"), which blames the wrong part.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import sys
from urllib.parse import urlsplit

from videosdk.agents import Agent, AgentSession, JobContext, Pipeline, RoomOptions, WorkerJob

from videosdk.plugins.lmnt import LMNTTTS, pipeline_options

logger = logging.getLogger("lmnt-agent")


class LMNTVoiceAgent(Agent):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(
            instructions=(
                "You are a helpful voice assistant. Answer in one to three short sentences of "
                "plain spoken English: no markdown, lists or emoji."
            )
        )

    async def on_enter(self) -> None:
        await self.session.say("Hello! I'm speaking through LMNT. How can I help you?")

    async def on_exit(self) -> None:
        await self.session.say("Goodbye!")


def make_tts() -> LMNTTTS:
    """LMNTTTS as in 1.0.30, plus two additions: word timestamps (the room gets the agent's
    transcript word by word, as it is heard) and the typed API 1.2."""
    return LMNTTTS(
        voice=os.getenv("LMNT_VOICE", "ava"),
        model="blizzard",
        language="auto",
        protocol_version="1.2",
        word_timestamps=True,
    )  # key from LMNT_API_KEY, endpoint from LMNT_WS_URL (else LMNT's own)


class SetupError(Exception):
    """A cause the user can fix, reported as one line; ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def _room_failure(exc: BaseException) -> str:
    """The cause of a failed room creation in a few words (the framework wraps the HTTP
    library's multi-clause message)."""
    cause = exc.__cause__ or exc
    response = getattr(cause, "response", None)
    status = getattr(response, "status_code", None)
    if status in (401, 403):
        return f"HTTP {status}: the VideoSDK token was refused; check VIDEOSDK_AUTH_TOKEN"
    if status is not None:
        return f"HTTP {status} from the VideoSDK API"
    if type(cause).__name__ in ("ConnectionError", "Timeout", "ConnectTimeout"):
        return "the VideoSDK API cannot be reached (no network?)"
    return " ".join(str(cause).split())[:200] or type(cause).__name__


async def ensure_room(ctx: JobContext) -> None:
    """Create the room now unless VIDEOSDK_ROOM_ID names one, so a failure stops the agent."""
    if ctx.room_options.room_id:
        return
    try:
        ctx.room_options.room_id = await asyncio.to_thread(ctx.get_room_id)
    except Exception as exc:
        raise SetupError(f"could not create a VideoSDK room: {_room_failure(exc)}") from None


def check_lmnt_endpoint(url: str, timeout: float = 3.0) -> None:
    """Something must listen at ``LMNT_WS_URL``: a local server that was not started would
    otherwise show up only as a mute agent and TTS errors once someone talks to it."""
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "wss" else 80)
    try:
        with socket.create_connection((parts.hostname or "", port), timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise SetupError(
            f"nothing answers at LMNT_WS_URL {url} ({reason}); start the server "
            "(lmnt-local serve --port 8765) or fix the URL"
        ) from None


async def entrypoint(ctx: JobContext) -> None:
    await ensure_room(ctx)
    # The gateway clients read the VideoSDK token when they are built, so build them here.
    from videosdk.agents.inference import LLM, STT

    pipeline = Pipeline(
        stt=STT.deepgram(model_id="nova-2", language="en-US"),
        llm=LLM.google(model_id="gemini-2.5-flash"),
        tts=make_tts(),
        # The LMNT server reads "$5.50" and cuts sentences itself: first audio when the first
        # sentence's period arrives, not a token or two later (docs/configuration.md).
        **pipeline_options(),
    )
    session = AgentSession(agent=LMNTVoiceAgent(), pipeline=pipeline)
    await session.start(wait_for_participant=True, run_until_shutdown=True)


def make_context() -> JobContext:
    room = RoomOptions(
        room_id=os.getenv("VIDEOSDK_ROOM_ID") or None,
        name="LMNT Agent",
        playground=True,
    )
    return JobContext(room_options=room)


def check_environment() -> list[str]:
    """What is missing before the agent can start (empty when it can)."""
    missing = []
    if not os.getenv("VIDEOSDK_AUTH_TOKEN") and not (
        os.getenv("VIDEOSDK_API_KEY") and os.getenv("VIDEOSDK_SECRET_KEY")
    ):
        missing.append("VIDEOSDK_AUTH_TOKEN (or VIDEOSDK_API_KEY and VIDEOSDK_SECRET_KEY)")
    if not os.getenv("LMNT_API_KEY"):
        missing.append("LMNT_API_KEY (any value for lmnt-local serve)")
    return missing


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    missing = check_environment()
    if missing:
        print("agent.py: set " + "; ".join(missing), file=sys.stderr)
        return 2
    try:
        tts = make_tts()  # the plugin's own checks of LMNT_WS_URL and the options
    except ValueError as exc:
        where = " (LMNT_WS_URL)" if os.getenv("LMNT_WS_URL") and "ws_url" in str(exc) else ""
        print(f"agent.py: {exc}{where}", file=sys.stderr)
        return 2
    try:
        if os.getenv("LMNT_WS_URL"):
            check_lmnt_endpoint(tts.ws_url)
        WorkerJob(entrypoint=entrypoint, jobctx=make_context).start()
    except SetupError as exc:
        print(f"agent.py: {exc}", file=sys.stderr)
        return exc.code
    return 0


if __name__ == "__main__":
    sys.exit(main())
