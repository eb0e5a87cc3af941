"""A whole voice agent around ``LMNTTTS``, for the full-stack scenario suite.

What runs is the framework's real stack: ``Agent`` + ``AgentSession`` + ``Pipeline`` with its
default text filter and sentence chunker, a scripted LLM (a subclass of the framework's ``LLM``)
that streams hundreds of token-sized deltas, user turns fed through the orchestrator exactly as
a final STT transcript would be (``_process_final_transcript``), optionally ``FallbackTTS`` with
a second provider, and the real ``CustomAudioStreamTrack`` drained as fast as audio is ready.
The TTS talks over real TCP to the package's ``LocalLMNTServer`` (tone engine) whose faults can
be armed per turn.

Each scenario asks the harness for the user-visible outcome: how much audio of which pitch the
listener heard, whether the agent is back to IDLE, what the chat context holds, whether a
framework lock or an ``lmnt-*`` task was left behind, and how long recovery took.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import math
import re
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from videosdk.agents import Agent, AgentSession, ChatRole, LLMResponse, Pipeline
from videosdk.agents.llm.llm import LLM
from videosdk.agents.tts.fallback_tts import FallbackTTS
from videosdk.agents.tts.tts import TTS

from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine
from videosdk.plugins.lmnt import LMNTTTS
from videosdk.plugins.lmnt.testing import start_local_server

from audio_helpers import estimate_pitch
from track_helpers import TRACK_RATE, Drain, make_track

KEY = "sk-agent-harness-0123456789abcdef"
SECONDS_PER_CHAR = 0.004  # the server's tone: long replies stay a few seconds of audio
LMNT_TONE = ToneEngine(frequency=440.0, seconds_per_char=SECONDS_PER_CHAR)
BACKUP_HZ = 880.0  # the backup provider's tone, to tell who spoke


def long_reply(sentences: int = 30, seed: int = 0) -> str:
    """An LLM answer of ``sentences`` sentences, ~10 words each: hundreds of deltas."""
    words = (
        "alpha bravo charlie delta echo foxtrot golf hotel india juliet kilo lima mike "
        "november oscar papa quebec romeo sierra tango uniform victor whiskey"
    ).split()
    out = []
    for i in range(sentences):
        n = 8 + (i + seed) % 4
        ws = [words[(i * 7 + j * 3 + seed) % len(words)] for j in range(n)]
        out.append(" ".join(ws).capitalize() + ".")
    return " ".join(out)


def deltas(text: str) -> list[str]:
    """Token-sized pieces, as an LLM streams them (a word split in two now and then)."""
    out: list[str] = []
    for i, word in enumerate(re.findall(r"\S+\s*", text)):
        if i % 5 == 3 and len(word) > 4:
            out.extend((word[:3], word[3:]))
        else:
            out.append(word)
    return out


class ScriptedLLM(LLM):  # type: ignore[misc]
    """Streams the reply it is given for each turn, one token-sized delta every ``delay`` s."""

    def __init__(self, delay: float = 0.002) -> None:
        super().__init__()
        self.model = "scripted"
        self.delay = delay
        self.replies: list[str] = []
        self.first_delay = 0.0  # seconds before the first delta ("thinking")
        self.calls = 0
        self.streamed = 0  # deltas yielded over the LLM's life

    async def chat(self, messages: Any, tools: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        self.calls += 1
        reply = self.replies.pop(0) if self.replies else "Nothing more to say."
        if self.first_delay:
            await asyncio.sleep(self.first_delay)
        for piece in deltas(reply):
            await asyncio.sleep(self.delay)
            self.streamed += 1
            yield LLMResponse(content=piece, role=ChatRole.ASSISTANT)

    async def cancel_current_generation(self) -> None:
        pass


class ToneTTS(TTS):  # type: ignore[misc]
    """A tiny second provider: pushes a known 880 Hz tone for every character it reads."""

    def __init__(self) -> None:
        super().__init__(sample_rate=TRACK_RATE, num_channels=1)
        self.texts: list[str] = []
        self.calls = 0
        self._first = False
        self._stop = False

    def reset_first_audio_tracking(self) -> None:
        self._first = False

    async def synthesize(self, text: Any, voice_id: str | None = None, **kw: Any) -> None:
        self.calls += 1
        self._stop = False
        track = self.audio_track
        phase = 0

        async def each() -> AsyncIterator[Any]:
            if isinstance(text, str):
                yield text
            else:
                async for s in text:
                    yield s

        async for item in each():
            if self._stop:
                break
            if not isinstance(item, str) or not item.strip():
                continue
            self.texts.append(item)
            n = round(len(item) * SECONDS_PER_CHAR * TRACK_RATE / 480) * 480
            t = (np.arange(n) + phase) / TRACK_RATE
            phase += n
            pcm = (0.5 * 32767 * np.sin(2 * math.pi * BACKUP_HZ * t)).astype("<i2").tobytes()
            if not self._first:
                self._first = True
                if self._first_audio_callback is not None:
                    await self._first_audio_callback()
            if track is not None and not self._stop:
                await track.add_new_bytes(pcm)

    async def interrupt(self) -> None:
        self._stop = True
        if self.audio_track is not None:
            self.audio_track.interrupt()


class HarnessAgent(Agent):  # type: ignore[misc]
    def __init__(self, greeting: str | None) -> None:
        super().__init__(instructions="You are a test agent.")
        self.greeting = greeting

    async def on_enter(self) -> None:
        if self.greeting:
            await self.session.say(self.greeting)

    async def on_exit(self) -> None:
        pass


async def forget_spare(lmnt: LMNTTTS) -> None:
    """Close the plugin's warm spare: it was opened before a fault was armed (or healed), and
    the server applies faults per connection."""
    pool = lmnt._pool
    take: Any = pool._take_spare
    if "deadline" in inspect.signature(take).parameters:  # the pool bounds the wait for a spare
        spare = await take(asyncio.get_running_loop().time() + 5.0)
    else:
        spare = await take()
    if spare is not None:
        await pool._discard(spare)


class PlannedServer:
    """A local server whose faults can be armed for the next turn and then healed."""

    def __init__(self, server: LocalLMNTServer, lmnt: LMNTTTS) -> None:
        self.server = server
        self.lmnt = lmnt

    async def arm(self, faults: Faults | None = None, api_keys: set[str] | None = None) -> None:
        self.server.faults = faults or Faults()
        self.server.api_keys = api_keys
        await forget_spare(self.lmnt)

    async def heal(self) -> None:
        await self.arm(None, None)


@dataclass
class Heard:
    seconds: float  # audio that left the track
    pitch: float  # dominant frequency of it (0 when nothing)


@dataclass
class TurnResult:
    heard: Heard
    elapsed: float  # user transcript -> agent IDLE, its turn task done, no lock held
    idle: bool
    error: BaseException | None = None
    listening: float | None = None  # user transcript -> agent state back to IDLE


@dataclass
class Harness:
    """One agent session; build with :func:`agent_session`."""

    session: AgentSession
    pipeline: Pipeline
    agent: HarnessAgent
    llm: ScriptedLLM
    tts: Any  # LMNTTTS or FallbackTTS
    lmnt: LMNTTTS
    backup: ToneTTS | None
    server: PlannedServer
    track: Any
    drain: Drain
    errors: list[str] = field(default_factory=list)  # "error" events the pipeline saw
    idle_at: float | None = None  # see wait_ready
    start_error: BaseException | None = None
    start_seconds: float = 0.0

    @property
    def orchestrator(self) -> Any:
        return self.pipeline.orchestrator

    @property
    def state(self) -> str:
        return str(self.session.agent_state.value)

    def mark(self) -> int:
        return len(self.drain.frames)

    def heard_since(self, mark: int) -> Heard:
        pcm = b"".join(self.drain.frames[mark:])
        seconds = len(pcm) / 2 / TRACK_RATE
        return Heard(seconds, estimate_pitch(pcm, TRACK_RATE) if seconds > 0.05 else 0.0)

    def locks_held(self) -> list[str]:
        held = []
        cg = self.orchestrator.content_generation
        if cg is not None and cg.llm_lock.locked():
            held.append("llm_lock")
        sg = self.orchestrator.speech_generation
        if sg is not None and sg.tts_lock.locked():
            held.append("tts_lock")
        return held

    async def wait_ready(
        self, timeout: float, states: tuple[str, ...] = ("idle",), since: float | None = None
    ) -> bool:
        """Until the agent is IDLE (after a barge-in: LISTENING, the user is talking), its turn
        task finished and no framework lock is held.  With ``since``, also notes when the agent
        state first came back to IDLE after leaving it (``self.idle_at``)."""
        deadline = time.monotonic() + timeout
        left = False
        self.idle_at = None
        while time.monotonic() < deadline:
            if since is not None and self.idle_at is None:
                if self.state != "idle":
                    left = True
                elif left:
                    self.idle_at = time.monotonic() - since
            task = self.orchestrator._current_generation_task
            if self.state in states and (task is None or task.done()) and not self.locks_held():
                if since is not None and self.idle_at is None:
                    self.idle_at = time.monotonic() - since
                return True
            await asyncio.sleep(0.002)
        return False

    async def user_turn(self, text: str, reply: str, *, timeout: float = 12.0) -> TurnResult:
        """The user says ``text``; the LLM streams ``reply``; waits until the agent is ready."""
        self.llm.replies.append(reply)
        mark = self.mark()
        t0 = time.monotonic()
        await self.orchestrator._process_final_transcript(text)
        idle = await self.wait_ready(timeout, since=t0)
        elapsed = time.monotonic() - t0
        await asyncio.sleep(0.03)  # the drain picks up the last frames
        return TurnResult(self.heard_since(mark), elapsed, idle, None, self.idle_at)

    async def say(self, text: str, *, timeout: float = 12.0) -> TurnResult:
        mark = self.mark()
        t0 = time.monotonic()
        error: BaseException | None = None
        try:
            async with asyncio.timeout(timeout):
                await self.session.say(text)
        except Exception as exc:
            error = exc
        idle = await self.wait_ready(timeout)
        await asyncio.sleep(0.03)
        return TurnResult(self.heard_since(mark), time.monotonic() - t0, idle, error)

    def last_assistant(self) -> Any:
        for msg in reversed(self.agent.chat_context.messages()):
            if msg.role == ChatRole.ASSISTANT:
                return msg
        return None

    def last_assistant_text(self) -> str:
        msg = self.last_assistant()
        if msg is None:
            return ""
        content = msg.content
        return content if isinstance(content, str) else " ".join(map(str, content))


def expected_seconds(text: str) -> float:
    """What the tone server makes of ``text`` once the chunker has cut it into sentences.

    The chunker strips the spaces between sentences and the plugin puts one back, so the
    audio is the text's length with runs of whitespace counted once.
    """
    return len(re.sub(r"\s+", " ", text.strip())) * SECONDS_PER_CHAR


def lmnt_tasks() -> list[str]:
    return sorted(
        t.get_name()
        for t in asyncio.all_tasks()
        if t.get_name().startswith("lmnt-") and not t.done()
    )


@contextlib.asynccontextmanager
async def agent_session(
    *,
    greeting: str | None = None,
    fallback: bool = False,
    faults: Faults | None = None,
    api_keys: set[str] | None = None,
    lmnt_options: dict[str, Any] | None = None,
    backup_first: bool = False,
    llm_delay: float = 0.002,
    start: bool = True,
    time_limit: float = 30.0,
    engine: Any = None,
    realtime: bool = False,
    llm: ScriptedLLM | None = None,
    server_config: Any = None,
    pipeline_options: dict[str, Any] | None = None,
) -> AsyncIterator[Harness]:
    """Start a server, an agent session around it, and tear everything down afterwards.

    ``faults``/``api_keys`` are in force from the start (e.g. for greeting failures); use
    ``harness.server.arm()``/``heal()`` to change them between turns.  ``engine``: the server's
    engine (default the 440 Hz tone); ``realtime``: the track plays at its real-time pace (as a
    room does) instead of as fast as audio is ready; ``pipeline_options``: more ``Pipeline``
    arguments (``text_chunking=False``).
    """
    extra: dict[str, Any] = {} if server_config is None else {"config": server_config}
    server = await start_local_server(
        engine=engine if engine is not None else LMNT_TONE,
        faults=faults,
        api_keys=api_keys,
        **extra,
    )
    opts: dict[str, Any] = {
        "api_key": KEY,
        "ws_url": server.ws_url,
        "connect_timeout": 1.0,
        "receive_timeout": 1.0,
        "retry_backoff": 0.02,
    }
    opts.update(lmnt_options or {})
    lmnt = LMNTTTS(**opts)
    backup = ToneTTS() if fallback else None
    tts: Any = lmnt
    if backup is not None:
        providers: Sequence[TTS] = [backup, lmnt] if backup_first else [lmnt, backup]
        tts = FallbackTTS(list(providers), temporary_disable_sec=0.3)
    llm = llm if llm is not None else ScriptedLLM(delay=llm_delay)
    pipeline = Pipeline(llm=llm, tts=tts, **(pipeline_options or {}))
    loop = asyncio.get_running_loop()
    track = make_track(realtime=realtime)
    pipeline._set_loop_and_audio_track(loop, track)  # what JobContext.connect() does
    agent = HarnessAgent(greeting)
    session = AgentSession(agent=agent, pipeline=pipeline)
    drain = Drain(track)
    planned = PlannedServer(server, lmnt)
    h = Harness(session, pipeline, agent, llm, tts, lmnt, backup, planned, track, drain)
    pipeline.on("error", lambda e: h.errors.append(str(e)))
    try:
        async with asyncio.timeout(time_limit):
            if start:
                t0 = time.monotonic()
                try:
                    await session.start()
                except Exception as exc:
                    h.start_error = exc
                h.start_seconds = time.monotonic() - t0
            yield h
    finally:
        # Bounded, so a scenario that failed (possibly leaving the framework stuck) reports its
        # own assertion instead of hanging in teardown.
        for step in (session.close(), tts.aclose(), drain.stop(), server.stop()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(step, 5)


async def assert_clean_exit(h: Harness) -> None:
    """After close: no plugin task, no open connection."""
    await asyncio.wait_for(h.session.close(), 5)
    await h.tts.aclose()
    async with asyncio.timeout(3):
        while lmnt_tasks():
            await asyncio.sleep(0.01)
    assert h.lmnt._pool.open_connections == 0


__all__ = [
    "BACKUP_HZ",
    "KEY",
    "LMNT_TONE",
    "Harness",
    "ScriptedLLM",
    "ToneTTS",
    "TurnResult",
    "agent_session",
    "assert_clean_exit",
    "deltas",
    "expected_seconds",
    "lmnt_tasks",
    "long_reply",
]
