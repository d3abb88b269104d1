"""Copying files into and out of a running container, from the host.

The container is hostile: while we work it may swap any component of a path for a
symlink (the CVE-2021-30465 class), or plant a FIFO or a device node where we
expect a file.  So a container path is resolved only once, by openat2() with
RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS relative to an fd of the container's root
(``..`` and absolute symlinks stay inside it); below that we move one component
at a time relative to held directory fds, with O_NOFOLLOW.  A symlink found in
the container is never followed: it is refused, or copied as a link.  An entry
that is to be read or written is first opened O_PATH (which opens nothing: no
FIFO blocks, no device driver runs), checked with fstat, and only then reopened
for I/O through /proc/self/fd, so the checked inode is the one we use.

put() and get() work like ``cp -a SRC DST``, except that setuid and setgid bits
are dropped, and that FIFOs, sockets and devices are refused, not copied.
Directory trees deeper than MAX_DEPTH are refused (each level holds three fds).
A symlink put made is chowned and timestamped by name (Linux has no fd call for
that): a swap in between only retouches an entry of the container itself.
"""

import errno
import os
import posixpath
import stat
from contextlib import contextmanager

from hutch.errors import HutchError
from hutch.linux.kernel import kernel
from hutch.rootfs.paths import open_in_root

CHUNK = 1 << 20
MAX_DEPTH = 128
_PATH = os.O_PATH | os.O_NOFOLLOW | os.O_CLOEXEC
_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
_NO_PRIV = ~(stat.S_ISUID | stat.S_ISGID)
_SBX = "in the sandbox"


@contextmanager
def _held(fd):
    try:
        yield fd
    finally:
        os.close(fd)


def _ctr(path):
    """A container path, absolute, without trailing slashes."""
    return "/" + path.strip("/")


def _error(op, path, e, where=_SBX):
    return HutchError(f"{op} {path} {where}: {os.strerror(e.errno)}", e.errno)


def _not_regular(m):
    return errno.ELOOP if stat.S_ISLNK(m) else \
        errno.EISDIR if stat.S_ISDIR(m) else errno.EINVAL


def _exists(m):
    return errno.EEXIST


def _oserror(err):
    return OSError(err, os.strerror(err))


def _expect(fd, test, wrong):
    """OSError(wrong(mode)) unless test(mode) holds for what ``fd`` stands for."""
    st = os.fstat(fd)
    if not test(st.st_mode):
        raise _oserror(wrong(st.st_mode))


def _reopen(fd, flags):
    """A new open file of the very inode an O_PATH fd stands for."""
    return os.open(f"/proc/self/fd/{fd}", flags | os.O_CLOEXEC)


def _open_file(dfd, name, wrong):
    """An fd for writing the regular file ``name`` of ``dfd``: created, or
    truncated if it is one; anything else there is refused with wrong(mode)."""
    try:
        return os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                       os.O_CLOEXEC, 0o600, dir_fd=dfd)
    except FileExistsError:
        pass
    with _held(os.open(name, _PATH, dir_fd=dfd)) as fd:
        _expect(fd, stat.S_ISREG, wrong)
        return _reopen(fd, os.O_WRONLY | os.O_TRUNC)


def _open_dir(dfd, name):
    """An fd of the directory ``name`` of ``dfd``, made if missing.  O_DIRECTORY
    fails before anything else is opened, and O_NOFOLLOW refuses a symlink."""
    try:
        os.mkdir(name, 0o700, dir_fd=dfd)
    except FileExistsError:
        pass
    try:
        return os.open(name, _DIR, dir_fd=dfd)
    except OSError as e:
        if e.errno in (errno.ENOTDIR, errno.ELOOP):
            raise _oserror(errno.EEXIST) from None
        raise


def _make_link(target, dfd, name):
    try:
        os.symlink(target, name, dir_fd=dfd)
    except FileExistsError:
        with _held(os.open(name, _PATH, dir_fd=dfd)) as fd:
            _expect(fd, stat.S_ISLNK, _exists)
        os.unlink(name, dir_fd=dfd)
        os.symlink(target, name, dir_fd=dfd)


def _write_all(fd, data):
    view = memoryview(data).cast("B")
    while view:
        view = view[os.write(fd, view[:CHUNK]):]


def _pump(src, dst):
    while chunk := os.read(src, CHUNK):
        _write_all(dst, chunk)


def _set_meta(fd, st, owner):
    if owner is not None:
        os.fchown(fd, *owner)
    os.fchmod(fd, stat.S_IMODE(st.st_mode) & _NO_PRIV)
    os.utime(fd, ns=(st.st_atime_ns, st.st_mtime_ns))


def _copy_entry(op, owner, src, spath, dfd, name, dpath, depth=0):
    """Copies what the O_PATH fd ``src`` stands for to ``name`` in the directory
    ``dfd``, a tree depth first.  Errors name the entry's container path."""
    cpath = dpath if op == "put" else spath
    try:
        st = os.fstat(src)
        if stat.S_ISLNK(st.st_mode):
            _make_link(os.readlink("", dir_fd=src), dfd, name)
            if owner is not None:
                os.chown(name, *owner, dir_fd=dfd, follow_symlinks=False)
            os.utime(name, ns=(st.st_atime_ns, st.st_mtime_ns), dir_fd=dfd,
                     follow_symlinks=False)
        elif stat.S_ISREG(st.st_mode):
            with _held(_reopen(src, os.O_RDONLY)) as sfd, \
                    _held(_open_file(dfd, name, _exists)) as out:
                _pump(sfd, out)
                _set_meta(out, st, owner)
        elif stat.S_ISDIR(st.st_mode):
            if depth >= MAX_DEPTH:
                raise HutchError(f"{op} {cpath} {_SBX}: more than {MAX_DEPTH} "
                                 "directory levels", errno.ELOOP)
            with _held(_reopen(src, os.O_RDONLY | os.O_DIRECTORY)) as sdir, \
                    _held(_open_dir(dfd, name)) as ddir:
                for child in sorted(os.listdir(sdir)):
                    with _held(os.open(child, _PATH, dir_fd=sdir)) as c:
                        _copy_entry(op, owner, c, f"{spath.rstrip('/')}/{child}", ddir,
                                    child, f"{dpath.rstrip('/')}/{child}", depth + 1)
                _set_meta(ddir, st, owner)
        else:
            where = "on the host" if op == "put" else _SBX
            raise HutchError(f"{op} {spath} {where}: not a regular file, directory "
                             "or symlink", errno.EINVAL)
    except OSError as e:
        raise _error(op, cpath, e) from None


def _resolve(rootfd, path, flags):
    """Opens a host path (rootfd None) or, scoped to its root, a container path."""
    if rootfd is None:
        return os.open(path, flags | os.O_CLOEXEC)
    return open_in_root(kernel(), rootfd, path, flags | os.O_CLOEXEC)


def _target(rootfd, path, src_name):
    """The directory fd and the name the source is copied to, by cp's rule: into
    an existing directory ``path`` under ``src_name``, else as ``path``."""
    parent, name = posixpath.split(path)
    if name in ("", ".", ".."):     # "/", or a path that names a directory
        pfd = _resolve(rootfd, path, os.O_PATH | os.O_DIRECTORY)
    else:
        pfd = _resolve(rootfd, parent, os.O_PATH | os.O_DIRECTORY)
        try:
            fd = os.open(name, _PATH, dir_fd=pfd)
        except FileNotFoundError:
            return pfd, name, path
        except BaseException:
            os.close(pfd)
            raise
        is_dir = stat.S_ISDIR(os.fstat(fd).st_mode)
        os.close(pfd if is_dir else fd)
        if not is_dir:
            return pfd, name, path          # there to overwrite, or refuse
        pfd = fd
    if src_name in ("", ".", ".."):
        os.close(pfd)
        raise _oserror(errno.EINVAL)        # no name to copy the source under
    return pfd, src_name, f"{path.rstrip('/')}/{src_name}"


def write_file(rootfd, path, data, mode=0o644, uid=0, gid=0):
    """Creates or truncates the regular file ``path`` of the container and writes
    ``data`` to it, then gives it ``mode`` and the host ids ``uid``:``gid``."""
    path = _ctr(path)
    parent, name = posixpath.split(path)
    try:
        if name in ("", ".", ".."):
            raise _oserror(errno.EISDIR)
        with _held(_resolve(rootfd, parent, os.O_PATH | os.O_DIRECTORY)) as pfd, \
                _held(_open_file(pfd, name, _not_regular)) as fd:
            _write_all(fd, data)
            os.fchown(fd, uid, gid)
            os.fchmod(fd, mode & 0o7777)
    except OSError as e:
        raise _error("write", path, e) from None


def read_file(rootfd, path):
    """The content of the regular file ``path`` of the container."""
    path = _ctr(path)
    try:
        with _held(_resolve(rootfd, path, _PATH)) as p:
            _expect(p, stat.S_ISREG, _not_regular)
            with _held(_reopen(p, os.O_RDONLY)) as fd:
                chunks = []
                while chunk := os.read(fd, CHUNK):
                    chunks.append(chunk)
                return b"".join(chunks)
    except OSError as e:
        raise _error("read", path, e) from None


def put(rootfd, host_src, ctr_dst, uid=0, gid=0):
    """Copies the host file or tree ``host_src`` to ``ctr_dst`` in the container,
    like ``cp -a``; everything made there is owned by the host ids uid:gid."""
    _copy(True, None, os.path.abspath(host_src), rootfd, _ctr(ctr_dst), (uid, gid))


def get(rootfd, ctr_src, host_dst):
    """Copies the file or tree ``ctr_src`` of the container to ``host_dst``, like
    ``cp -a`` run by the caller (who owns the copies)."""
    _copy(False, rootfd, _ctr(ctr_src), None, os.path.abspath(host_dst), None)


def _copy(put, src_root, spath, dst_root, dpath, owner):
    op, sides = ("put", ("on the host", _SBX)) if put else ("get", (_SBX, "on the host"))
    try:
        src = _resolve(src_root, spath, _PATH)
    except OSError as e:
        raise _error(op, spath, e, sides[0]) from None
    with _held(src):
        try:
            dfd, name, dpath = _target(dst_root, dpath,
                                       posixpath.basename(posixpath.normpath(spath)))
        except OSError as e:
            raise _error(op, dpath, e, sides[1]) from None
        with _held(dfd):
            _copy_entry(op, owner, src, spath, dfd, name, dpath)
