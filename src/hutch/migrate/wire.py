"""The migration's wire format: length-prefixed JSON messages, and files as tar
streams cut into length-prefixed frames, over one TCP connection (see
:mod:`hutch.migrate`)."""

import errno
import json
import os
import socket
import struct

from ..errors import HutchError

CHUNK = 1 << 16


# --- framing ------------------------------------------------------------------------
class Conn:
    def __init__(self, sock):
        # small messages go at once: Nagle's algorithm and delayed ACKs would
        # add ~40 ms to each round trip of the frozen phase
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.sent = 0
        self.received = 0

    def send(self, obj):
        data = json.dumps(obj).encode()
        self._write(struct.pack(">I", len(data)) + data)

    def recv(self):
        head = self._read(4)
        (n,) = struct.unpack(">I", head)
        return json.loads(self._read(n))

    def expect(self, kind):
        msg = self.recv()
        if msg.get("t") == "error":
            raise HutchError(f"the destination failed: {msg.get('msg')}",
                             msg.get("errno"))
        if msg.get("t") != kind:
            raise HutchError(f"migration protocol: expected {kind!r}, got "
                             f"{msg.get('t')!r}", errno.EPROTO)
        return msg

    def _write(self, data):
        self.sock.sendall(data)
        self.sent += len(data)

    def _read(self, n):
        # acknowledge at once: after the idle frozen phase the sender is back in
        # slow start, and delayed acks would stretch the images' few round trips
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise HutchError("the other host closed the connection", errno.ECONNRESET)
            buf += chunk
        self.received += n
        return bytes(buf)


class FrameWriter:
    """A write-only file object: each write becomes a frame; close() ends it."""

    def __init__(self, conn, progress=None):
        self.conn, self.progress, self.total = conn, progress, 0

    def write(self, data):
        if data:
            self.conn._write(struct.pack(">I", len(data)) + bytes(data))
            self.total += len(data)
            if self.progress:
                self.progress(self.total)
        return len(data)

    def close(self):
        self.conn._write(struct.pack(">I", 0))

    def flush(self):
        pass


class FrameReader:
    def __init__(self, conn):
        self.conn, self.left, self.done, self.total = conn, 0, False, 0

    def read(self, n=-1):
        out = bytearray()
        while not self.done and (n < 0 or len(out) < n):
            if self.left == 0:
                (self.left,) = struct.unpack(">I", self.conn._read(4))
                if self.left == 0:
                    self.done = True
                    break
            take = self.left if n < 0 else min(self.left, n - len(out))
            out += self.conn._read(take)
            self.left -= take
        self.total += len(out)
        return bytes(out)

    def drain(self):
        while not self.done:
            self.read(CHUNK)


def send_tree(conn, path, names=None, progress=None):
    """Sends ``path`` (or only ``names`` under it) as a tar stream."""
    import tarfile
    w = FrameWriter(conn, progress)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if names is None:
            tar.add(path, arcname=".", recursive=True)
        else:
            for n in names:
                tar.add(os.path.join(path, n), arcname=n, recursive=False)
    w.close()
    return w.total


def recv_tree(conn, dest):
    import tarfile
    r = FrameReader(conn)
    kw = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    with tarfile.open(fileobj=r, mode="r|") as tar:
        for member in tar:
            _check_member(member, dest)
            tar.extract(member, dest, set_attrs=True, numeric_owner=True, **kw)
    r.drain()
    return r.total


def send_files(conn, path, progress=None):
    """Sends the files of a flat directory (CRIU's images, not its logs): one
    manifest of names and sizes, then their bytes back to back.  A tar stream
    costs ~10 ms more at the destination, on the downtime."""
    names, data = [], []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name.endswith(".log"):
            continue        # CRIU's logs stay here; the destination writes its own
        if not entry.is_file(follow_symlinks=False):
            raise HutchError(f"migrate: {entry.path} is not a regular file; the "
                             "images directory should hold only CRIU's files", errno.EISDIR)
        with open(entry.path, "rb") as f:
            blob = f.read()
        names.append([entry.name, len(blob)])
        data.append(blob)
    conn.send({"t": "files", "files": names})
    total = 0
    for blob in data:
        conn._write(blob)
        total += len(blob)
        if progress:
            progress(total)
    return total


def recv_files(conn, dest):
    """The other end of :func:`send_files`: the files are made in ``dest``, which
    must not hold them already, and never through a link."""
    msg = conn.expect("files")
    total = 0
    dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name, size in msg["files"]:
            if not isinstance(name, str) or not isinstance(size, int) or size < 0 or \
                    "/" in name or "\0" in name or name in ("", ".", ".."):
                raise HutchError(f"migration: refused an image file {name!r}", errno.EPERM)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                left = size
                while left:
                    chunk = memoryview(conn._read(min(left, 1 << 20)))
                    left -= len(chunk)
                    while chunk:
                        chunk = chunk[os.write(fd, chunk):]
            finally:
                os.close(fd)
            total += size
    finally:
        os.close(dfd)
    return total


def _check_member(m, dest):
    """Members stay inside the destination: no absolute names, no '..', and no
    path through a symlink (a rootfs has symlinks to anywhere; extracting through
    one would write outside).  Symlinks themselves are kept as they are."""
    name = m.name[2:] if m.name.startswith("./") else m.name
    check_member_name(name)
    if m.islnk():
        check_member_name(m.linkname)
    parts = [p for p in name.split("/") if p and p != "."]
    here = dest
    for p in parts[:-1]:
        here = os.path.join(here, p)
        if os.path.islink(here):
            raise HutchError(f"migration: refused {name!r}: it goes through the "
                             f"symlink {here!r}", errno.EPERM)


def snapshot(root):
    """{relative path: (type, mode, size, mtime_ns)} of a tree, not following links."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            full = os.path.join(dirpath, n)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            out[os.path.relpath(full, root)] = (st.st_mode >> 12, st.st_mode & 0o7777,
                                                st.st_size, st.st_mtime_ns)
    return out


# --- the source -------------------------------------------------------------------------
class Progress:
    def __init__(self, enabled):
        self.enabled = enabled
        self.phase = ""

    def __call__(self, nbytes):
        if self.enabled:
            bar = "#" * min(30, nbytes // (1 << 20))
            os.write(1, f"\r{self.phase:<18} [{bar:<30}] {nbytes / (1 << 20):8.1f} MiB"
                        .encode())

    def start(self, phase):
        self.phase = phase
        if self.enabled:
            os.write(1, f"\r{phase:<18}".encode())

    def end(self):
        if self.enabled:
            os.write(1, b"\n")


def rm(path):
    from ..linux.fs import rmtree
    if os.path.lexists(path):
        rmtree(path)


def check_member_name(name):
    if name.startswith("/") or ".." in name.split("/"):
        raise HutchError(f"migration: refused a path outside the bundle: {name!r}", errno.EPERM)


