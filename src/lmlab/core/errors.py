"""The exceptions a user sees as a plain message instead of a traceback."""

from pathlib import Path


class LmlabError(Exception):
    """Bad input or a failed step, explained: names the file, key or value and what would work."""


class DiskFull(LmlabError):
    """No space left while writing `path`: the CLI adds the config key that places it, where it knows one."""

    def __init__(self, message: str, path: Path) -> None:
        super().__init__(message)
        self.path = path


class Stopped(BaseException):
    """A job ended by SIGTERM (a scheduler's preemption or time limit, `kill`, DVC stopped): a BaseException, like
    KeyboardInterrupt, so no handler swallows it. Its message says what was kept and how the run continues; the
    CLI prints it and exits 143 (128 + SIGTERM), so a launcher tells a stopped job from a finished one."""
