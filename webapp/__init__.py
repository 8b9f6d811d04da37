"""A small, fast, self-hosted AI chat server (README.md)."""

__version__ = "1.0.0"
