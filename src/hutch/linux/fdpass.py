"""Passing file descriptors over unix sockets (SCM_RIGHTS), with only the
socket module's C part: the console-socket protocol, the fork chain's channel,
seccomp's listener and CRIU's RPC."""

import errno
import os
import sys


def pack_fds(fds):
    """SCM_RIGHTS payload (the array module would pull in collections: ~1.4 ms)."""
    return b"".join(fd.to_bytes(4, sys.byteorder, signed=True) for fd in fds)


def unpack_fds(data):
    return [int.from_bytes(data[i:i + 4], sys.byteorder, signed=True)
            for i in range(0, len(data) - len(data) % 4, 4)]


def socketpair():
    import _socket
    a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_STREAM)
    return a.detach(), b.detach()


def send_fd(sock_fd, fd, name):
    """Sends fd over a unix socket with SCM_RIGHTS (the console-socket protocol)."""
    send_fds(sock_fd, [fd], name.encode())


def send_fds(sock_fd, fds, data=b"F"):
    """Sends fds in one SCM_RIGHTS message, with ``data`` as its payload."""
    import _socket
    s = _socket.socket(fileno=sock_fd)
    try:
        s.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pack_fds(fds))])
    finally:
        s.detach()


def recv_fds(sock_fd, n, bufsize=1):
    """Receives the fds of one :func:`send_fds` message (close-on-exec)."""
    import _socket
    s = _socket.socket(fileno=sock_fd)
    try:
        _, anc, _, _ = s.recvmsg(bufsize, _socket.CMSG_SPACE(4 * n),
                                 _socket.MSG_CMSG_CLOEXEC)
    finally:
        s.detach()
    out = []
    for level, kind, data in anc:
        if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
            out += unpack_fds(data)
    if len(out) != n:
        for fd in out:
            os.close(fd)
        raise OSError(errno.EPROTO, f"expected {n} fds from hutch, got {len(out)}")
    return out


class unix_path:
    """A unix socket's path short enough for sockaddr_un (108 bytes): itself, or
    its name through /proc/self/fd of its directory (a deep --root)."""

    def __init__(self, path):
        self.path, self.fd = path, -1

    def __enter__(self):
        if len(self.path.encode()) < 100:
            return self.path
        d, name = os.path.split(self.path)
        self.fd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        return f"/proc/self/fd/{self.fd}/{name}"

    def __exit__(self, *exc):
        if self.fd >= 0:
            os.close(self.fd)
