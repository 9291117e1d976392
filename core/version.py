"""The core's version (its own module, so that any floor can read it without importing t2i)."""

__version__ = "0.1.0"
