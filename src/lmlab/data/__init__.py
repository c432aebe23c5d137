"""Data stages (download, split, tokenize), the readers between them, the tokenized corpus format, the batches
each task reads, the synthetic examples; their schemas in `config.py`."""
