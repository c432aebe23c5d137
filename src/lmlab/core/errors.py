"""The one exception type a user sees as a plain message instead of a traceback."""


class LmlabError(Exception):
    """Bad input or a failed step, explained: names the file, key or value and what would work."""
