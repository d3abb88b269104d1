"""A strict, recording fake of :class:`hutch.linux.kernel.Kernel`, for unit tests
without root.

Every call is recorded in ``calls`` as a (name, args...) tuple.  Path lookups
(openat2) and the files a call makes (mknod) are served from a real scratch
directory, so the rootfs logic runs unchanged; mounts are only recorded.  A Kernel
method the fake does not model raises NotImplementedError naming it: a test never
gets a silent success where the real kernel would have done something.
:meth:`FakeKernel.fail` makes a call refuse with an errno, as the real one would.

Tests get one installed as the process-wide kernel (``kernel()``) by the
``fake_kernel`` fixture of tests/unit/conftest.py, or pass one explicitly.
"""

import errno
import os
import stat
import struct

from . import kernel as K

_IFREQ = "16sH14x"      # struct ifreq with ifr_flags


def _path_of(fd):
    """The path an fd stands for: a real fd's, or the label of the fake's own."""
    link = os.readlink(f"/proc/self/fd/{fd}")
    if link.startswith("/memfd:"):
        return link[len("/memfd:"):].removesuffix(" (deleted)")
    return link


def _where(dirfd, path):
    if path == "":
        return _path_of(dirfd)
    if path.startswith("/"):
        return path
    base = os.getcwd() if dirfd == K.AT_FDCWD else _path_of(dirfd)
    return os.path.join(base, path)


class FakeKernel:
    def __init__(self):
        self.calls = []
        self.ns_types = {}          # path -> CLONE_NEW*: what NS_GET_NSTYPE says
        self.if_flags = {"lo": 0x8}  # interface -> flags (IFF_LOOPBACK, down)
        self.inode_flags = {}       # path -> FS_IOC_GETFLAGS flags (0 if absent)
        self._failures = []

    # --- for the tests --------------------------------------------------------
    def names(self):
        return [c[0] for c in self.calls]

    def of(self, name):
        """The argument tuples of every recorded ``name`` call, in order."""
        return [c[1:] for c in self.calls if c[0] == name]

    def fail(self, name, err, when=None):
        """Every later ``name`` call whose recorded arguments satisfy ``when`` (all,
        without it) is recorded, then raises OSError(err) as the real layer does."""
        self._failures.append((name, err, when))

    def _rec(self, name, *args, what=None):
        self.calls.append((name,) + args)
        for n, err, when in self._failures:
            if n == name and (when is None or when(*args)):
                raise OSError(err, f"{what or name}: {os.strerror(err)}")

    @staticmethod
    def _fd(label, flags=os.MFD_CLOEXEC):
        # a real fd, so that os.close() in the logic works; a memfd, so that its
        # link in /proc/self/fd names what it stands for (see _path_of)
        return os.memfd_create(label[:200], flags)

    def __getattr__(self, name):
        if name.startswith("__") or not hasattr(K.Kernel, name):
            raise AttributeError(name)
        raise NotImplementedError(f"FakeKernel does not model Kernel.{name}(): add a "
                                  "model to hutch/linux/fake.py")

    # --- mounts ---------------------------------------------------------------
    def openat2(self, dirfd, path, flags, mode=0, resolve=0, what=None):
        # symlinks resolve as on the host: scratch trees hold no absolute ones
        self._rec("openat2", path, resolve, what=what)
        return K._call(what or f"open {path}", os.open, path, flags, mode, dir_fd=dirfd)

    def fsopen(self, fstype):
        self._rec("fsopen", fstype, what=f"fsopen {fstype}")
        return self._fd(fstype)

    def fsconfig(self, fd, cmd, key=None, value=None, aux=0, what="fsconfig"):
        self._rec("fsconfig", cmd, key, value, what=what)

    def fsmount(self, fd, attrs):
        self._rec("fsmount", attrs, what="fsmount")
        return self._fd(_path_of(fd))

    def open_tree(self, dirfd, path, flags, what=None):
        self._rec("open_tree", path, flags, what=what or f"open_tree {path}")
        return self._fd(_where(dirfd, path))

    def mount_setattr(self, fd, path, flags, attr_set, attr_clr=0, propagation=0,
                      what="mount_setattr"):
        self._rec("mount_setattr", flags, attr_set, attr_clr, propagation, what=what)

    def move_mount(self, from_fd, from_path, to_fd, to_path, flags, what="move_mount"):
        # (what is mounted: an fstype or a source path; where; flags)
        self._rec("move_mount", _where(from_fd, from_path), _where(to_fd, to_path),
                  flags, what=what)

    def mount(self, source, target, fstype, flags, data=None, what=None):
        self._rec("mount", source, target, fstype, flags, data,
                  what=what or f"mount {source} on {target}")

    def umount2(self, target, flags=0):
        self._rec("umount2", target, flags, what=f"umount {target}")

    def pivot_root(self, new_root, put_old):
        self._rec("pivot_root", new_root, put_old, what=f"pivot_root {new_root}")

    def chroot(self, path, what=None):
        self._rec("chroot", path, what=what or f"chroot {path}")

    # --- files and devices ----------------------------------------------------
    def mknod(self, name, mode, device=0, dir_fd=None, what=None):
        """Recorded as (path, mode, device); a fifo is made as one, a device node
        as an empty regular file with its permissions (what a test can look at)."""
        what = what or f"mknod {name}"
        self._rec("mknod", _where(K.AT_FDCWD if dir_fd is None else dir_fd, name),
                  mode, device, what=what)
        if stat.S_ISFIFO(mode):
            K._call(what, os.mkfifo, name, mode & 0o7777, dir_fd=dir_fd)
        else:
            fd = K._call(what, os.open, name, os.O_CREAT | os.O_EXCL | os.O_WRONLY |
                         os.O_NOFOLLOW | os.O_CLOEXEC, mode & 0o7777, dir_fd=dir_fd)
            os.close(fd)

    def ioctl(self, fd, request, arg=0, what=None):
        """Models the requests hutch makes; any other raises."""
        what = what or f"ioctl {request:#x}"
        self._rec("ioctl", fd, request, arg, what=what)
        if request in (K.TIOCSPTLCK, K.TIOCSWINSZ, K.TIOCSCTTY):
            return arg
        if request == K.TIOCGWINSZ:        # a terminal of 24 rows, 80 columns
            return (24).to_bytes(2, "little") + (80).to_bytes(2, "little") + \
                bytes(len(arg) - 4)
        if request == K.TIOCGPTPEER:
            return self._fd(f"pty peer of {_path_of(fd)}",
                            os.MFD_CLOEXEC if arg & os.O_CLOEXEC else 0)
        if request == K.NS_GET_NSTYPE:
            t = self.ns_types.get(_path_of(fd))
            if t is None:       # not an nsfs file
                raise OSError(errno.ENOTTY, f"{what}: {os.strerror(errno.ENOTTY)}")
            return t
        if request in (K.SIOCGIFFLAGS, K.SIOCSIFFLAGS):
            name, flags = struct.unpack(_IFREQ, arg)
            name = name.rstrip(b"\0").decode()
            if name not in self.if_flags:
                raise OSError(errno.ENODEV, f"{what}: {os.strerror(errno.ENODEV)}")
            if request == K.SIOCSIFFLAGS:
                self.if_flags[name] = flags
                return arg
            return struct.pack(_IFREQ, name.encode(), self.if_flags[name])
        if request == K.FS_IOC_GETFLAGS:
            return self.inode_flags.get(_path_of(fd), 0).to_bytes(len(arg), "little")
        raise NotImplementedError(f"FakeKernel does not model ioctl {request:#x}")

    # --- processes ------------------------------------------------------------
    def setsid(self):
        self._rec("setsid", what="setsid")

    def setgroups(self, gids):
        self._rec("setgroups", list(gids), what="setgroups")

    def setresgid(self, rgid, egid, sgid):
        self._rec("setresgid", rgid, egid, sgid, what=f"setresgid {egid}")

    def setfsids(self, uid, gid):
        self._rec("setfsids", uid, gid, what=f"setfsuid {uid}")
        old, self._fsids = getattr(self, "_fsids", (0, 0)), (uid, gid)
        return old

    def setresuid(self, ruid, euid, suid):
        self._rec("setresuid", ruid, euid, suid, what=f"setresuid {euid}")
