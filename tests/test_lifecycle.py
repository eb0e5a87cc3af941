"""Connection lifecycle under the framework's real calls (issue 10 items 2, 8, 9, 10).

Each test reproduces what a real agent does (``prewarm`` at session start, ``aclose`` on a
hang-up, a warm spare the server drops while idle, ``change_pipeline`` with the same instance)
against real sockets on loopback: the package's local server with its fault injection, or a
"black hole" TCP listener that accepts and never answers (a server that is up but stuck).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from videosdk.agents import Agent, AgentSession, ChatRole, LLMResponse, Pipeline
from videosdk.agents.llm.llm import LLM
from videosdk.agents.metrics import metrics_collector
from videosdk.agents.metrics.traces_flow import TracesFlowManager
from videosdk.agents.room.output_stream import CustomAudioStreamTrack
from videosdk.agents.speech_generation import SpeechGeneration

from lmnt_local.server import Faults, LocalLMNTServer
from videosdk.plugins.lmnt import LMNTTTS, LMNTAuthError, LMNTError, LMNTTimeoutError
from videosdk.plugins.lmnt.testing import TrackRecorder, drain_track

from audio_helpers import estimate_pitch, sine_s16
from track_helpers import make_track, speak

pytestmark = pytest.mark.timeout(60)

KEY = "lifecycle-test-key-0001"


@contextlib.asynccontextmanager
async def black_hole() -> AsyncIterator[str]:
    """A ws:// URL whose TCP connect succeeds and whose upgrade is never answered."""
    held: list[asyncio.StreamWriter] = []

    async def accept(_reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"ws://127.0.0.1:{port}/v1/ai/speech/stream"
    finally:
        for w in held:
            w.close()
        server.close()
        await server.wait_closed()


# -- item 8: prewarm() overlapped by aclose() ---------------------------------------------------


async def test_prewarm_never_raises_when_aclose_overlaps_it() -> None:
    """A hang-up during session start: prewarm() is documented never to raise."""
    async with black_hole() as url:
        tts = LMNTTTS(api_key=KEY, ws_url=url, connect_timeout=5)
        warming = asyncio.create_task(tts.prewarm())
        await asyncio.sleep(0.2)  # the spare is mid-handshake
        t0 = time.monotonic()
        await tts.aclose()
        await asyncio.wait_for(warming, 3)  # returns normally: no CancelledError
        assert time.monotonic() - t0 < 2.0
        assert warming.exception() is None


async def test_prewarm_still_propagates_its_own_cancellation() -> None:
    async with black_hole() as url:
        tts = LMNTTTS(api_key=KEY, ws_url=url, connect_timeout=5)
        warming = asyncio.create_task(tts.prewarm())
        await asyncio.sleep(0.2)
        warming.cancel()
        with pytest.raises(asyncio.CancelledError):
            await warming
        await tts.aclose()


async def test_session_start_survives_a_hang_up_during_prewarm() -> None:
    """The framework awaits prewarm() in Pipeline.start() and catches only Exception: a
    CancelledError from it made session.start() fail when the call hung up meanwhile."""
    async with black_hole() as url:
        tts = LMNTTTS(api_key=KEY, ws_url=url, connect_timeout=5)
        stack = Stack(tts)
        stack.recorder.start()
        starting = asyncio.create_task(stack.session.start())
        await asyncio.sleep(0.3)  # Pipeline.start() is inside tts.prewarm()
        await tts.aclose()  # what the session's cleanup does to its TTS on a hang-up
        await asyncio.wait_for(starting, 5)  # before the fix: CancelledError
        await stack.__aexit__(None, None, None)


# -- item 9: one connect_timeout bounds a turn, spare or not -----------------------------------


async def test_a_turn_waiting_for_a_connecting_spare_fails_within_connect_timeout() -> None:
    connect_timeout = 2.0
    async with black_hole() as url:
        tts = LMNTTTS(api_key=KEY, ws_url=url, connect_timeout=connect_timeout, max_retries=2)
        tts.PREWARM_WAIT = 0.2  # the session starts while the spare is still connecting
        tts.audio_track = make_track()
        try:
            await tts.prewarm()
            t0 = time.monotonic()
            with pytest.raises(LMNTTimeoutError, match="within 2 s"):
                await tts.synthesize("Hello there.")
            elapsed = time.monotonic() - t0
        finally:
            await tts.aclose()
    # Before the fix: the rest of the spare's budget, then a fresh full one (~3.8 s here).
    assert elapsed < connect_timeout + 0.8, elapsed


# -- item 10: an error frame on the idle spare ---------------------------------------------------


def _idle_notice(version: str, message: str, error_type: str) -> Faults:
    """The server says something about the idle connection, then closes it."""
    if version == "1.0":
        frame = json.dumps({"error": message})
    else:
        frame = json.dumps({"type": "error", "error": {"type": error_type, "message": message}})
    return Faults(script=(frame,), script_after="init", script_end="close")


@pytest.mark.parametrize("version", ["1.0", "1.2"])
async def test_an_error_frame_on_the_idle_spare_is_replaced_transparently(
    version: str, lmnt_server: LocalLMNTServer
) -> None:
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url, protocol_version=version)
    errors: list[str] = []
    tts.on("error", lambda msg: errors.append(str(msg)))
    try:
        lmnt_server.faults = _idle_notice(version, "idle timeout, closing", "timeout_error")
        await tts.prewarm()
        await asyncio.sleep(0.3)  # the notice and the close reach the spare
        lmnt_server.faults = Faults()
        pcm = await speak(tts, "Hello there.")
    finally:
        await tts.aclose()
    assert len(pcm) > 0.3 * 24000 * 2  # the turn was spoken
    assert errors == []
    assert [s.text for s in lmnt_server.sessions if s.texts] == ["Hello there. "]


@pytest.mark.parametrize("version", ["1.0", "1.2"])
async def test_an_auth_rejection_on_the_idle_spare_still_fails_the_turn(
    version: str, lmnt_server: LocalLMNTServer
) -> None:
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url, protocol_version=version)
    tts.audio_track = make_track()
    try:
        lmnt_server.faults = _idle_notice(version, "Invalid API key", "authentication_error")
        await tts.prewarm()
        await asyncio.sleep(0.3)
        lmnt_server.faults = Faults()
        t0 = time.monotonic()
        with pytest.raises(LMNTAuthError):
            await tts.synthesize("Hello there.")
        assert time.monotonic() - t0 < 1.0
    finally:
        await tts.aclose()
    assert not [s for s in lmnt_server.sessions if s.texts]  # no text went anywhere


# -- the framework's real AgentSession + Pipeline ------------------------------------------------


class QuietAgent(Agent):  # type: ignore[misc]
    """No greeting: each test says what it needs."""

    def __init__(self) -> None:
        super().__init__(instructions="Test agent.")

    async def on_enter(self) -> None:
        pass

    async def on_exit(self) -> None:
        pass


class Stack:
    """A headless agent: real Pipeline, AgentSession and CustomAudioStreamTrack, drained fast."""

    def __init__(self, tts: LMNTTTS) -> None:
        self.tts = tts
        loop = asyncio.get_running_loop()
        self.pipeline = Pipeline(llm=ScriptedLLM(["Fine, thanks."]), tts=tts)
        self.track = CustomAudioStreamTrack(loop)
        self.pipeline._set_loop_and_audio_track(loop, self.track)  # what JobContext.connect does
        self.session = AgentSession(agent=QuietAgent(), pipeline=self.pipeline)
        self.recorder = TrackRecorder(self.track)
        self.errors: list[str] = []
        tts.on("error", lambda msg: self.errors.append(str(msg)))
        self._saved_traces = metrics_collector.traces_flow_manager

    async def __aenter__(self) -> Stack:
        self.recorder.start()
        await asyncio.wait_for(self.session.start(), 10)
        # A room job sets this up; change_pipeline() reports to it unconditionally.
        self._saved_traces = metrics_collector.traces_flow_manager
        if self._saved_traces is None:
            metrics_collector.set_traces_flow_manager(TracesFlowManager(room_id="headless-test"))
        return self

    async def __aexit__(self, *exc: object) -> None:
        # Headless: without a room the stand-in would make session.close() wait for a trace
        # export that never comes.
        metrics_collector.traces_flow_manager = self._saved_traces
        await self.recorder.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.session.close(), 5)
        await self.tts.aclose()

    async def say(self, text: str) -> float:
        """Speak through ``session.say()`` and return the seconds of audio the track played."""
        before = len(self.recorder.pcm)
        handle = self.session.say(text)
        if asyncio.iscoroutine(handle):
            handle = await handle
        await asyncio.wait_for(handle, 10)
        return (len(self.recorder.pcm) - before) / 2 / self.track.sample_rate


class ScriptedLLM(LLM):  # type: ignore[misc]
    def __init__(self, replies: list[str]) -> None:
        super().__init__()
        self._replies = list(replies)
        self.model = "scripted"

    async def chat(self, messages: Any, tools: Any = None, **kwargs: Any) -> AsyncIterator[Any]:
        reply = self._replies.pop(0) if self._replies else "Nothing more."
        for token in reply.split(" "):
            yield LLMResponse(content=token + " ", role=ChatRole.ASSISTANT)

    async def cancel_current_generation(self) -> None:
        pass


# -- item 2: change_pipeline(tts=the same instance) -------------------------------------------


async def test_change_pipeline_with_the_same_tts_instance_keeps_speaking(
    lmnt_server: LocalLMNTServer,
) -> None:
    """The framework aclose()s every component, then re-attaches what it is given."""
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url)
    async with Stack(tts) as stack:
        assert await stack.say("Before the change.") > 0.5
        await asyncio.wait_for(stack.pipeline.change_pipeline(tts=tts), 10)
        assert stack.pipeline.tts is tts
        seconds = await stack.say("After the change.")
        assert stack.errors == []
    assert seconds > 0.5, seconds  # the tone engine: 50 ms per character
    assert [s.text for s in lmnt_server.sessions if s.texts] == [
        "Before the change. ",  # the space after a sentence says it is complete
        "After the change. ",
    ]


async def test_a_closed_instance_reports_every_failure(lmnt_server: LocalLMNTServer) -> None:
    """Used again after aclose(), a failure is emitted as well as raised."""
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url, max_retries=0)
    tts.audio_track = make_track()
    errors: list[str] = []
    tts.on("error", lambda msg: errors.append(str(msg)))
    await tts.aclose()
    lmnt_server.faults = Faults(error_before_audio="engine on fire")
    try:
        with pytest.raises(LMNTError, match="engine on fire"):
            await tts.synthesize("Hello.")
        with pytest.raises(ValueError, match="temperature"):
            await tts.synthesize("Hello.", temperature=9)
    finally:
        await tts.aclose()
    assert len(errors) == 2 and "engine on fire" in errors[0] and "temperature" in errors[1]


# -- item 11: no input-format declaration left behind on the shared track -----------------------


async def test_another_producers_input_format_survives_an_lmnt_turn(
    lmnt_server: LocalLMNTServer,
) -> None:
    """A producer (a realtime model, another TTS) declared 16 kHz once on the agent's track and
    keeps pushing 16 kHz audio; an LMNT turn in between must not leave 24 kHz declared."""
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url)
    async with Stack(tts) as stack:
        stack.track.set_input_format(16000, 1)  # the other producer, once
        await stack.say("Hello there.")
        lmnt_pcm = bytes(stack.recorder.pcm)
        before = len(stack.recorder.pcm)
        await stack.track.add_new_bytes(sine_s16(440.0, 1.0, 16000))  # its audio, as declared
        for _ in range(300):
            if not stack.recorder.queued():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.05)
        other = bytes(stack.recorder.pcm[before:])
    assert abs(estimate_pitch(lmnt_pcm, 24000) - 440) / 440 < 0.01  # LMNT's own audio is right
    # Before the fix: 0.66 s at 660 Hz (the 16 kHz audio read as 24 kHz).
    assert len(other) / 2 / 24000 == pytest.approx(1.0, abs=0.03)
    assert abs(estimate_pitch(other, 24000) - 440) / 440 < 0.01


async def test_an_undeclared_track_stays_undeclared(lmnt_server: LocalLMNTServer) -> None:
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url)
    async with Stack(tts) as stack:
        assert await stack.say("Hello there.") > 0.5
        assert stack.track._input_sample_rate is None


# -- item 12: a new turn does not end the previous turn's word announcements -------------------


@pytest.mark.parametrize("version", ["1.0", "1.2"])
async def test_words_of_a_turn_still_playing_survive_the_next_turn(
    version: str, lmnt_server: LocalLMNTServer
) -> None:
    """A reply's audio is still queued when the next say() starts: all its words are heard, so
    all must be announced (before the fix: 7 of 8 lost)."""
    reply = "One two three four five six seven eight."
    follow = "Nine ten."
    tts = LMNTTTS(
        api_key=KEY, ws_url=lmnt_server.ws_url, protocol_version=version, word_timestamps=True
    )
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    sg = SpeechGeneration(tts=tts)
    sg.set_audio_track(track)
    tts.loop = asyncio.get_running_loop()
    events: list[tuple[str, str]] = []
    tts.on("word_spoken", lambda d: events.append((d["word"], d["cumulative_text"])))
    recorder = TrackRecorder(track)
    try:
        await asyncio.wait_for(sg.synthesize(reply), 10)  # all of it queued, none played yet
        await asyncio.wait_for(sg.synthesize(follow), 10)  # the next turn starts at once
        recorder.start()
        n = len((reply + " " + follow).split())
        for _ in range(500):
            if len(events) >= n and not recorder.queued():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)  # nothing more may come
    finally:
        await recorder.stop()
        await tts.aclose()
    first = [w for w, c in events if c.startswith("One")]
    second = [w for w, c in events if c.startswith("Nine")]
    assert first == reply.split(), events
    assert second == follow.split(), events
    assert (first[-1], reply) in events  # cumulative text of the reply is whole


async def test_interrupt_still_ends_every_turns_announcements(
    lmnt_server: LocalLMNTServer,
) -> None:
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url, word_timestamps=True)
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    tts.audio_track = track
    events: list[str] = []
    tts.on("word_spoken", lambda d: events.append(d["word"]))
    try:
        await tts.synthesize("One two three four.")
        await tts.synthesize("Five six seven eight.")
        await tts.interrupt()  # nothing played yet: nothing may be announced
        recorder = TrackRecorder(track).start()
        await asyncio.sleep(0.3)
        await recorder.stop()
    finally:
        await tts.aclose()
    assert events == []
    assert not tts._announcers


async def test_words_cleared_from_the_track_are_not_announced_later(
    lmnt_server: LocalLMNTServer,
) -> None:
    """Some framework paths clear the track without interrupt() (a handle's interrupt inside
    SpeechGeneration): the cleared turn's words must not be announced over the next turn."""
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url, word_timestamps=True)
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    track.interrupt_fade_duration = 0.0  # a plain clear, no faded tail
    tts.audio_track = track
    events: list[str] = []
    tts.on("word_spoken", lambda d: events.append(d["word"]))
    recorder = TrackRecorder(track)
    try:
        await tts.synthesize("One two three four.")
        track.interrupt()  # the track only: the plugin is not told
        await tts.synthesize("Five six.")
        recorder.start()
        for _ in range(300):
            if len(events) >= 2 and not recorder.queued():
                break
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
    finally:
        await recorder.stop()
        await tts.aclose()
    assert events == ["Five", "six."]


async def test_a_superseded_turn_does_not_restore_a_format_under_the_next_turn(
    lmnt_server: LocalLMNTServer,
) -> None:
    """A new synthesize() supersedes a running one: the old turn ending must not put the
    foreign 16 kHz declaration back while the new turn is still pushing 24 kHz audio."""
    lmnt_server.faults = Faults(pace=1.0)  # the first turn is still running when we supersede
    tts = LMNTTTS(api_key=KEY, ws_url=lmnt_server.ws_url, warm_connection=False)
    track = CustomAudioStreamTrack(asyncio.get_running_loop())
    track.set_input_format(16000, 1)  # another producer, once
    tts.audio_track = track
    try:
        first = asyncio.create_task(tts.synthesize("A long first reply that keeps going on."))
        for _ in range(300):
            if track._cumulative_input_samples:
                break
            await asyncio.sleep(0.01)
        lmnt_server.faults = Faults(processing_delay=0.3)  # the old turn ends first
        second = asyncio.create_task(tts.synthesize("Second reply."))
        await asyncio.wait_for(first, 10)
        mark = track._cumulative_input_samples
        await asyncio.wait_for(second, 10)
        assert track._input_sample_rate == 16000  # put back once our last turn ended
    finally:
        await tts.aclose()
    played = await drain_track(track, idle=0.2)
    tail = played[-(track._cumulative_input_samples - mark) * 2 :]
    assert len(tail) / 2 / 24000 == pytest.approx(0.65, abs=0.05)  # 13 characters
    assert abs(estimate_pitch(tail, 24000) - 440) / 440 < 0.01  # not read as 16 kHz
