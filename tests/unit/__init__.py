"""In-process unit tests: pure functions and a tiny app, no processes, no Redis, no network."""
