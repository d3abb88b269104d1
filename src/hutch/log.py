"""Log output in runc's shape.

Errors and warnings go to stderr as one line; with ``--log FILE`` they also go to
the file, and with ``--log-format json`` each line is ``{"level","msg","time"}``,
which is what Podman and containerd read back.
"""

import os
import sys

_cfg = {"file": None, "format": "text", "debug": False}


def configure(file=None, fmt="text", debug=False):
    _cfg.update(file=file, format=fmt, debug=debug)


def now_rfc3339():
    """The time as runc writes it: RFC 3339 with nanoseconds, in UTC."""
    import time
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        f".{int((t % 1) * 1e9):09d}Z"


_time = now_rfc3339


def _line(level, msg):
    if _cfg["format"] == "json":
        from . import jsonlite
        return jsonlite.dumps({"level": level, "msg": msg, "time": _time()},
                              compact=True) + "\n"
    return f'time="{_time()}" level={level} msg="{msg}"\n'


def emit(level, msg):
    if level == "debug" and not _cfg["debug"]:
        return
    path = _cfg["file"]
    if path:
        try:
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC,
                         0o644)
            try:
                os.write(fd, _line(level, msg).encode())
            finally:
                os.close(fd)
        except OSError:
            pass
    if level in ("error", "warning") or (_cfg["debug"] and not path):
        if (_cfg["format"] == "json" or level == "debug") and not path:
            # debug lines as runc (logrus) writes them: time=... level=debug msg=...
            sys.stderr.write(_line(level, msg))
        else:
            sys.stderr.write(f"{'hutch: ' if level == 'error' else level + ': '}{msg}\n")
        sys.stderr.flush()


def error(msg):
    emit("error", msg)


def warn(msg):
    emit("warning", msg)


def debug(msg):
    emit("debug", msg)
