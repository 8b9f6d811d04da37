"""The tests' fake OpenAI-compatible model with the benchmark's defaults, on uvloop.

A thin wrapper around ``tests/fake_upstream.py`` (same replies, same directives):
100 ms to the first token, 20 ms between tokens, 50 tokens, and few recorded requests,
so that the fake model costs as little CPU as it can on a machine it shares with the
app and the load generator::

    python -m bench.fake_upstream --port 9000 --ttft-ms 100 --token-delay-ms 20 --tokens 50
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from tests.fake_upstream import main as fake_upstream_main  # noqa: E402

BENCH_TTFT_MS = 100.0
BENCH_TOKEN_DELAY_MS = 20.0
BENCH_TOKENS = 50


def main() -> None:
    fake_upstream_main(
        description="fake OpenAI-compatible model for the benchmarks",
        ttft_ms=BENCH_TTFT_MS, token_delay_ms=BENCH_TOKEN_DELAY_MS, tokens=BENCH_TOKENS,
        max_records=100, use_uvloop=True,
    )


if __name__ == "__main__":
    main()
