"""The model providers: OpenAI-compatible and the offline demo."""
