"""Issue 14: three replicas behind Debian's HAProxy, with the shipped ``deploy/haproxy.cfg``.

Real processes on loopback: three replicas (``replica_server.py``: the production serve loop,
audio paced at real time so a turn is still streaming when something happens to it), one
``haproxy -f deploy/haproxy.cfg`` configured only through the environment variables the file
documents, and ``LMNTTTS`` pointed at HAProxy with the framework's real audio track.  Which
replica served what is read from each replica's own ``/metrics``.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import io
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from videosdk.agents.room.output_stream import CustomAudioStreamTrack

from lmnt_local.server import ToneEngine
from lmnt_local.server.text.frontend import Spoken, TextFrontEnd
from videosdk.plugins.lmnt import LMNTTTS, LMNTConnectionError, LMNTError

from audio_helpers import active_span
from track_helpers import TRACK_RATE, free_port, make_track

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "deploy" / "haproxy.cfg"
REPLICA = Path(__file__).resolve().parent / "replica_server.py"
HAPROXY = shutil.which("haproxy") or next(
    (p for p in ("/usr/sbin/haproxy", "/usr/local/sbin/haproxy") if os.access(p, os.X_OK)), None
)
KEY = "sk-haproxy-test-0123456789"
TONE = ToneEngine()
FRONT = TextFrontEnd(TONE)  # what each replica's text front-end hands its engine
LOG = "videosdk.plugins.lmnt"

pytestmark = pytest.mark.skipif(
    HAPROXY is None,
    reason="HAProxy is not installed (Debian: apt-get install haproxy; .ci/run installs it)",
)


class RecordingTrack(CustomAudioStreamTrack):  # type: ignore[misc]
    """The framework's real track, keeping what the plugin pushed to it."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(loop)
        self.pushes: list[bytes] = []

    async def add_new_bytes(self, audio_data: bytes) -> None:
        self.pushes.append(bytes(audio_data))
        await super().add_new_bytes(audio_data)


@dataclass
class Replica:
    name: str
    port: int
    proc: subprocess.Popen[str]

    def metric(self, name: str) -> float:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=2) as resp:
            for line in resp.read().decode().splitlines():
                if line.startswith(name + " "):
                    return float(line.split()[-1])
        return 0.0


@dataclass
class Cluster:
    ws_url: str
    stats_url: str
    replicas: list[Replica]
    haproxy: subprocess.Popen[str]

    def states(self) -> dict[str, str]:
        """HAProxy's view of each replica: UP, DOWN, ... (from its CSV stats)."""
        with urllib.request.urlopen(self.stats_url + ";csv", timeout=2) as resp:
            text = resp.read().decode().lstrip("# ")
        return {
            row["svname"]: row["status"]
            for row in csv.DictReader(io.StringIO(text))
            if row["pxname"] == "lmnt_replicas" and row["svname"].startswith("lmnt")
        }

    def wait_states(self, want: dict[str, str], seconds: float) -> None:
        deadline = time.monotonic() + seconds
        states: dict[str, str] = {}
        while time.monotonic() < deadline:
            if self.haproxy.poll() is not None:
                assert self.haproxy.stderr is not None
                pytest.fail(f"haproxy exited: {self.haproxy.stderr.read()[-2000:]}")
            with contextlib.suppress(OSError):
                states = self.states()
                if all(states.get(k, "").startswith(v) for k, v in want.items()):
                    return
            time.sleep(0.05)
        pytest.fail(f"HAProxy states {states}, wanted {want}")

    def sessions(self) -> dict[str, float]:
        return {
            r.name: r.metric("lmnt_sessions_total") for r in self.replicas if r.proc.poll() is None
        }


def _start_replica(name: str, port: int | None = None) -> Replica:
    port = port or free_port()
    proc = subprocess.Popen(
        [sys.executable, str(REPLICA), "--port", str(port), "--pace", "1"],
        stdout=subprocess.PIPE,
        text=True,
    )
    return Replica(name, port, proc)


def _wait_ready(replica: Replica) -> None:
    assert replica.proc.stdout is not None
    line = replica.proc.stdout.readline()  # bounded: the replica prints or exits
    assert line.strip() == "ready", f"replica {replica.name} did not start"


@pytest.fixture(scope="module")
def _cluster() -> Iterator[Cluster]:
    """Started once for the module (a replica's start is mostly imports: seconds)."""
    assert HAPROXY is not None
    replicas = [_start_replica(f"lmnt{i}") for i in (1, 2, 3)]
    lb_port, stats_port = free_port(), free_port()
    env = {
        **os.environ,
        "LMNT_LB_BIND": f"127.0.0.1:{lb_port}",
        "LMNT_LB_STATS_BIND": f"127.0.0.1:{stats_port}",
        "LMNT_CHECK_INTERVAL": "200ms",
        **{f"LMNT_REPLICA_{i}": f"127.0.0.1:{r.port}" for i, r in enumerate(replicas, 1)},
    }
    haproxy: subprocess.Popen[str] | None = None
    try:
        for r in replicas:
            _wait_ready(r)
        haproxy = subprocess.Popen(
            [HAPROXY, "-db", "-f", str(CONFIG)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        yield Cluster(
            f"ws://127.0.0.1:{lb_port}/v1/ai/speech/stream",
            f"http://127.0.0.1:{stats_port}/stats",
            replicas,  # the same list: replacements made by `cluster` are killed here too
            haproxy,
        )
    finally:
        for proc in [*(r.proc for r in replicas), *([haproxy] if haproxy else [])]:
            if proc.poll() is None:
                proc.kill()
            proc.wait(5)


@pytest.fixture
def cluster(_cluster: Cluster) -> Cluster:
    """The module's cluster with every replica running and UP (a stopped one is replaced)."""
    for i, r in enumerate(_cluster.replicas):
        if r.proc.poll() is not None:
            _cluster.replicas[i] = _start_replica(r.name, r.port)
            _wait_ready(_cluster.replicas[i])
    _cluster.wait_states({r.name: "UP" for r in _cluster.replicas}, 10)
    return _cluster


async def _turn(url: str, text: str, errors: list[tuple[float, str]] | None = None) -> bytes:
    """One turn through HAProxy; returns the PCM pushed to the track."""
    tts = LMNTTTS(
        api_key=KEY,
        ws_url=url,
        connect_timeout=1.0,
        receive_timeout=2.0,
        retry_backoff=0.05,
        warm_connection=False,
    )
    track = make_track(RecordingTrack)
    tts.audio_track = track
    if errors is not None:
        tts.on("error", lambda msg: errors.append((time.monotonic(), str(msg))))
    try:
        async with asyncio.timeout(15):
            await tts.synthesize(text)
    finally:
        await tts.aclose()
    return b"".join(track.pushes)


def _assert_whole_tone(pcm: bytes, text: str) -> None:
    """The whole tone of what the engine was given ("Turn 0." is said "Turn zero.")."""
    said = "".join(p.text for p in FRONT.prepare(text) if isinstance(p, Spoken))
    start, end = active_span(pcm, TRACK_RATE)
    assert abs((end - start) - TONE.duration_of(said)) < 0.03, (end - start, text, said)


def test_metrics_are_not_served_through_the_balancer(cluster: Cluster) -> None:
    """Issue 21 item 8: agents reach the replicas through HAProxy; their /metrics does not."""
    base = "http" + cluster.ws_url.removeprefix("ws").split("/v1/", 1)[0]
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(base + "/metrics", timeout=5)
    assert refused.value.code == 404
    with urllib.request.urlopen(base + "/health_check", timeout=5) as ok:  # the rest is served
        assert ok.status == 200


async def test_turns_spread_over_the_replicas(cluster: Cluster) -> None:
    for i in range(6):
        text = f"Turn {i}."
        _assert_whole_tone(await _turn(cluster.ws_url, text), text)
    sessions = cluster.sessions()
    assert sum(sessions.values()) == 6
    assert all(n >= 1 for n in sessions.values()), sessions


def _serving(cluster: Cluster, seconds: float = 5) -> Replica:
    """The replica with an open session (polled from the replicas' own metrics)."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        busy = [r for r in cluster.replicas if r.metric("lmnt_active_sessions") >= 1]
        if len(busy) == 1:
            return busy[0]
        time.sleep(0.05)
    pytest.fail("no single replica is serving the turn")


async def test_killed_replica_gives_a_typed_error_and_the_next_turn_works(
    cluster: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOG)
    errors: list[tuple[float, str]] = []
    text = "x" * 80  # 4 s of audio at real time
    turn = asyncio.create_task(_turn(cluster.ws_url, text, errors))
    victim = await asyncio.to_thread(_serving, cluster)
    await asyncio.sleep(0.5)  # mid-stream
    victim.proc.kill()
    killed_at = time.monotonic()
    pcm = await asyncio.wait_for(turn, 10)
    # A typed plugin error, quickly (the TCP close is seen at once), and a partial turn.
    assert errors, "no error event after the replica died"
    assert errors[0][0] - killed_at < 2.5
    raised = [
        r.args[0]
        for r in caplog.records
        if r.msg.startswith("LMNT: turn ended early") and isinstance(r.args, tuple)
    ]
    assert raised and isinstance(raised[0], LMNTError), caplog.text
    assert isinstance(raised[0], LMNTConnectionError)
    start, end = active_span(pcm, TRACK_RATE)
    assert 0.2 < end - start < TONE.duration_of(text) - 1.0
    # The next turn, started right away (before HAProxy's check has marked the replica down),
    # is served whole by a live replica.
    before = cluster.sessions()
    next_started = time.monotonic()
    _assert_whole_tone(await _turn(cluster.ws_url, "Next."), "Next.")
    next_took = time.monotonic() - next_started
    after = cluster.sessions()
    assert sum(after.values()) == sum(before.values()) + 1
    await asyncio.to_thread(cluster.wait_states, {victim.name: "DOWN"}, 5)
    print(  # the figures docs/deploy.md quotes (pytest -s shows them)
        f"\nfailover: error {errors[0][0] - killed_at:.3f} s after SIGKILL "
        f"({type(raised[0]).__name__}); {end - start:.2f} s of {TONE.duration_of(text):.1f} s "
        f"played; next turn whole in {next_took:.2f} s; HAProxy DOWN "
        f"{time.monotonic() - killed_at:.2f} s after the kill (or earlier)"
    )


async def test_sigterm_drains_in_flight_turns_while_haproxy_routes_elsewhere(
    cluster: Cluster,
) -> None:
    errors: list[tuple[float, str]] = []
    text = "y" * 120  # 6 s of audio at real time
    turn = asyncio.create_task(_turn(cluster.ws_url, text, errors))
    draining = await asyncio.to_thread(_serving, cluster)
    await asyncio.sleep(0.3)
    served_before = draining.metric("lmnt_sessions_total")
    draining.proc.send_signal(signal.SIGTERM)
    signalled = time.monotonic()
    # HAProxy takes it out of rotation (readiness 503) while its turn is still streaming.
    await asyncio.to_thread(cluster.wait_states, {draining.name: "DOWN"}, 2.0)
    down_after = time.monotonic() - signalled
    assert draining.proc.poll() is None, "the replica must still be finishing its turn"
    # New turns meanwhile all go to the other replicas, whole.
    others_before = sum(v for k, v in cluster.sessions().items() if k != draining.name)
    for i in range(3):
        text_i = f"Meanwhile {i}."
        _assert_whole_tone(await _turn(cluster.ws_url, text_i), text_i)
    assert draining.metric("lmnt_sessions_total") == served_before
    others_after = sum(v for k, v in cluster.sessions().items() if k != draining.name)
    assert others_after == others_before + 3
    # The in-flight turn is not cut: every second of it arrives, with no error.
    pcm = await asyncio.wait_for(turn, 10)
    _assert_whole_tone(pcm, text)
    assert not errors
    # ... and the replica exits cleanly once it has no work left.
    code = await asyncio.to_thread(draining.proc.wait, 10)
    assert code == 0
    exited = time.monotonic() - signalled
    assert exited < 9
    print(  # the figures docs/deploy.md quotes (pytest -s shows them)
        f"\ndrain: HAProxy DOWN {down_after:.2f} s after SIGTERM; 3 new turns served by the "
        f"others; in-flight turn whole ({TONE.duration_of(text):.1f} s, no error); replica "
        f"exited 0 {exited:.2f} s after SIGTERM"
    )
