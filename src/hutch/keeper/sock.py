"""Where a container's keeper keeps its files, and its unix sockets (shared by
every part of the keeper)."""

import os

from ..linux.fdpass import unix_path  # noqa: F401  (the keeper's sockets use it)


def keeper_dir(state_dir):
    return os.path.join(state_dir, "keeper")


def accept(listening):
    """accept() on a _socket.socket (the C type has only _accept)."""
    import _socket
    fd, _ = listening._accept()
    return _socket.socket(fileno=fd)


def listen(path, mode=0o600, backlog=8):
    """A non-blocking unix stream socket listening at ``path``."""
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    with unix_path(path) as short:
        s.bind(short)
    os.chmod(path, mode)
    s.listen(backlog)
    s.setblocking(False)
    return s


def read_request(listening):
    """Accepts one control request: (connection, message), or (None, None) if
    none is waiting or it was unreadable.  The caller answers with
    :func:`reply` and closes the connection."""
    from .. import jsonlite
    try:
        conn = accept(listening)
    except BlockingIOError:
        return None, None
    try:
        conn.settimeout(1.0)
        line = b""
        while not line.endswith(b"\n"):
            chunk = conn.recv(4096)
            if not chunk:
                break
            line += chunk
        return conn, (jsonlite.loads(line.decode()) if line.strip() else {})
    except (OSError, ValueError):
        conn.close()
        return None, None


def reply(conn, msg):
    from .. import jsonlite
    try:
        conn.sendall(jsonlite.dumps(msg).encode() + b"\n")
    except OSError:
        pass
    finally:
        conn.close()


def alive(data):
    """Whether the keeper recorded as ``data`` ({"pid", "starttime"}) runs."""
    from ..container.record import pidfd
    if not data:
        return False
    fd = pidfd(data["pid"], data["starttime"])
    if fd is None:
        return False
    os.close(fd)
    return True
