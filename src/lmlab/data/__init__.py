"""Data stages: download, split, tokenize, and the readers between them."""
