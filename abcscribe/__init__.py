"""abcscribe: automatic music transcription to ABC notation with audio language models."""

__version__ = "0.1.0"
