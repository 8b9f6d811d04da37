"""The tests' fake OpenAI-compatible model with the benchmark's defaults, on uvloop.

A thin wrapper around ``tests/fake_upstream.py`` (same replies, same directives):
100 ms to the first token, 20 ms between tokens, 50 tokens, and few recorded requests,
so that the fake model costs as little CPU as it can on a machine it shares with the
app and the load generator::

    python -m bench.fake_upstream --port 9000 --ttft-ms 100 --token-delay-ms 20 --tokens 50
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_upstream import FakeUpstream  # noqa: E402

BENCH_TTFT_MS = 100.0
BENCH_TOKEN_DELAY_MS = 20.0
BENCH_TOKENS = 50


async def serve(args: argparse.Namespace) -> None:
    server = FakeUpstream(
        args.host, args.port, ttft_ms=args.ttft_ms, token_delay_ms=args.token_delay_ms,
        tokens=args.tokens, max_records=args.max_records,
    )
    await server.start()
    print(f"fake upstream listening on {server.base_url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description="fake OpenAI-compatible model for the benchmarks")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    parser.add_argument("--ttft-ms", type=float, default=BENCH_TTFT_MS, help="delay before the first token")
    parser.add_argument("--token-delay-ms", type=float, default=BENCH_TOKEN_DELAY_MS, help="delay between tokens")
    parser.add_argument("--tokens", type=int, default=BENCH_TOKENS, help="tokens per reply, header included")
    parser.add_argument("--max-records", type=int, default=100, help="requests kept for GET /_requests")
    args = parser.parse_args()
    try:
        from uvloop import run
    except ImportError:  # the stdlib loop works, it is only slower
        run = asyncio.run
    try:
        run(serve(args))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
