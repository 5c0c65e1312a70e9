"""The per-symbol trader and its helpers."""
