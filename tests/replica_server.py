"""One replica for tests/test_haproxy.py: the production serve loop around a paced tone engine.

``lmnt-local serve`` has no pacing option (real engines stream as fast as they synthesize),
and a failover test needs turns that are still streaming when a replica is killed, so this
runs the same pieces ``serve`` runs (``LocalLMNTServer`` and ``serve_until_signalled``: drain
on SIGTERM, watchdog) with audio paced at real time.  Prints ``ready`` once it serves.
"""

from __future__ import annotations

import argparse
import asyncio

from lmnt_local.server import Faults, LocalLMNTServer, ServerConfig, ToneEngine
from lmnt_local.server.ops.runner import serve_until_signalled


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--pace", type=float, default=1.0)
    parser.add_argument("--drain-timeout", type=float, default=10.0)
    args = parser.parse_args()
    server = LocalLMNTServer(
        ToneEngine(),
        port=args.port,
        faults=Faults(pace=args.pace),
        config=ServerConfig(drain_timeout=args.drain_timeout),
    )
    await server.start()
    print("ready", flush=True)
    await serve_until_signalled(server, drain_timeout=args.drain_timeout)


if __name__ == "__main__":
    asyncio.run(main())
