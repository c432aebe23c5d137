"""The exceptions a user sees as a plain message instead of a traceback."""


class LmlabError(Exception):
    """Bad input or a failed step, explained: names the file, key or value and what would work."""


class Stopped(BaseException):
    """A job ended by SIGTERM (a scheduler's preemption or time limit, `kill`, DVC stopped): a BaseException, like
    KeyboardInterrupt, so no handler swallows it. Its message says what was kept and how the run continues; the
    CLI prints it and exits 143 (128 + SIGTERM), so a launcher tells a stopped job from a finished one."""
