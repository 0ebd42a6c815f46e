"""polyglot-embed: multilingual embedding service."""

__version__ = "0.1.0"
