"""Benchmarks of the chat server: `python -m bench.load` and `python -m bench.history` (see README.md)."""
