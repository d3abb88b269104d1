"""Resolving paths inside the container's rootfs, safely.

Every lookup goes through openat2() with RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
relative to an fd of the rootfs: ``..`` and absolute symlinks are scoped to the rootfs,
so a symlink planted in the image (or swapped in during setup, the CVE-2021-30465
class) can never send a mount outside it.  Mounts then target the returned fd
itself (move_mount with MOVE_MOUNT_T_EMPTY_PATH), never a path that could be
re-resolved later.
"""

import errno
import os
import stat

from ..linux.kernel import RESOLVE_IN_ROOT, RESOLVE_NO_MAGICLINKS

IN_ROOT = RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS
O_PATH = os.O_PATH | os.O_CLOEXEC


def open_in_root(k, rootfd, path, flags=O_PATH, resolve=IN_ROOT):
    return k.openat2(rootfd, path.lstrip("/") or ".", flags, 0, resolve,
                     what=f"open {path} in the container rootfs")


def mkdir_all(k, rootfd, path, mode=0o755):
    """Creates every missing directory of ``path`` inside the rootfs; returns an
    O_PATH fd of the final directory."""
    parts = [p for p in path.split("/") if p]
    cur = os.dup(rootfd)
    sofar = ""
    try:
        for comp in parts:
            sofar += "/" + comp
            try:
                nxt = open_in_root(k, rootfd, sofar, O_PATH | os.O_DIRECTORY)
            except FileNotFoundError:
                try:
                    os.mkdir(comp, mode, dir_fd=cur)
                except FileExistsError:
                    pass
                try:
                    nxt = open_in_root(k, rootfd, sofar, O_PATH | os.O_DIRECTORY)
                except FileNotFoundError:
                    raise OSError(errno.ENOENT, f"create {sofar} in the container "
                                  "rootfs: it is a dangling symlink") from None
            except NotADirectoryError:
                raise OSError(errno.ENOTDIR, f"create {sofar} in the container rootfs: "
                              "not a directory") from None
            os.close(cur)
            cur = nxt
        return cur
    except BaseException:
        os.close(cur)
        raise


def ensure_target(k, rootfd, path, is_dir, mode=0o755):
    """Makes sure a mount target exists (a directory, or an empty file when the
    source is a file) and returns an O_PATH fd of it."""
    if is_dir:
        return mkdir_all(k, rootfd, path, mode)
    parent, name = os.path.split(path.rstrip("/"))
    pfd = mkdir_all(k, rootfd, parent or "/", mode)
    try:
        try:
            return open_in_root(k, rootfd, path)
        except FileNotFoundError:
            pass
        try:
            fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o644, dir_fd=pfd)
            os.close(fd)
        except FileExistsError:
            pass
        return open_in_root(k, rootfd, path)
    finally:
        os.close(pfd)


def is_dir_fd(fd):
    return stat.S_ISDIR(os.fstat(fd).st_mode)
