"""Where a container's keeper keeps its files, and its unix sockets (shared by
every part of the keeper; no other import)."""

import os


def keeper_dir(state_dir):
    return os.path.join(state_dir, "keeper")


def accept(listening):
    """accept() on a _socket.socket (the C type has only _accept)."""
    import _socket
    fd, _ = listening._accept()
    return _socket.socket(fileno=fd)


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
