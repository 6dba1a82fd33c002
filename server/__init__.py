"""The aggregator side: strategies, user-level accounting, the Flower ServerApp and its simulation."""

__all__: list[str] = []
