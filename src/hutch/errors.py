"""Error types.  Every message is one lower-case line naming what failed and why."""

import os

# Test-only failpoints: with HUTCH_FAILPOINT=VERB:STEP the hutch command SIGKILLs
# itself when it reaches that step, so that recovery from a kill at every step can
# be proved (tests/integration/test_failpoints.py).  Unset, a step costs one
# comparison: no import, no syscall.
_FAILPOINT = os.environ.get("HUTCH_FAILPOINT")


def failpoint(step):
    if _FAILPOINT is not None and _FAILPOINT == step:
        os.kill(os.getpid(), 9)


class HutchError(Exception):
    """A failure hutch reports to the user as one line.

    ``errno`` is kept when a system call caused it, and appears in the message.
    """

    def __init__(self, msg, errno=None):
        # one line, whatever a hostile config put in the names it mentions
        msg = msg.replace("\r", "\\r").replace("\n", "\\n")
        if errno is not None and f"errno {errno}" not in msg:
            msg = f"{msg} (errno {errno})"
        super().__init__(msg)
        self.errno = errno

    @classmethod
    def from_os(cls, what, e):
        """Wraps an OSError: ``what: <strerror> (errno N)``."""
        text = e.strerror or os.strerror(e.errno or 0)
        if e.filename is not None:
            text = f"{e.filename}: {text}"
        if text.startswith(what):
            return cls(text, e.errno)
        return cls(f"{what}: {text}", e.errno)


class ConfigError(HutchError):
    """The bundle's config.json or a process.json is invalid."""


class NotFound(HutchError):
    """The container does not exist (runc's phrase is kept for engines)."""


class NotRunning(HutchError):
    """The container is not running (runc's phrase is kept for engines)."""


class SandboxError(HutchError):
    """A library sandbox could not be made, used or removed (``errno`` is kept)."""

    @classmethod
    def of(cls, e):
        """A core error as a SandboxError (the same text and errno)."""
        return e if isinstance(e, SandboxError) else cls(str(e), getattr(e, "errno", None))


class TimeoutExpired(SandboxError):
    """A wait or communicate ran out of time; the process is left running (as
    with :mod:`subprocess`: ``run(timeout=)`` kills it, ``wait`` does not)."""

    def __init__(self, cmd, timeout, output=None, stderr=None):
        import errno
        super().__init__(f"{cmd!r} did not finish within {timeout} s", errno.ETIMEDOUT)
        self.cmd, self.timeout = cmd, timeout
        self.output, self.stderr = output, stderr


class CommandFailed(SandboxError):
    """``run(check=True)`` of a command that did not exit with 0; ``result``
    has its output."""

    def __init__(self, result):
        how = f"was killed by signal {result.signal}" if result.signal else \
            f"exited with {result.returncode}"
        if result.timed_out:
            how = "timed out"
        elif result.oom_killed:
            how = "was killed by the memory limit"
        super().__init__(f"{result.args!r} {how}")
        self.result = result
