"""A small read-only FUSE file system, served by talking to /dev/fuse directly.

The keeper will serve a container a handful of small generated files (the /proc
and /sys views), from one process with one thread that already polls its log
pipes and sockets.  libfuse, or a binding to it, wants a thread of its own (or
its own loop) and calls back into Python through ctypes for every operation.
The kernel's protocol is simple enough to speak instead: a request is one read
from the /dev/fuse fd, a reply is one write.  So the fd joins the keeper's poll
loop like any other, each ready fd is answered with :meth:`FuseServer.serve_one`,
and the keeper mounts the fd itself through hutch's kernel layer, with no
fusermount and no third-party package.

What it serves is a flat directory of read-only files.  Each file's content is
made by its generator when the file is opened, and that snapshot is what reads
of that open file see (so ``pread`` at any offset is consistent, as with /proc).
Files are opened with FOPEN_DIRECT_IO, so the page cache is bypassed: read(2)
goes on until a short read, whatever ``stat`` says.  splice(2) and sendfile(2)
(busybox's cat uses sendfile) stop at the size, so a file claims a nominal size
(NOMINAL_SIZE, 1 MiB) rather than /proc's 0: they then read to the real end.  A
generator that raises fails that open with EIO; the server serves on.

The layouts below are those of <linux/fuse.h> (protocol 7.31), in host byte
order with no implicit padding.  Requests are answered one at a time, in order.
"""

import errno
import os
import stat
import struct
import time

from ..linux.kernel import MNT_DETACH, MS_NODEV, MS_NOEXEC, MS_NOSUID, MS_RDONLY, kernel

# --- the kernel ABI ---------------------------------------------------------
IN_HEADER = struct.Struct("=IIQQIIIHH")   # fuse_in_header: len opcode unique nodeid
#                                           uid gid pid total_extlen padding
OUT_HEADER = struct.Struct("=IiQ")        # fuse_out_header: len error unique
INIT_IN = struct.Struct("=IIII")          # fuse_init_in: major minor max_readahead
#                                           flags (flags2 and the rest unread)
INIT_OUT = struct.Struct("=IIIIHHIIHHI28x")  # fuse_init_out (64 bytes): major minor
#     max_readahead flags max_background congestion_threshold max_write time_gran
#     max_pages map_alignment flags2 unused[7]
_ATTR = "QQQQQQIIIIIIIIII"                # fuse_attr: ino size blocks atime mtime
#     ctime atimensec mtimensec ctimensec mode nlink uid gid rdev blksize flags
ENTRY_OUT = struct.Struct("=QQQQII" + _ATTR)  # fuse_entry_out: nodeid generation
#     entry_valid attr_valid entry_valid_nsec attr_valid_nsec attr
ATTR_OUT = struct.Struct("=QII" + _ATTR)  # fuse_attr_out: attr_valid nsec dummy attr
OPEN_IN = struct.Struct("=II")            # fuse_open_in: flags open_flags
OPEN_OUT = struct.Struct("=QIi")          # fuse_open_out: fh open_flags backing_id
READ_IN = struct.Struct("=QQII")          # fuse_read_in: fh offset size read_flags (...)
RELEASE_IN = struct.Struct("=Q")          # fuse_release_in: fh (...)
DIRENT = struct.Struct("=QQII")           # fuse_dirent: ino off namelen type, name
KSTATFS = struct.Struct("=QQQQQIIII24x")  # fuse_kstatfs: blocks bfree bavail files
#     ffree bsize namelen frsize padding spare[6]
GETXATTR_IN = struct.Struct("=II")        # fuse_getxattr_in: size padding
GETXATTR_OUT = struct.Struct("=II")       # fuse_getxattr_out: size padding

LOOKUP, FORGET, GETATTR, OPEN, READ, STATFS, RELEASE = 1, 2, 3, 14, 15, 17, 18
GETXATTR, LISTXATTR, FLUSH, INIT = 22, 23, 25, 26
OPENDIR, READDIR, RELEASEDIR, ACCESS, INTERRUPT, DESTROY, BATCH_FORGET = \
    27, 28, 29, 34, 36, 38, 42

KERNEL_MAJOR, KERNEL_MINOR = 7, 31
ROOT_ID = 1
FOPEN_DIRECT_IO = 1
FOPEN_NOFLUSH = 1 << 5     # no FLUSH request at each close: nothing to flush
NOMINAL_SIZE = 1 << 20    # see the docstring: splice and sendfile stop at the size
MAX_WRITE = 131072
BUFSIZE = 1 << 20         # the kernel fails a read smaller than max_write + headers
VALID = 1                 # s: how long the kernel may cache names and attributes
DT_DIR, DT_REG = 4, 8
MOUNT_FLAGS = MS_NOSUID | MS_NODEV | MS_NOEXEC | MS_RDONLY

_NO_REPLY = object()


class Unmounted(Exception):
    """The file system is gone (unmounted or its connection aborted): stop serving."""


class _Fail(Exception):
    def __init__(self, err):
        super().__init__(err)
        self.errno = err


class FuseServer:
    def __init__(self, files, uid=0, gid=0, mode=0o444):
        """files: dict name -> callable() returning bytes (the whole content,
        generated on each open).  A flat directory: the root holds only these names."""
        self.names = [os.fsencode(n) for n in files]
        for n in self.names:
            if not n or n in (b".", b"..") or b"/" in n or b"\0" in n or len(n) > 255:
                raise ValueError(f"fuse: bad file name {n!r}")
        self.gens = list(files.values())
        self.ids = {n: i + 2 for i, n in enumerate(self.names)}   # name -> nodeid
        self.uid, self.gid, self.mode = uid, gid, stat.S_IMODE(mode)
        self._fd, self._target = -1, None
        self._buf = bytearray(BUFSIZE)
        self._handles, self._next_fh = {}, 1
        self._ops = {INIT: self._init, LOOKUP: self._lookup, GETATTR: self._getattr,
                     OPENDIR: self._opendir, READDIR: self._readdir,
                     RELEASEDIR: self._ok, OPEN: self._open, READ: self._read,
                     RELEASE: self._release, FLUSH: self._ok, STATFS: self._statfs,
                     ACCESS: self._ok, GETXATTR: self._getxattr,
                     LISTXATTR: self._listxattr, DESTROY: self._ok,
                     FORGET: self._quiet, BATCH_FORGET: self._quiet,
                     INTERRUPT: self._quiet}

    # --- the caller's side --------------------------------------------------
    def mount(self, target):
        """Opens /dev/fuse and mounts it on the directory ``target``.  The kernel's
        INIT request then waits for :meth:`serve_one`, and every access to the
        mount blocks until it is answered: never touch it from the serving thread
        before serving."""
        if self._fd >= 0:
            raise ValueError("fuse: already mounted")
        fd = os.open("/dev/fuse", os.O_RDWR | os.O_CLOEXEC | os.O_NONBLOCK)
        opts = (f"fd={fd},rootmode=40000,user_id={self.uid},group_id={self.gid},"
                "allow_other,default_permissions")
        try:
            kernel().mount("hutch-keeper", target, "fuse", MOUNT_FLAGS, opts,
                           what=f"mount fuse on {target}")
        except BaseException:
            os.close(fd)
            raise
        self._fd, self._target = fd, target

    def fileno(self):
        """The /dev/fuse fd (-1 when not mounted), to poll for reading."""
        return self._fd

    def serve_one(self):
        """Reads and answers one request.  False if none was pending (the fd is
        non-blocking); raises :class:`Unmounted` once the file system is gone."""
        if self._fd < 0:
            raise Unmounted("fuse: not mounted")
        try:
            n = os.readv(self._fd, [self._buf])
        except BlockingIOError:
            return False
        except OSError as e:
            if e.errno in (errno.ENODEV, errno.ECONNABORTED):
                raise Unmounted(f"fuse: {self._target}: {e.strerror}") from None
            raise
        if n < IN_HEADER.size:
            return True
        length, opcode, unique, nodeid = IN_HEADER.unpack_from(self._buf)[:4]
        arg = memoryview(self._buf)[IN_HEADER.size:min(length, n)]
        op = self._ops.get(opcode)
        try:
            out = op(nodeid, arg) if op else -errno.ENOSYS
        except _Fail as e:
            out = -e.errno
        except Exception:           # noqa: BLE001 - a bug here must not stop the server
            out = -errno.EIO
        finally:
            arg.release()
        if out is not _NO_REPLY:
            self._reply(unique, out)
        return True

    def unmount(self):
        """Detaches the mount and closes the fd, which aborts the connection: what
        is still open on it fails with ENOTCONN.  Safe to call twice."""
        target, self._target = self._target, None
        fd, self._fd = self._fd, -1
        self._handles.clear()
        try:
            if target is not None:
                try:
                    kernel().umount2(target, MNT_DETACH)
                except OSError as e:            # already unmounted by someone else
                    if e.errno not in (errno.EINVAL, errno.ENOENT):
                        raise
        finally:
            if fd >= 0:
                os.close(fd)

    # --- replies ------------------------------------------------------------
    def _reply(self, unique, out):
        """``out`` is a negative errno or a list of buffers, written as one reply."""
        bufs = [] if isinstance(out, int) else out
        err = out if isinstance(out, int) else 0
        size = OUT_HEADER.size + sum(len(b) for b in bufs)
        try:
            os.writev(self._fd, [OUT_HEADER.pack(size, err, unique), *bufs])
        except OSError as e:
            if e.errno == errno.ENOENT:         # the request was interrupted
                return
            if e.errno in (errno.ENODEV, errno.ECONNABORTED):
                raise Unmounted(f"fuse: {self._target}: {e.strerror}") from None
            raise

    def _attr(self, nodeid):
        if nodeid == ROOT_ID:
            mode, nlink = stat.S_IFDIR | 0o555, 2
        elif 2 <= nodeid < len(self.names) + 2:
            mode, nlink = stat.S_IFREG | self.mode, 1
        else:
            raise _Fail(errno.ENOENT)
        sec, nsec = divmod(time.time_ns(), 1_000_000_000)
        size = NOMINAL_SIZE if mode & stat.S_IFREG else 0
        return (nodeid, size, 0, sec, sec, sec, nsec, nsec, nsec, mode, nlink,
                self.uid, self.gid, 0, 4096, 0)

    # --- the operations: (nodeid, arg) -> buffers, -errno or _NO_REPLY -------
    def _init(self, nodeid, arg):
        major, _minor, readahead, _flags = INIT_IN.unpack_from(arg)
        if major < KERNEL_MAJOR:
            return -errno.EPROTO
        return [INIT_OUT.pack(KERNEL_MAJOR, KERNEL_MINOR, readahead, 0, 16, 12,
                              MAX_WRITE, 1, 32, 0, 0)]

    def _lookup(self, parent, arg):
        name = bytes(arg).split(b"\0", 1)[0]
        if parent != ROOT_ID or name not in self.ids:
            return -errno.ENOENT
        nodeid = self.ids[name]
        return [ENTRY_OUT.pack(nodeid, 0, VALID, VALID, 0, 0, *self._attr(nodeid))]

    def _getattr(self, nodeid, arg):
        return [ATTR_OUT.pack(VALID, 0, 0, *self._attr(nodeid))]

    def _opendir(self, nodeid, arg):
        if nodeid != ROOT_ID:
            return -errno.ENOTDIR
        return [OPEN_OUT.pack(0, 0, 0)]

    def _readdir(self, nodeid, arg):
        _fh, offset, size, _ = READ_IN.unpack_from(arg)
        entries = [(ROOT_ID, b".", DT_DIR), (ROOT_ID, b"..", DT_DIR)]
        entries += [(i + 2, n, DT_REG) for i, n in enumerate(self.names)]
        out, used = [], 0
        for index in range(offset, len(entries)):
            ino, name, kind = entries[index]
            rec = DIRENT.pack(ino, index + 1, len(name), kind) + name
            rec += b"\0" * (-len(rec) % 8)
            if used + len(rec) > size:
                break
            out.append(rec)
            used += len(rec)
        return [b"".join(out)]

    def _open(self, nodeid, arg):
        flags = OPEN_IN.unpack_from(arg)[0]
        if nodeid == ROOT_ID:
            return -errno.EISDIR
        if not 2 <= nodeid < len(self.names) + 2:
            return -errno.ENOENT
        if flags & os.O_ACCMODE != os.O_RDONLY:
            return -errno.EROFS
        try:
            data = self.gens[nodeid - 2]()
            if not isinstance(data, bytes):
                data = memoryview(data).tobytes()   # TypeError for a str: EIO
        except Exception:           # noqa: BLE001 - the open fails, the server serves on
            return -errno.EIO
        fh, self._next_fh = self._next_fh, self._next_fh + 1
        self._handles[fh] = data
        return [OPEN_OUT.pack(fh, FOPEN_DIRECT_IO | FOPEN_NOFLUSH, 0)]

    def _read(self, nodeid, arg):
        fh, offset, size, _ = READ_IN.unpack_from(arg)
        data = self._handles.get(fh)
        if data is None:
            return -errno.EBADF
        return [memoryview(data)[offset:offset + size]]

    def _release(self, nodeid, arg):
        self._handles.pop(RELEASE_IN.unpack_from(arg)[0], None)
        return []

    def _statfs(self, nodeid, arg):
        return [KSTATFS.pack(0, 0, 0, 0, 0, 4096, 255, 4096, 0)]

    def _getxattr(self, nodeid, arg):
        return -errno.ENODATA

    def _listxattr(self, nodeid, arg):
        size = GETXATTR_IN.unpack_from(arg)[0]
        return [GETXATTR_OUT.pack(0, 0)] if size == 0 else []

    def _ok(self, nodeid, arg):
        return []

    def _quiet(self, nodeid, arg):
        return _NO_REPLY
