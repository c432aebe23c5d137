"""Tools that act on many runs: the W&B sweep engine and its trials, run ranking (`lmlab compare`), W&B run
reading."""
