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

Run against the local LMNT-compatible server (offline speech by espeak-ng, no LMNT account):

    pip install "videosdk-plugins-lmnt[local]"
    lmnt-local serve --port 8765 &
    export LMNT_WS_URL=ws://127.0.0.1:8765/v1/ai/speech/stream LMNT_API_KEY=local
    export VIDEOSDK_AUTH_TOKEN=...            # from https://app.videosdk.live
    python examples/agent.py

``ws://`` is accepted for loopback, private addresses and cluster names (``ws://tts:8765``);
for a public host use ``wss://`` (or pass ``allow_insecure=True`` / set
``LMNT_ALLOW_INSECURE=1`` knowingly).  To try the plugin with no account at all, see
``examples/offline_conversation.py``.
"""

from __future__ import annotations

import logging
import os
import sys

from videosdk.agents import Agent, AgentSession, JobContext, Pipeline, RoomOptions, WorkerJob

from videosdk.plugins.lmnt import LMNTTTS

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


async def entrypoint(ctx: JobContext) -> None:
    # The gateway clients read the VideoSDK token when they are built, so build them here.
    from videosdk.agents.inference import LLM, STT

    pipeline = Pipeline(
        stt=STT.deepgram(model_id="nova-2", language="en-US"),
        llm=LLM.google(model_id="gemini-2.5-flash"),
        tts=make_tts(),
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
    make_tts()  # fail now, with the plugin's own message, on a bad LMNT_WS_URL or option
    WorkerJob(entrypoint=entrypoint, jobctx=make_context).start()
    return 0


if __name__ == "__main__":
    sys.exit(main())
