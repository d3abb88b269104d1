"""Filesystem helpers the verbs share: mount listing, detaching what is mounted
under a directory, and a tree removal that never follows a symlink or crosses
into another filesystem."""

import os


def _unescape(field):
    return field.replace("\\040", " ").replace("\\011", "\t").replace(
        "\\012", "\n").replace("\\134", "\\")


def mounts_under(path, mountinfo="/proc/self/mountinfo"):
    """The mount points strictly below ``path`` (resolved), from mountinfo."""
    prefix = os.path.realpath(path).rstrip("/") + "/"
    try:
        with open(mountinfo) as f:
            return [mp for mp in (_unescape(line.split(" ", 5)[4]) for line in f)
                    if mp.startswith(prefix)]
    except OSError:
        return []


def unmount_under(path):
    """Detaches whatever is mounted under ``path`` (a restore's bind of the rootfs,
    a CRIU cgroup yard, left by a hutch that was killed), deepest first, so that
    removing ``path`` never reaches into what was mounted there.  Returns the
    mounts that are still there (none, unless unmounting was refused)."""
    found = mounts_under(path)
    if not found:
        return []
    from . import kernel as K
    for mp in sorted(found, key=len, reverse=True):
        try:
            K.kernel().umount2(mp, K.MNT_DETACH)
        except OSError:
            pass
    return mounts_under(path)


def unmount_dir(path):
    """Detaches what is mounted on ``path`` (and under it) and removes the
    directory, if it is empty then."""
    if not path:
        return
    from . import kernel as K
    try:
        K.kernel().umount2(path, K.MNT_DETACH)
    except OSError:
        pass
    try:
        os.rmdir(path)
    except OSError:
        pass


def rmtree(path):
    """Removes a directory tree without following symlinks (shutil costs ~4 ms of
    imports, which every `delete` would pay).  Errors are ignored: the caller
    removes what it made and reports what matters elsewhere."""
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    try:
        _clear(dfd)
    finally:
        os.close(dfd)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _clear(dfd):
    dev = os.fstat(dfd).st_dev
    for entry in os.scandir(dfd):
        name = entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir and entry.stat(follow_symlinks=False).st_dev != dev:
                continue        # another filesystem mounted here: not ours to empty
        except OSError:
            is_dir = False
        if is_dir:
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                              os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                continue
            try:
                _clear(sub)
            finally:
                os.close(sub)
            try:
                os.rmdir(name, dir_fd=dfd)
            except OSError:
                pass
        else:
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                pass


def lock_current(path, flags, mode=0o600):
    """Opens ``path`` (os.open's ``flags``; O_NOFOLLOW and O_CLOEXEC are added)
    and takes an exclusive flock on it, waiting; returns the fd once the file
    locked is still the one at ``path``: a holder before us may have removed it,
    and another made a new one under the name, which a waiter must never take
    for its own.  None when the path is gone (FileNotFoundError or
    NotADirectoryError from the open, too, are the caller's to see)."""
    import fcntl
    while True:
        fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, mode)
        fcntl.flock(fd, fcntl.LOCK_EX)
        held = os.fstat(fd)
        try:
            now = os.stat(path, follow_symlinks=False)
        except FileNotFoundError:
            now = None
        if now is not None and (now.st_ino, now.st_dev) == (held.st_ino, held.st_dev):
            return fd
        os.close(fd)
        if now is None and not flags & os.O_CREAT:
            return None
