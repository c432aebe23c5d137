"""lmlab: compare recurrent and Transformer language models under one pipeline."""

__version__ = "0.1.0"
