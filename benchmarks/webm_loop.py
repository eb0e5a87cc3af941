"""How long WebM decoding holds the event loop, with 1, 10 and 30 streams at once.

Run from the repository root::

    python benchmarks/webm_loop.py [--seconds 5] [--streams 1,10,30]

Each stream is ``--seconds`` of a speech-like signal, encoded by the local server's own WebM
encoder and cut into the frames the server sends; every stream is a task on one event loop
that feeds its frames through an ``AudioPipeline`` (24 kHz out, the track's rate), paced at 4x
real time like a fast server, then flushes.  Two ways of feeding are compared:

* ``feed`` / ``flush``: the synchronous calls (what turns used before issue 10 item 15): each
  waits on the loop for the demuxer thread to catch up (up to 50 ms) and ``flush`` joins it.
* ``afeed`` / ``aflush``: what turns use now: the same waits as awaits.

Both rows resample each call's decoded audio in one soxr call (the per-20-ms-frame calls of the
old code are gone from both), so the ``feed`` row isolates the blocking waits only.

Columns: ``call p99`` / ``call max`` are the wall time of one feed call measured around it
(for ``afeed`` that includes its awaits, time in which the loop ran other tasks); ``loop lag``
is how late a 5 ms ticker task woke up (p50 / p99 / max): the delay every other task on the
loop (other agents, the track's frame pacing) suffered.
"""

from __future__ import annotations

import argparse
import asyncio
import time

import _common as common
from audio_cost import speechlike, wire_frames

RATE = 24000


async def _stream(frames: list[bytes], mode: str, calls: list[float]) -> None:
    from videosdk.plugins.lmnt.audio import AudioPipeline

    pipeline = AudioPipeline("webm", RATE, RATE)
    gap = 0.1 / 4  # a 100 ms engine chunk every 25 ms: 4x real time
    try:
        for data in frames:
            t0 = time.perf_counter()
            if mode == "sync":
                pipeline.feed(data)
            else:
                await pipeline.afeed(data)
            calls.append(time.perf_counter() - t0)
            await asyncio.sleep(gap)
        t0 = time.perf_counter()
        if mode == "sync":
            pipeline.flush()
        else:
            await pipeline.aflush()
        calls.append(time.perf_counter() - t0)
    finally:
        pipeline.close()


async def _ticker(lags: list[float], stop: asyncio.Event) -> None:
    for _ in range(10_000_000):
        if stop.is_set():
            return
        t0 = time.perf_counter()
        await asyncio.sleep(0.005)
        lags.append(time.perf_counter() - t0 - 0.005)


async def run(streams: int, mode: str, frames: list[bytes]) -> list[str]:
    calls: list[float] = []
    lags: list[float] = []
    stop = asyncio.Event()
    tick = asyncio.create_task(_ticker(lags, stop))
    started = time.perf_counter()
    await asyncio.gather(*(_stream(frames, mode, calls) for _ in range(streams)))
    wall = time.perf_counter() - started
    stop.set()
    await tick
    p = common.percentile
    name = "feed/flush (before)" if mode == "sync" else "afeed/aflush (now)"
    return [
        str(streams),
        name,
        common.ms(p(calls, 99)),
        common.ms(max(calls)),
        f"{common.ms(p(lags, 50))} / {common.ms(p(lags, 99))} / {common.ms(max(lags))}",
        f"{wall:.2f}",
    ]


async def _main(args: argparse.Namespace) -> None:
    common.quiet_logs()
    frames = wire_frames("webm", RATE, speechlike(RATE, args.seconds))
    rows = []
    for n in (int(x) for x in args.streams.split(",")):
        for mode in ("sync", "async"):
            rows.append(await run(n, mode, frames))
    print(common.table(["streams", "calls", "call p99 ms", "call max ms",
                        "loop lag p50 / p99 / max ms", "wall s"], rows))  # fmt: skip
    print(common.load_note())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="audio per stream")
    parser.add_argument("--streams", default="1,10,30", help="comma-separated stream counts")
    args = parser.parse_args()
    common.ensure_package()
    asyncio.run(_main(args))


if __name__ == "__main__":
    main()
