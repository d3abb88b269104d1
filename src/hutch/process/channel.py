"""The parent <-> child channel: length-prefixed marshal messages over a stream
socketpair.  Only plain data crosses it; fds cross with SCM_RIGHTS (console)."""

import marshal
import os


def send(fd, obj):
    data = marshal.dumps(obj)
    buf = len(data).to_bytes(4, "little") + data
    while buf:
        n = os.write(fd, buf)
        buf = buf[n:]


def _read_exact(fd, n):
    out = b""
    while len(out) < n:
        chunk = os.read(fd, n - len(out))
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


def socketpair():
    import _socket
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    return a.detach(), b.detach()


def send_fd(sock_fd, fd, name):
    """Sends fd over a unix socket with SCM_RIGHTS (the console-socket protocol)."""
    import _socket
    import array
    s = _socket.socket(fileno=sock_fd)
    try:
        s.sendmsg([name.encode()], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                     array.array("i", [fd]).tobytes())])
    finally:
        s.detach()
