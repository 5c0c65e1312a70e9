"""Pure grid strategy code: no I/O, no ``await``."""
