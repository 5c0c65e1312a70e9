"""QuantMesh: an asyncio grid-trading daemon."""

__version__ = "0.1.0"
