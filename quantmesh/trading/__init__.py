"""The per-symbol trader and its parts: order book, order sender, reconciler."""
