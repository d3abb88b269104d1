"""The parent <-> child channel: length-prefixed marshal messages over a stream
socketpair.  Only plain data crosses it; fds cross with SCM_RIGHTS
(:mod:`hutch.linux.fdpass`)."""

import marshal
import os

# the fd half of the protocol lives in the syscall layer, which seccomp's
# listener and the CRIU client use too
from ..linux.fdpass import recv_fds, send_fd, send_fds, socketpair  # noqa: F401


def send(fd, obj):
    data = marshal.dumps(obj)
    buf = len(data).to_bytes(4, "little") + data
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


def _read_exact(fd, n):
    out = b""
    while len(out) < n:
        try:
            chunk = os.read(fd, n - len(out))
        except ConnectionResetError:     # the other side died with data unread
            return None
        if not chunk:
            return None
        out += chunk
    return out


def recv(fd):
    """The next message, or None at EOF."""
    head = _read_exact(fd, 4)
    if head is None:
        return None
    body = _read_exact(fd, int.from_bytes(head, "little"))
    if body is None:
        return None
    return marshal.loads(body)
