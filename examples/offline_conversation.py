"""A whole agent conversation through LMNTTTS, offline: no room, no VideoSDK account, no LMNT key.

    python examples/offline_conversation.py                    # writes conversation.wav
    python examples/offline_conversation.py -o out.wav --engine tone --realtime

What runs is the framework's real stack (VideoSDK Agents 1.0.30): an ``Agent`` greets the user
from ``on_enter`` with ``session.say()``; an ``AgentSession`` drives a ``Pipeline`` whose LLM is
a scripted stand-in (a subclass of the framework's ``LLM`` that streams ``LLMResponse`` tokens)
and whose TTS is ``LMNTTTS``, pointed at a ``LocalLMNTServer`` started inside this process on
127.0.0.1.  That server speaks with ``--engine`` (default ``auto``, the best installed: with
the ``local`` extra, hibari's neural female voice ``heart``; without hibari, Piper's neural
``en_US-joe-medium``, then espeak-ng, then the 440 Hz test tone; the summary line names it).
Two user turns are fed to the pipeline's orchestrator as if speech-to-text had produced them.
Every
audio frame that leaves the agent's ``CustomAudioStreamTrack`` (what a room participant would
hear) is written to a 24 kHz mono 16-bit WAV file, with a short pause between utterances.

Nothing here needs a network: the only socket is the loopback one to the embedded server.
``VIDEOSDK_AUTH_TOKEN`` is removed from the environment of the command-line run so the
framework's analytics have nothing to send with (they also need a room session id, which a
headless run never has).  By default the track is drained as fast as audio is ready, so the
whole run takes as long as the engine needs to speak it (a second or two with espeak-ng or the
tone, several with the neural voice on a small CPU); ``--realtime`` plays it at the pace a room
would.

Import ``run`` to drive it from your own code or tests: ``await run("out.wav")`` returns a
``Conversation`` with what was said and how long it lasted.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import re
import sys
import time
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from videosdk.agents import Agent, AgentSession, ChatRole, LLMResponse, Pipeline
from videosdk.agents.llm.llm import LLM
from videosdk.agents.room.output_stream import CustomAudioStreamTrack

from lmnt_local.server import LocalLMNTServer, SpeechEngine
from lmnt_local.server.engines import ENGINE_NAMES
from videosdk.plugins.lmnt import LMNTTTS, pipeline_options

RATE = 24000  # what the framework's track plays: 24 kHz, mono, s16, 20 ms frames
PAUSE = 0.4  # seconds of silence written between two utterances

GREETING = "Hello! I am a voice agent running entirely on this computer."
SCRIPT: list[tuple[str, str]] = [
    (
        "What can you do?",
        "I can answer you with speech from the LMNT plugin. "
        "Every word you hear was made by a local server.",
    ),
    ("Great, thank you. Goodbye!", "You are welcome. Goodbye, and have a nice day!"),
]


@dataclass
class Utterance:
    speaker: str  # "agent" or "user"
    text: str
    seconds: float = 0.0  # audio the agent's track played for it (0 for the user)


@dataclass
class Conversation:
    output: str
    engine: str
    utterances: list[Utterance] = field(default_factory=list)
    seconds: float = 0.0  # length of the WAV file, pauses included
    server_texts: list[str] = field(default_factory=list)  # what the local server was sent
    elapsed: float = 0.0  # wall-clock seconds the run took


class ScriptedLLM(LLM):  # type: ignore[misc]
    """Replies from a script, streamed token by token the way a real LLM streams."""

    def __init__(self, replies: Sequence[str], token_delay: float = 0.005) -> None:
        super().__init__()
        self._replies = list(replies)
        self._token_delay = token_delay
        self.model = "scripted"

    async def chat(self, messages: Any, tools: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        reply = self._replies.pop(0) if self._replies else "I have nothing more to say."
        for token in re.findall(r"\S+\s*", reply):
            await asyncio.sleep(self._token_delay)
            yield LLMResponse(content=token, role=ChatRole.ASSISTANT)

    async def cancel_current_generation(self) -> None:
        pass


class OfflineAgent(Agent):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__(instructions="You are a friendly voice agent.")

    async def on_enter(self) -> None:
        await self.session.say(GREETING)

    async def on_exit(self) -> None:
        pass  # the goodbye is part of the script


class Recorder:
    """Pulls frames from the agent's track as a WebRTC sender would, keeping those that carried
    the agent's audio.  Fast mode moves the track's clock into the past (as the framework's own
    tests of it do), so frames are ready as soon as their audio is."""

    def __init__(self, track: CustomAudioStreamTrack, realtime: bool) -> None:
        self.track = track
        self.realtime = realtime
        self.pcm = bytearray()
        self._stop = False
        if not realtime:
            track._start = 0.0
            track._speaking_grace_period = 0.0
        self._task = asyncio.get_running_loop().create_task(self._run(), name="recorder")

    def _queued(self) -> bool:
        return bool(self.track.frame_buffer)

    async def _run(self) -> None:
        while not self._stop:
            played = self.track._samples_played
            frame = await self.track.recv()
            if self.track._samples_played > played and frame is not None:
                self.pcm += frame.to_ndarray().astype("<i2").tobytes()
            if not self.realtime:
                # No sleep inside recv() now: yield, and idle a little while nothing is queued.
                await asyncio.sleep(0 if self._queued() else 0.002)

    def mark(self) -> int:
        return len(self.pcm)

    def pause(self, seconds: float) -> None:
        self.pcm += bytes(2 * round(seconds * RATE))

    async def stop(self) -> None:
        self._stop = True
        await asyncio.wait_for(self._task, 2)


def pick_engine(name: str) -> SpeechEngine:
    """The best installed engine for ``auto`` (``pip install ".[local]"`` in a checkout
    brings hibari, Piper and espeak-ng), else the one named."""
    from lmnt_local.server.engines import make_engine

    return make_engine(name)


def write_wav(path: str, pcm: bytes) -> None:
    with wave.open(path, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(RATE)
        w.writeframes(pcm)


async def run(
    output: str = "conversation.wav",
    *,
    engine: str = "auto",
    realtime: bool = False,
    time_limit: float = 60.0,
    log: Any = None,
) -> Conversation:
    """Hold the scripted conversation and write what the agent said to ``output``."""
    say = log or (lambda line: None)
    started = time.monotonic()
    loop = asyncio.get_running_loop()
    speech = pick_engine(engine)
    result = Conversation(output=output, engine=speech.name)
    async with LocalLMNTServer(engine=speech, port=0) as server:
        # Any non-empty key is accepted by the embedded server; ws_url is explicit, so
        # LMNT_WS_URL / LMNT_API_KEY from the environment are not used.
        tts = LMNTTTS(api_key="offline-demo", ws_url=server.ws_url, voice="ava")
        llm = ScriptedLLM([reply for _, reply in SCRIPT])
        pipeline = Pipeline(llm=llm, tts=tts, **pipeline_options())
        track = CustomAudioStreamTrack(loop)
        pipeline._set_loop_and_audio_track(loop, track)  # what JobContext.connect() does
        agent = OfflineAgent()
        session = AgentSession(agent=agent, pipeline=pipeline)
        recorder = Recorder(track, realtime)
        try:
            async with asyncio.timeout(time_limit):
                mark = recorder.mark()
                await session.start()  # prewarm, then on_enter: the greeting, played to the end
                seconds = (recorder.mark() - mark) / 2 / RATE
                result.utterances.append(Utterance("agent", GREETING, seconds))
                say(f"agent: {GREETING}  [{seconds:.2f} s]")
                orchestrator = pipeline.orchestrator
                for user_text, _ in SCRIPT:
                    recorder.pause(PAUSE)
                    result.utterances.append(Utterance("user", user_text))
                    say(f"user:  {user_text}")
                    mark = recorder.mark()
                    # What the STT's final transcript would trigger: LLM -> chunker -> TTS.
                    await orchestrator._process_final_transcript(user_text)
                    await orchestrator._current_generation_task  # ends when playback ends
                    reply = agent.chat_context.messages()[-1]
                    text = reply.content if reply.role == ChatRole.ASSISTANT else ""
                    if isinstance(text, list):
                        text = " ".join(str(part) for part in text)
                    seconds = (recorder.mark() - mark) / 2 / RATE
                    result.utterances.append(Utterance("agent", str(text), seconds))
                    say(f"agent: {text}  [{seconds:.2f} s]")
        finally:
            await recorder.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(session.close(), 5)  # also closes the TTS
            await tts.aclose()
        result.server_texts = [s.text for s in server.sessions if s.texts]
    write_wav(output, bytes(recorder.pcm))
    result.seconds = len(recorder.pcm) / 2 / RATE
    result.elapsed = time.monotonic() - started
    return result


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-o", "--output", default="conversation.wav", help="WAV file to write")
    parser.add_argument("--engine", choices=ENGINE_NAMES, default="auto")
    parser.add_argument("--realtime", action="store_true", help="play at real-time pace")
    parser.add_argument("--timeout", type=float, default=60.0, help="give up after N seconds")
    parser.add_argument("-v", "--verbose", action="store_true", help="show framework logs")
    args = parser.parse_args(argv)
    os.environ.pop("VIDEOSDK_AUTH_TOKEN", None)  # a headless run must not report anywhere
    logging.basicConfig(level=logging.INFO if args.verbose else logging.CRITICAL)
    try:
        result = asyncio.run(
            run(
                args.output,
                engine=args.engine,
                realtime=args.realtime,
                time_limit=args.timeout,
                log=print,
            )
        )
    except TimeoutError:
        print(f"offline_conversation: gave up after {args.timeout:g} s", file=sys.stderr)
        return 1
    except Exception as exc:  # a demo should say what went wrong in one line
        print(f"offline_conversation: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    spoken = [u for u in result.utterances if u.speaker == "agent"]
    if not spoken or any(u.seconds <= 0 for u in spoken):
        print("offline_conversation: the agent produced no audio", file=sys.stderr)
        return 1
    print(
        f"wrote {result.output}: {result.seconds:.2f} s of audio ({result.engine} engine), "
        f"in {result.elapsed:.2f} s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
