"""Shared benchmark machinery: import setup, statistics, tables, TLS material, an RTT-injecting
TCP proxy, the local server in its own process, and the 1.0.30 release loaded from its wheel.

Only the standard library is imported at module level.  ``latency.py`` has to point OpenSSL at
its throwaway CA (``SSL_CERT_FILE``) *before* aiohttp is imported, because aiohttp builds its
default SSL context once, at import time, and that default context is the one the unmodified
1.0.30 plugin uses.  Everything that pulls in aiohttp or the framework is imported lazily.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.util
import logging
import math
import multiprocessing
import os
import statistics
import subprocess
import sys
import time
import zipfile
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO = BENCH_DIR.parent
CACHE = BENCH_DIR / ".cache"
API_KEY = "bench-key"  # the local server accepts any non-empty key
UPSTREAM_VERSION = "1.0.30"

# Upper bound for "read until the peer closes" loops: far beyond any run of these scripts.
MAX_CHUNKS = 10_000_000
SPIN = 0.002  # RttProxy: the last seconds before a release are yielded away, not slept


# -- imports ---------------------------------------------------------------------------------


def ensure_package() -> None:
    """Make ``videosdk.plugins.lmnt`` importable from a checkout that is not installed.

    ``videosdk`` (from the ``videosdk`` SDK) computes its namespace ``__path__`` when it is
    first imported, so adding ``src`` to ``sys.path`` afterwards is not enough: the already
    imported package's ``__path__`` is extended too.
    """
    try:
        import videosdk.plugins.lmnt
    except ImportError:
        src = REPO / "src"
        sys.path.insert(0, str(src))
        sys.path.insert(0, str(REPO / "server" / "src"))
        parent = sys.modules.get("videosdk")
        if parent is not None and hasattr(parent, "__path__"):
            if str(src / "videosdk") not in list(parent.__path__):
                parent.__path__.append(str(src / "videosdk"))
        import videosdk.plugins.lmnt  # noqa: F401


def quiet_logs() -> None:
    """The framework logs every turn at INFO (and an ERROR per turn about a missing session
    id when no room exists); the plugins warn on expected events such as interrupts."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    for name in ("videosdk", "videosdk.agents", "videosdk.plugins.lmnt", "aiohttp"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


# -- statistics and tables ---------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100): always one of the measured values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100.0 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True, slots=True)
class Summary:
    n: int
    median: float
    p95: float
    p99: float
    max: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Summary:
        if not values:
            return cls(0, math.nan, math.nan, math.nan, math.nan)
        return cls(
            len(values),
            statistics.median(values),
            percentile(values, 95),
            percentile(values, 99),
            max(values),
        )


def table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> str:
    """A Markdown table (readable in a terminal too); numbers are right-aligned."""
    body = [[str(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in body:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def numeric(text: str) -> bool:
        return bool(text) and (text[0].isdigit() or text[0] in "-+.~≤≥<>") and text != "-"

    def line(cells: Sequence[str], align: Sequence[bool]) -> str:
        out = [
            c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, align, strict=True)
        ]
        return "| " + " | ".join(out) + " |"

    def column_numeric(i: int) -> bool:
        cells = [r[i] for r in body if r[i] != "-"]
        return bool(cells) and all(numeric(c) for c in cells)

    right = [column_numeric(i) for i in range(len(headers))]
    rule = "|" + "|".join(("-" * (w + 1) + ":") if r else ("-" * (w + 2))
                          for w, r in zip(widths, right, strict=True)) + "|"  # fmt: skip
    return "\n".join([line(headers, right), rule, *(line(r, right) for r in body)])


def ms(seconds: float, digits: int = 1) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e3:.{digits}f}"


# -- TLS material ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """PEM files of a throwaway CA and a server certificate for the loopback names.

    Files, not ``ssl.SSLContext`` objects, so they cross into the server process and can be
    handed to OpenSSL through ``SSL_CERT_FILE``.
    """

    ca: str
    cert_chain: str
    key: str


def make_tls_files(directory: Path) -> TlsFiles:
    import trustme  # only the TLS benchmarks need it (it is in the package's test extra)

    directory.mkdir(parents=True, exist_ok=True)
    ca = trustme.CA()
    cert = ca.issue_cert("127.0.0.1", "localhost")
    files = TlsFiles(
        str(directory / "ca.pem"), str(directory / "server.pem"), str(directory / "key.pem")
    )
    ca.cert_pem.write_to_path(files.ca)
    cert.private_key_pem.write_to_path(files.key)
    with open(files.cert_chain, "wb") as fh:
        for blob in cert.cert_chain_pems:
            fh.write(blob.bytes())
    return files


def server_ssl_context(files: TlsFiles) -> Any:
    import ssl

    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(files.cert_chain, files.key)
    return ctx


def client_ssl_context(files: TlsFiles) -> Any:
    import ssl

    return ssl.create_default_context(cafile=files.ca)


# -- the RTT proxy -----------------------------------------------------------------------------


class RttProxy:
    """A TCP relay on 127.0.0.1 that delays every byte by ``rtt / 2`` in each direction.

    Delays are pipelined (a byte leaves ``rtt / 2`` after it arrived, whatever came before),
    which is how propagation delay behaves; bandwidth is not limited.  Because the relay works
    below TLS, the TLS handshake, the WebSocket upgrade and every message pay the delay.

    The kernel accepts the client's TCP connection at once, so the three-way handshake itself
    would cost nothing.  To charge it, nothing the client sends is delivered to the server
    before ``accept + 1.5 * rtt``: exactly when the first client segment would arrive on a real
    path (SYN out, SYN-ACK back, then the data half a round trip later).  Everything after that
    depends on server replies and is timed by the per-direction delay alone.
    """

    def __init__(self, target_host: str, target_port: int, rtt: float) -> None:
        self.target = (target_host, target_port)
        self.rtt = rtt
        self.port = 0
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=2)

    async def _accept(self, creader: asyncio.StreamReader, cwriter: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self.connections += 1
        loop = asyncio.get_running_loop()
        accepted = loop.time()
        swriter: asyncio.StreamWriter | None = None
        try:
            sreader, swriter = await asyncio.open_connection(*self.target)
            half = self.rtt / 2
            await asyncio.gather(
                self._relay(creader, swriter, half, not_before=accepted + 1.5 * self.rtt),
                self._relay(sreader, cwriter, half, not_before=0.0),
            )
        except (OSError, asyncio.IncompleteReadError):
            pass
        except asyncio.CancelledError:
            pass  # stop(): a cancelled handler would only make asyncio log a traceback
        finally:
            for writer in (cwriter, swriter):
                if writer is not None:
                    writer.close()
            self._tasks.discard(task)

    @staticmethod
    async def _relay(
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        delay: float,
        *,
        not_before: float,
    ) -> None:
        """Copy one direction, each chunk released ``delay`` after it was read."""
        loop = asyncio.get_running_loop()
        pending: deque[tuple[float, bytes]] = deque()
        ready = asyncio.Event()
        eof = False

        async def pump() -> None:
            nonlocal eof
            last = not_before
            try:
                for _ in range(MAX_CHUNKS):
                    data = await reader.read(65536)
                    if not data:
                        break
                    last = max(loop.time() + delay, last)
                    pending.append((last, data))
                    ready.set()
            except OSError:
                pass
            finally:
                eof = True
                ready.set()

        reading = loop.create_task(pump())
        try:
            for _ in range(MAX_CHUNKS):
                if not pending:
                    if eof:
                        break
                    ready.clear()
                    await ready.wait()
                    continue
                due, data = pending[0]
                await _until(loop, due)
                pending.popleft()
                writer.write(data)
                await writer.drain()
            if writer.can_write_eof():
                with contextlib.suppress(OSError):
                    writer.write_eof()
        except OSError:
            writer.transport.abort()
        finally:
            reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reading


async def _until(loop: asyncio.AbstractEventLoop, due: float) -> None:
    """Sleep until ``due`` on the loop clock, to well under a millisecond.

    ``asyncio.sleep`` overshoots by up to ~1 ms (epoll waits in whole milliseconds), which would
    inflate the injected RTT by up to 2 ms; the last stretch is covered by yielding instead.
    """
    wait = due - loop.time()
    if wait > SPIN:
        await asyncio.sleep(wait - SPIN)
    for _ in range(1_000_000):
        if loop.time() >= due:
            return
        await asyncio.sleep(0)


# -- the server process ------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ServerSpec:
    """What the server process runs; plain data so it pickles across ``spawn``."""

    faults: dict[str, Any] = field(default_factory=dict)
    engine: dict[str, Any] = field(default_factory=dict)  # ToneEngine keywords, or {"name": ...}
    tls: TlsFiles | None = None
    rtts: tuple[float, ...] = ()  # one RttProxy per value
    sys_path: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ServerInfo:
    ws_url: str
    proxy_urls: dict[float, str]


def _server_main(spec: ServerSpec, conn: Any) -> None:
    """Entry point of the server process: serve until the parent says stop (or goes away)."""
    for entry in reversed(spec.sys_path):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    ensure_package()
    quiet_logs()
    asyncio.run(_serve(spec, conn))


async def _serve(spec: ServerSpec, conn: Any) -> None:
    from lmnt_local.server import Faults, LocalLMNTServer, ToneEngine

    ctx = server_ssl_context(spec.tls) if spec.tls is not None else None
    engine: Any
    if "name" in spec.engine:  # an engine by name ("neural", "espeak"), as ``--engine`` takes
        from lmnt_local.server.engines import make_engine

        engine = make_engine(spec.engine["name"])
        if hasattr(engine, "load"):
            engine.load()
    else:
        engine = ToneEngine(**spec.engine)
    server = LocalLMNTServer(engine=engine, ssl_context=ctx, faults=Faults(**spec.faults))
    await server.start()
    proxies = {rtt: RttProxy("127.0.0.1", server.port, rtt) for rtt in spec.rtts}
    for proxy in proxies.values():
        await proxy.start()
    scheme = "wss" if ctx is not None else "ws"
    path = server.ws_url.split(str(server.port), 1)[1]
    urls = {rtt: f"{scheme}://127.0.0.1:{p.port}{path}" for rtt, p in proxies.items()}
    # The server stands in for a remote service: keep the collector's full passes over the
    # framework's import-time heap (~100 ms each) out of the measurements.
    freeze_heap()
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    lags: list[float] = []

    async def ticker() -> None:
        for _ in range(MAX_CHUNKS):
            asked = loop.time()
            await asyncio.sleep(0.01)
            lags.append(loop.time() - asked - 0.01)
            if len(lags) > 1_000_000:
                del lags[:500_000]

    def on_message() -> None:
        """``"stats"``: answer with (CPU seconds so far, loop lags since the last ask);
        anything else (or EOF): stop."""
        try:
            message = conn.recv()
        except (EOFError, OSError):
            message = None
        if message == "stats":
            conn.send((time.process_time(), list(lags)))
            lags.clear()
        else:
            stop.set()

    tick = loop.create_task(ticker())
    loop.add_reader(conn.fileno(), on_message)
    conn.send(ServerInfo(server.ws_url, urls))
    try:
        await stop.wait()
    finally:
        loop.remove_reader(conn.fileno())
        tick.cancel()
        for proxy in proxies.values():
            await proxy.stop()
        await server.stop()
        with contextlib.suppress(OSError):
            conn.send(time.process_time())


class ServerProcess:
    """The local LMNT server (and its RTT proxies) in a separate process and event loop.

    Client and server then do not share a loop or a core: a client stall cannot hide as a
    server stall and vice versa, which matters on a 2-core machine.
    """

    def __init__(self, spec: ServerSpec) -> None:
        self.spec = spec
        self.cpu_seconds = math.nan
        self._proc: Any = None
        self._conn: Any = None

    def __enter__(self) -> ServerInfo:
        ctx = multiprocessing.get_context("spawn")
        parent, child = ctx.Pipe()
        spec = ServerSpec(
            self.spec.faults, self.spec.engine, self.spec.tls, self.spec.rtts, tuple(sys.path)
        )
        # not daemonic: the server starts its own encoding worker processes
        self._proc = ctx.Process(target=_server_main, args=(spec, child), daemon=False)
        self._proc.start()
        child.close()
        self._conn = parent
        try:
            if not parent.poll(60):
                raise RuntimeError("the server process did not start within 60 s")
            info: ServerInfo = parent.recv()
        except (EOFError, RuntimeError) as exc:
            self._proc.kill()
            self._proc.join(5)
            raise RuntimeError(
                f"the server process failed ({exc or 'exited'}); see above"
            ) from None
        return info

    def stats(self) -> tuple[float, list[float]]:
        """CPU seconds the server process has used so far (all its threads), and the lags of
        its event loop (a 10 ms ticker) since the previous call."""
        self._conn.send("stats")
        if not self._conn.poll(10):
            return math.nan, []
        cpu, lags = self._conn.recv()
        return float(cpu), list(lags)

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(OSError, BrokenPipeError):
            self._conn.send("stop")
        with contextlib.suppress(OSError, EOFError):
            if self._conn.poll(10):
                self.cpu_seconds = float(self._conn.recv())
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.kill()
            self._proc.join(5)
        self._conn.close()


# -- the 1.0.30 release ------------------------------------------------------------------------


def _self_ignoring(directory: Path) -> None:
    """``benchmarks/.cache`` ignores itself, so no one has to edit the repo's .gitignore."""
    directory.mkdir(parents=True, exist_ok=True)
    marker = directory / ".gitignore"
    if not marker.exists():
        marker.write_text("# downloaded by benchmarks/_common.py\n*\n")


def load_upstream(version: str = UPSTREAM_VERSION) -> ModuleType:
    """The official release's ``videosdk/plugins/lmnt/tts.py``, imported from its wheel under a
    module name of its own, so it runs next to this package in the same process.

    The wheel is fetched once with ``pip download`` into ``benchmarks/.cache/wheels``.
    """
    _self_ignoring(CACHE)
    wheels = CACHE / "wheels"
    pattern = f"videosdk_plugins_lmnt-{version}-*.whl"
    found = sorted(wheels.glob(pattern))
    if not found:
        print(f"downloading videosdk-plugins-lmnt=={version} (wheel only, no deps) ...")
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
             "-q", f"videosdk-plugins-lmnt=={version}", "-d", str(wheels)],
            check=True, timeout=300,
        )  # fmt: skip
        found = sorted(wheels.glob(pattern))
        if not found:
            raise RuntimeError(f"pip did not produce {pattern} in {wheels}")
    target = CACHE / f"videosdk-plugins-lmnt-{version}" / "tts.py"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(found[-1]) as wheel:
            target.write_bytes(wheel.read("videosdk/plugins/lmnt/tts.py"))
    name = "lmnt_upstream_" + version.replace(".", "_")
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, target)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {target}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def cpu_model() -> str:
    """The CPU's model name (a capacity figure without its CPU is no figure)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return f"{line.split(':', 1)[1].strip()} ({os.cpu_count()} cores)"
    except OSError:
        pass
    return f"unknown CPU ({os.cpu_count()} cores)"


def cpu_count_note() -> str:
    return f"{cpu_model()}, Python {sys.version.split()[0]}, {load_note()}"


def rss_mb(pid: int) -> float | None:
    """Resident memory of a process and its live children, in MB (/proc; None elsewhere)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    total = 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            total = int(line.split()[1]) / 1024
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        children = []
    for child in children:
        total += rss_mb(int(child)) or 0.0
    return total


def load_note() -> str:
    """The machine's 1-minute load average: these numbers are only as quiet as the machine."""
    try:
        return f"load average {os.getloadavg()[0]:.2f}"
    except OSError:
        return "load average unknown"


def freeze_heap() -> None:
    """Collect once, then move every object alive now out of the collector's view.

    Importing the framework leaves ~150k tracked objects; a full collection over them stops
    the event loop for ~100 ms whenever Python decides to run one, landing on whichever turn is
    unlucky.  A production worker should do the same after start-up.
    """
    import gc

    gc.collect()
    gc.freeze()
