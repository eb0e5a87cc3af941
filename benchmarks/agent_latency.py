"""First audio of an agent's reply, in the real agent stack, per engine and client (issue 22).

Run from the repository root::

    python benchmarks/agent_latency.py [--turns 10] [--engines neural espeak] [--agents 20]
                                       [--deltas words|openai]

What runs, in one process and one run: the framework's ``Agent`` + ``AgentSession`` +
``Pipeline`` (default text filter and sentence chunker) with a scripted LLM that streams a
token every 25 ms (40 tokens/s) after 0.3 s of "thinking", the real ``CustomAudioStreamTrack``
drained as fast as audio is ready, and a TTS plugin talking over loopback to the local LMNT
server, which runs in a separate process with the named engine.  Clients: this package in the
default ``Pipeline``, this package in ``Pipeline(**pipeline_options())`` (no framework text
filter or chunker: the server reads and cuts the LLM's deltas itself), and the official 1.0.30
release (imported from its wheel, unmodified).  Replies of 1 and of 3 sentences alternate, so
each row's turns see the same machine.  ``--deltas words``: each delta a word with its trailing
space ("that. "); ``--deltas openai``: as OpenAI's models stream them, a leading space and
punctuation alone (" that", ".").

Clocks (monotonic, one process): ``first token`` is when the LLM yields its first delta;
``sentence done`` is when it yields the delta that completes the first sentence; ``first audio``
is the first ``add_new_bytes`` on the track.  The table gives ``first audio - first token``
(what a user hears as the reply's delay beyond the LLM's own) and ``first audio - sentence
done`` (what the TTS path adds once the first sentence exists).  ``engine`` is the engine's own
time to the first chunk of the first sentence (lead 0), timed in this process with the
server idle: the part of the rest that is rendering, not plumbing.

Then ``--agents`` agent sessions on the neural engine, their tracks played in real time as in
a room, each take two 3-sentence replies at once: a reply is intact when it raised no error,
the agent came back to IDLE, and the audio heard is at least 90 % of what the same reply gives
when spoken alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import platform
import re
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as common

common.ensure_package()

TOKEN_SECONDS = 0.025  # 40 tokens/s
FIRST_TOKEN = 0.3
ONE = "Sure, I can help you with that."
THREE = (
    "Sure, I can help you with that. Your order left our warehouse this morning. "
    "It should arrive on Friday before noon."
)
OURS, OPTS, UPSTREAM = "ours", "ours, pipeline_options()", "1.0.30"
CLIENTS = (OURS, OPTS, UPSTREAM)
DELTAS = "words"


def _deltas(text: str) -> list[str]:
    """Token-sized pieces as an LLM streams them: words with their trailing space, a longer
    word now and then in two; or (``--deltas openai``) words with their leading space and
    punctuation alone."""
    if DELTAS == "openai":
        return re.findall(r"\s?\w+|\s?[^\w\s]", text)
    out: list[str] = []
    for i, word in enumerate(re.findall(r"\S+\s*", text)):
        if i % 5 == 3 and len(word) > 5:
            out.extend((word[:3], word[3:]))
        else:
            out.append(word)
    return out


@dataclass
class TurnTimes:
    first_token: float = 0.0
    sentence_done: float = 0.0


@dataclass
class Row:
    engine: str
    client: str
    sentences: int
    from_token: list[float] = field(default_factory=list)
    from_sentence: list[float] = field(default_factory=list)
    failed: int = 0


def _framework() -> dict[str, Any]:
    from videosdk.agents import Agent, AgentSession, ChatRole, LLMResponse, Pipeline
    from videosdk.agents.llm.llm import LLM
    from videosdk.agents.room.output_stream import CustomAudioStreamTrack

    class ScriptedLLM(LLM):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.model = "scripted"
            self.replies: list[str] = []
            self.times = TurnTimes()

        async def chat(self, messages: Any, tools: Any = None, **kw: Any) -> AsyncIterator[Any]:
            reply = self.replies.pop(0) if self.replies else ONE
            self.times = times = TurnTimes()
            await asyncio.sleep(FIRST_TOKEN)
            done = False
            for i, piece in enumerate(_deltas(reply)):
                if i:
                    await asyncio.sleep(TOKEN_SECONDS)
                now = time.monotonic()
                if i == 0:
                    times.first_token = now
                if not done and re.search(r"[.!?]\s*$", piece):
                    times.sentence_done, done = now, True
                yield LLMResponse(content=piece, role=ChatRole.ASSISTANT)

        async def cancel_current_generation(self) -> None:
            pass

    class TimedTrack(CustomAudioStreamTrack):  # type: ignore[misc]
        first_push: float | None = None
        pushed = 0

        async def add_new_bytes(self, audio_data: bytes) -> None:
            if self.first_push is None and audio_data:
                self.first_push = time.monotonic()
            self.pushed += len(audio_data)
            await super().add_new_bytes(audio_data)

    class BenchAgent(Agent):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(instructions="benchmark")

        async def on_enter(self) -> None:
            pass

        async def on_exit(self) -> None:
            pass

    return {
        "LLM": ScriptedLLM,
        "Track": TimedTrack,
        "Agent": BenchAgent,
        "AgentSession": AgentSession,
        "Pipeline": Pipeline,
    }


class AgentRig:
    """One agent session around a TTS, its track drained as fast as audio is ready."""

    def __init__(
        self,
        fw: dict[str, Any],
        tts: Any,
        *,
        realtime: bool = False,
        options: dict[str, Any] | None = None,
    ) -> None:
        self.fw = fw
        self.tts = tts
        self.llm = fw["LLM"]()
        self.pipeline = fw["Pipeline"](llm=self.llm, tts=tts, **(options or {}))
        self.track = fw["Track"](asyncio.get_running_loop())
        if not realtime:
            self.track._start = 0.0  # recv() never sleeps
        self.track._speaking_grace_period = 0.0
        self.pipeline._set_loop_and_audio_track(asyncio.get_running_loop(), self.track)
        self.session = fw["AgentSession"](agent=fw["Agent"](), pipeline=self.pipeline)
        self.errors: list[str] = []
        self.pipeline.on("error", lambda e: self.errors.append(str(e)))
        self._drain: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.session.start()
        self._drain = asyncio.get_running_loop().create_task(self._pull())

    async def _pull(self) -> None:
        for _ in range(common.MAX_CHUNKS):
            await self.track.recv()
            await asyncio.sleep(0 if self.track.frame_buffer else 0.002)

    def _ready(self) -> bool:
        orch = self.pipeline.orchestrator
        task = orch._current_generation_task
        sg = orch.speech_generation
        cg = orch.content_generation
        busy = (sg is not None and sg.tts_lock.locked()) or (
            cg is not None and cg.llm_lock.locked()
        )
        return (
            self.session.agent_state.value == "idle" and (task is None or task.done()) and not busy
        )

    async def turn(
        self, reply: str, timeout: float = 30.0
    ) -> tuple[TurnTimes, float | None, float, bool]:
        """(LLM times, first audio, seconds of audio pushed, ended cleanly)."""
        self.llm.replies.append(reply)
        self.track.first_push = None
        pushed = self.track.pushed
        errors = len(self.errors)
        await self.pipeline.orchestrator._process_final_transcript("hello")
        deadline = time.monotonic() + timeout
        await asyncio.sleep(FIRST_TOKEN)
        while time.monotonic() < deadline and not self._ready():
            await asyncio.sleep(0.005)
        ok = self._ready() and len(self.errors) == errors
        seconds = (self.track.pushed - pushed) / 2 / 24000
        return self.llm.times, self.track.first_push, seconds, ok

    async def aclose(self) -> None:
        for step in (self.session.close(), self.tts.aclose()):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(step, 5)
        if self._drain is not None:
            self._drain.cancel()
            with contextlib.suppress(BaseException):
                await self._drain


def _make_tts(client: str, url: str, upstream: Any) -> Any:
    if client == UPSTREAM:
        return upstream.LMNTTTS(api_key=common.API_KEY, ws_url=url)
    from videosdk.plugins.lmnt import LMNTTTS

    return LMNTTTS(api_key=common.API_KEY, ws_url=url)


async def _engine_time(name: str, turns: int) -> common.Summary:
    """The engine's own time to the first chunk of the first sentence (lead 0)."""
    from lmnt_local.server.engines import make_engine

    engine: Any = make_engine(name)
    if hasattr(engine, "load"):
        engine.load()
    times = []
    for _ in range(turns + 1):
        t0 = time.perf_counter()
        async for _chunk in engine.synthesize(ONE, voice="ava", language="en", sample_rate=24000):
            times.append(time.perf_counter() - t0)
            break
    return common.Summary.of(times[1:])  # the first call warms caches


async def _run_engine(
    fw: dict[str, Any], url: str, engine: str, upstream: Any, turns: int
) -> tuple[list[Row], dict[int, float]]:
    from videosdk.plugins.lmnt import pipeline_options

    rows = {(c, n): Row(engine, c, n) for c in CLIENTS for n in (1, 3)}
    heard: dict[int, list[float]] = {1: [], 3: []}
    rigs = {
        c: AgentRig(
            fw, _make_tts(c, url, upstream), options=pipeline_options() if c == OPTS else None
        )
        for c in CLIENTS
    }
    try:
        for rig in rigs.values():
            await rig.start()
        for i in range(turns * 2):
            n = 1 if i % 2 == 0 else 3
            order = list(CLIENTS) if (i // 2) % 2 == 0 else list(reversed(CLIENTS))
            for client in order:
                times, first, seconds, ok = await rigs[client].turn(ONE if n == 1 else THREE)
                row = rows[(client, n)]
                if not ok or first is None:
                    row.failed += 1
                    continue
                row.from_token.append(first - times.first_token)
                row.from_sentence.append(first - times.sentence_done)
                if client == OURS:
                    heard[n].append(seconds)
    finally:
        for rig in rigs.values():
            await rig.aclose()
    alone = {n: min(v) if v else 0.0 for n, v in heard.items()}
    return list(rows.values()), alone


async def _concurrent(
    fw: dict[str, Any], url: str, agents: int, alone: float
) -> tuple[int, int, list[str]]:
    """(intact replies, replies, what went wrong with the others)."""
    # Played in real time, as in a room: the listener holds what it was given, and a sentence
    # rendered just in time must not be taken for silence.
    rigs = [AgentRig(fw, _make_tts(OURS, url, None), realtime=True) for _ in range(agents)]
    intact = total = 0
    problems: list[str] = []
    try:
        await asyncio.gather(*(r.start() for r in rigs))
        for _ in range(2):
            marks = [len(r.errors) for r in rigs]
            results = await asyncio.gather(*(r.turn(THREE, timeout=60) for r in rigs))
            for rig, mark, (_times, first, seconds, ok) in zip(rigs, marks, results, strict=True):
                total += 1
                if ok and first is not None and seconds >= 0.9 * alone:
                    intact += 1
                elif rig.errors[mark:]:
                    problems.append(rig.errors[mark][:120])
                else:
                    problems.append(f"ok={ok} heard {seconds:.2f} s of {alone:.2f} s")
    finally:
        await asyncio.gather(*(r.aclose() for r in rigs))
    return intact, total, problems


async def main(args: argparse.Namespace) -> None:
    common.quiet_logs()
    upstream = common.load_upstream()
    fw = _framework()
    common.freeze_heap()
    rows: list[Row] = []
    engine_times: dict[str, common.Summary] = {}
    concurrent: tuple[int, int, list[str]] | None = None
    load_before = common.load_note()
    for engine in args.engines:
        spec = common.ServerSpec(engine={"name": engine})
        with common.ServerProcess(spec) as info:
            got, alone = await _run_engine(fw, info.ws_url, engine, upstream, args.turns)
            rows.extend(got)
            if engine == "neural" and args.agents:
                concurrent = await _concurrent(fw, info.ws_url, args.agents, alone[3])
        engine_times[engine] = await _engine_time(engine, min(args.turns, 5))
    print(f"CPU: {platform.processor() or platform.machine()}; {common.cpu_count_note()}")
    print(f"load before: {load_before}; after: {common.load_note()}")
    print(
        f"LLM: first token after {FIRST_TOKEN * 1e3:.0f} ms, then {1 / TOKEN_SECONDS:.0f} "
        f"tokens/s ({args.deltas} deltas); {args.turns} turns per row; first audio on the track"
    )
    table = []
    for r in rows:
        tok = common.Summary.of(r.from_token) if r.from_token else None
        sen = common.Summary.of(r.from_sentence) if r.from_sentence else None
        eng = engine_times.get(r.engine)
        table.append(
            [
                r.engine,
                r.client,
                r.sentences,
                f"{len(r.from_token)}/{len(r.from_token) + r.failed}",
                common.ms(tok.median) if tok else "-",
                common.ms(tok.p95) if tok else "-",
                common.ms(sen.median) if sen else "-",
                common.ms(sen.p95) if sen else "-",
                common.ms(eng.median) if eng else "-",
            ]
        )
    headers = [
        "engine", "client", "sentences", "turns", "from 1st token p50", "p95",
        "from sentence done p50", "p95", "engine 1st chunk p50",
    ]  # fmt: skip
    print(common.table(headers, table))
    by = {(r.engine, r.client, r.sentences): r for r in rows}
    for engine in args.engines:
        for client in CLIENTS:
            one, three = by[(engine, client, 1)], by[(engine, client, 3)]
            if one.from_token and three.from_token:
                gap = (
                    common.Summary.of(three.from_token).median
                    - common.Summary.of(one.from_token).median
                )
                print(f"{engine} / {client}: 3-sentence minus 1-sentence first audio (p50): "
                      f"{gap * 1e3:+.1f} ms (goal: within 20 ms)")  # fmt: skip
    if concurrent is not None:
        print(
            f"{args.agents} concurrent agents on the neural engine, two 3-sentence replies "
            f"each: {concurrent[0]}/{concurrent[1]} intact"
        )
        for problem in sorted(set(concurrent[2]))[:8]:
            print(f"  {concurrent[2].count(problem)} x {problem}")


def _args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10, help="turns per row (default 10)")
    parser.add_argument("--engines", nargs="+", default=["neural", "espeak"])
    parser.add_argument("--agents", type=int, default=20, help="concurrent agents (0: skip)")
    parser.add_argument("--deltas", choices=["words", "openai"], default="words")
    return parser.parse_args()


if __name__ == "__main__":
    ARGS = _args()
    DELTAS = ARGS.deltas
    asyncio.run(main(ARGS))
