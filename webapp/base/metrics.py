"""Prometheus metrics: requests, active streams, TTFT and turn duration, upstream and Redis errors."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

LATENCY_BUCKETS = (0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60)


class Metrics:
    """One registry per app, so several apps in one process (tests) do not collide."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "chat_http_requests", "HTTP requests", ["method", "status"], registry=self.registry
        )
        self.active_streams = Gauge("chat_active_streams", "Open SSE connections", registry=self.registry)
        self.active_turns = Gauge("chat_active_turns", "Replies being generated", registry=self.registry)
        self.turns = Counter("chat_turns", "Finished turns", ["status"], registry=self.registry)
        self.ttft = Histogram(
            "chat_time_to_first_token_seconds", "Time from turn start to first model token",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.turn_duration = Histogram(
            "chat_turn_duration_seconds", "Time from turn start to saved reply",
            buckets=LATENCY_BUCKETS, registry=self.registry,
        )
        self.upstream_errors = Counter("chat_upstream_errors", "Failed model calls", registry=self.registry)
        self.redis_errors = Counter("chat_redis_errors", "Failed Redis operations", registry=self.registry)
        self.tokens = Counter("chat_tokens", "Tokens of saved replies (provider counts or estimates)",
                              ["model", "kind"], registry=self.registry)
        self.redis_round_trips = Gauge(
            "chat_redis_round_trips", "Commands and pipelines this worker has sent to Redis since it started "
            "(blocking reads not counted)", registry=self.registry,
        )

    def turn_started(self) -> None:
        self.active_turns.inc()

    def turn_finished(self, status: str, seconds: float) -> None:
        self.active_turns.dec()
        self.turns.labels(status).inc()
        self.turn_duration.observe(seconds)

    def tokens_used(self, model: str, input_tokens: int, output_tokens: int) -> None:
        self.tokens.labels(model, "input").inc(input_tokens)
        self.tokens.labels(model, "output").inc(output_tokens)

    def observe_ttft(self, seconds: float) -> None:
        self.ttft.observe(seconds)

    def upstream_error(self) -> None:
        self.upstream_errors.inc()

    def redis_error(self) -> None:
        self.redis_errors.inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)

