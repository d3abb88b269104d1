"""The syscall layer: every call hutch makes that the ``os`` module lacks, and the
container-setup calls it has (mknod, chroot, ioctl, the credentials).

All container logic talks to the kernel through a :class:`Kernel` object, so the
logic can be unit-tested without root against :class:`hutch.linux.fake.FakeKernel`,
which records calls instead of making them (and refuses any it does not model).

Every failing call raises ``OSError(errno, "<call> <what>: <strerror>")`` so that
errors name what failed, why, and the errno.  ctypes is imported lazily: verbs
that never reach this module (state, kill, delete, list...) do not pay for it.
"""

import os

# namespace clone flags
CLONE_NEWTIME = 0x00000080
CLONE_NEWNS = 0x00020000
CLONE_NEWCGROUP = 0x02000000
CLONE_NEWUTS = 0x04000000
CLONE_NEWIPC = 0x08000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWPID = 0x20000000
CLONE_NEWNET = 0x40000000
CLONE_INTO_CGROUP = 0x200000000     # clone3 only

# mount(2) flags
MS_RDONLY = 1
MS_NOSUID = 2
MS_NODEV = 4
MS_NOEXEC = 8
MS_SYNCHRONOUS = 16
MS_REMOUNT = 32
MS_MANDLOCK = 64
MS_DIRSYNC = 128
MS_NOSYMFOLLOW = 256
MS_NOATIME = 1024
MS_NODIRATIME = 2048
MS_BIND = 4096
MS_MOVE = 8192
MS_REC = 16384
MS_SILENT = 32768
MS_UNBINDABLE = 1 << 17
MS_PRIVATE = 1 << 18
MS_SLAVE = 1 << 19
MS_SHARED = 1 << 20
MS_RELATIME = 1 << 21
MS_STRICTATIME = 1 << 24
MS_LAZYTIME = 1 << 25
MNT_DETACH = 2

# new mount API
OPEN_TREE_CLONE = 1
OPEN_TREE_CLOEXEC = os.O_CLOEXEC
AT_FDCWD = -100
AT_EMPTY_PATH = 0x1000
AT_RECURSIVE = 0x8000
AT_SYMLINK_NOFOLLOW = 0x100
MOVE_MOUNT_F_EMPTY_PATH = 0x4
MOVE_MOUNT_T_EMPTY_PATH = 0x40
MOUNT_ATTR_RDONLY = 0x1
MOUNT_ATTR_NOSUID = 0x2
MOUNT_ATTR_NODEV = 0x4
MOUNT_ATTR_NOEXEC = 0x8
MOUNT_ATTR__ATIME = 0x70
MOUNT_ATTR_RELATIME = 0x0
MOUNT_ATTR_NOATIME = 0x10
MOUNT_ATTR_STRICTATIME = 0x20
MOUNT_ATTR_NODIRATIME = 0x80
MOUNT_ATTR_IDMAP = 0x100000
MOUNT_ATTR_NOSYMFOLLOW = 0x200000

# openat2 resolve flags
RESOLVE_NO_XDEV = 0x01
RESOLVE_NO_MAGICLINKS = 0x02
RESOLVE_NO_SYMLINKS = 0x04
RESOLVE_BENEATH = 0x08
RESOLVE_IN_ROOT = 0x10

# prctl
PR_SET_PDEATHSIG = 1
PR_SET_DUMPABLE = 4
PR_SET_KEEPCAPS = 8
PR_CAPBSET_READ = 23
PR_CAPBSET_DROP = 24
PR_SET_SECUREBITS = 28
PR_SET_NO_NEW_PRIVS = 38
PR_SET_CHILD_SUBREAPER = 36
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_RAISE = 2
PR_CAP_AMBIENT_CLEAR_ALL = 4

CLOSE_RANGE_CLOEXEC = 4

# ioctl requests (the asm-generic numbers: the same on every supported machine)
TIOCSCTTY = 0x540E
TIOCSWINSZ = 0x5414
TIOCGWINSZ = 0x5413
TIOCGPTPEER = 0x5441
TIOCSPTLCK = 0x40045431
NS_GET_NSTYPE = 0xB703
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
FS_IOC_GETFLAGS = 0x80086601

_MACHINE = os.uname().machine
if _MACHINE == "x86_64":
    NR = dict(pivot_root=155, capget=125, capset=126, seccomp=317, execveat=322,
              keyctl=250, bpf=321, setfsuid=122, setfsgid=123)
elif _MACHINE in ("aarch64", "arm64", "riscv64"):
    NR = dict(pivot_root=41, capget=90, capset=91, seccomp=277, execveat=281,
              keyctl=219, bpf=280, setfsuid=151, setfsgid=152)
else:  # pragma: no cover - other architectures are not supported yet
    raise ImportError(f"hutch: unsupported architecture {_MACHINE}")
NR.update(pidfd_send_signal=424, open_tree=428, move_mount=429, fsopen=430,
          fsconfig=431, fsmount=432, pidfd_open=434, close_range=436, openat2=437,
          mount_setattr=442, clone3=435)

_libc = None
_pylib = None
_prctl = None


def _lib():
    global _libc
    if _libc is None:
        import ctypes
        _libc = ctypes.CDLL(None, use_errno=True)
        _libc.syscall.restype = ctypes.c_long
    return _libc


def _prctl_fn():
    """prctl(2) bound through _ctypes alone.  The hutch command calls nothing
    else of libc (it makes itself a subreaper and non-dumpable), and the ctypes
    package costs it ~1.7 ms to import; this costs ~0.3 ms."""
    global _prctl
    if _prctl is None:
        import _ctypes

        class c_int(_ctypes._SimpleCData):
            _type_ = "i"

        class c_ulong(_ctypes._SimpleCData):
            _type_ = "L"

        class Fn(_ctypes.CFuncPtr):
            _flags_ = _ctypes.FUNCFLAG_CDECL | _ctypes.FUNCFLAG_USE_ERRNO
            _restype_ = c_int
        fn = Fn(_ctypes.dlsym(_ctypes.dlopen(None), "prctl"))
        fn.argtypes = (c_int, c_ulong, c_ulong, c_ulong, c_ulong)
        _prctl = fn
    return _prctl


def _pyapi():
    """libc and the interpreter's C API through a handle that keeps the GIL held
    during the call (what the interpreter's own fork needs around it), with the
    functions fork_into_cgroup calls bound and its argument type made: ~0.2 ms
    the first time, which the helper pays in its preload (off the critical path)."""
    global _pylib
    if _pylib is None:
        import ctypes
        lib = ctypes.PyDLL(None, use_errno=True)
        lib.syscall.restype = ctypes.c_long
        for name in ("PyOS_BeforeFork", "PyOS_AfterFork_Child", "PyOS_AfterFork_Parent"):
            getattr(lib, name)
        lib.clone_args = ctypes.c_uint64 * 11
        _pylib = lib
    return _pylib


def _b(s):
    if s is None:
        return None
    return s if isinstance(s, bytes) else os.fsencode(s)


def _call(what, fn, *args, **kw):
    """Runs an ``os`` (or ``fcntl``) call, naming ``what`` in its error."""
    try:
        return fn(*args, **kw)
    except OSError as e:
        # OSError(errno, text) picks the subclass (PermissionError...) as os does
        raise OSError(e.errno, f"{what}: {e.strerror}") from None


def _check(ret, what):
    if ret < 0:
        from _ctypes import get_errno
        e = get_errno()
        raise OSError(e, f"{what}: {os.strerror(e)}")
    return ret


class Kernel:
    """The real kernel.  Methods mirror the syscalls they make."""

    def syscall(self, name, *args):
        return _lib().syscall(NR[name], *args)

    # --- namespaces ---------------------------------------------------------
    def unshare(self, flags):
        _check(_lib().unshare(flags), f"unshare {flags:#x}")

    def setns(self, fd, nstype, what="namespace"):
        _check(_lib().setns(fd, nstype), f"setns {what}")

    def sethostname(self, name):
        b = _b(name)
        _check(_lib().sethostname(b, len(b)), f"sethostname {name!r}")

    def setdomainname(self, name):
        b = _b(name)
        _check(_lib().setdomainname(b, len(b)), f"setdomainname {name!r}")

    # --- mounts -------------------------------------------------------------
    def mount(self, source, target, fstype, flags, data=None, what=None):
        import ctypes
        ret = _lib().mount(_b(source), _b(target), _b(fstype), ctypes.c_ulong(flags),
                           _b(data))
        _check(ret, what or f"mount {source} on {target}")

    def umount2(self, target, flags=0):
        _check(_lib().umount2(_b(target), flags), f"umount {target}")

    def pivot_root(self, new_root, put_old):
        _check(self.syscall("pivot_root", _b(new_root), _b(put_old)),
               f"pivot_root {new_root}")

    def open_tree(self, dirfd, path, flags, what=None):
        return _check(self.syscall("open_tree", dirfd, _b(path), flags),
                      what or f"open_tree {path}")

    def move_mount(self, from_fd, from_path, to_fd, to_path, flags, what="move_mount"):
        _check(self.syscall("move_mount", from_fd, _b(from_path), to_fd, _b(to_path),
                            flags), what)

    def mount_setattr(self, fd, path, flags, attr_set, attr_clr=0, propagation=0,
                      what="mount_setattr"):
        import ctypes
        attr = (ctypes.c_uint64 * 4)(attr_set, attr_clr, propagation, 0)
        _check(self.syscall("mount_setattr", fd, _b(path), flags, ctypes.byref(attr),
                            ctypes.sizeof(attr)), what)

    def fsopen(self, fstype):
        return _check(self.syscall("fsopen", _b(fstype), 1), f"fsopen {fstype}")

    def fsconfig(self, fd, cmd, key=None, value=None, aux=0, what="fsconfig"):
        try:
            _check(self.syscall("fsconfig", fd, cmd, _b(key), _b(value), aux), what)
        except OSError as e:
            log = self.fs_log(fd)
            if log:
                raise OSError(e.errno, f"{e.strerror}: {log}") from None
            raise

    @staticmethod
    def fs_log(fd):
        """The kernel's own explanation of a failed fsconfig, if it left one."""
        msgs = []
        while True:
            try:
                m = os.read(fd, 512)
            except OSError:
                break
            if not m:
                break
            msgs.append(m.decode(errors="replace").strip()[2:])
        return "; ".join(msgs)

    def fsmount(self, fd, attrs):
        return _check(self.syscall("fsmount", fd, 1, attrs), "fsmount")

    def openat2(self, dirfd, path, flags, mode=0, resolve=0, what=None):
        import ctypes
        how = (ctypes.c_uint64 * 3)(flags, mode, resolve)
        return _check(self.syscall("openat2", dirfd, _b(path), ctypes.byref(how),
                                   ctypes.sizeof(how)), what or f"open {path}")

    def chroot(self, path, what=None):
        _call(what or f"chroot {path}", os.chroot, path)

    # --- files and devices --------------------------------------------------
    def mknod(self, name, mode, device=0, dir_fd=None, what=None):
        _call(what or f"mknod {name}", os.mknod, name, mode, device, dir_fd=dir_fd)

    def ioctl(self, fd, request, arg=0, what=None):
        """fcntl.ioctl's result: an int, or the buffer the kernel filled in when
        ``arg`` is bytes."""
        import fcntl
        return _call(what or f"ioctl {request:#x}", fcntl.ioctl, fd, request, arg)

    # --- processes ----------------------------------------------------------
    def setsid(self):
        _call("setsid", os.setsid)

    def setgroups(self, gids):
        _call("setgroups", os.setgroups, gids)

    def setresgid(self, rgid, egid, sgid):
        _call(f"setresgid {egid}", os.setresgid, rgid, egid, sgid)

    def setresuid(self, ruid, euid, suid):
        _call(f"setresuid {euid}", os.setresuid, ruid, euid, suid)

    def setfsids(self, uid, gid):
        """Sets the calling THREAD's filesystem ids (the kernel's credentials
        are per thread; glibc does not spread these two to the other threads).
        Returns the previous (uid, gid).  The call cannot fail; an id the
        caller may not take leaves it unchanged, which is checked."""
        old_gid = self.syscall("setfsgid", gid)
        old_uid = self.syscall("setfsuid", uid)
        if self.syscall("setfsuid", -1) != uid or self.syscall("setfsgid", -1) != gid:
            self.syscall("setfsuid", old_uid)
            self.syscall("setfsgid", old_gid)
            import errno
            raise OSError(errno.EPERM, f"setfsuid {uid} / setfsgid {gid}: "
                          "Operation not permitted")
        return old_uid, old_gid

    def prctl(self, option, arg2=0, arg3=0, arg4=0, arg5=0, what=None):
        return _check(_prctl_fn()(option, arg2, arg3, arg4, arg5),
                      what or f"prctl {option}")

    def fork_into_cgroup(self, cgroup_fd):
        """fork(2) whose child is born in the cgroup v2 directory ``cgroup_fd``
        (clone3 with CLONE_INTO_CGROUP): no migration afterwards, hence none of
        the RCU grace period (~10-15 ms) that the first write to a cgroup.procs
        waits for.  The interpreter is prepared and restored around it exactly as
        os.fork() does (PyOS_BeforeFork / PyOS_AfterFork_*); the caller must be
        single-threaded, as the whole create and exec path is.  Returns the
        child's pid, 0 in the child; OSError as fork would raise it."""
        import ctypes
        from _signal import SIGCHLD
        api = _pyapi()
        # struct clone_args: flags, pidfd, child_tid, parent_tid, exit_signal,
        # stack, stack_size, tls, set_tid, set_tid_size, cgroup
        args = api.clone_args(CLONE_INTO_CGROUP, 0, 0, 0, SIGCHLD,
                              0, 0, 0, 0, 0, cgroup_fd)
        api.PyOS_BeforeFork()
        pid = api.syscall(NR["clone3"], ctypes.byref(args),
                          ctypes.c_size_t(ctypes.sizeof(args)))
        if pid == 0:
            api.PyOS_AfterFork_Child()
            return 0
        err = ctypes.get_errno()
        api.PyOS_AfterFork_Parent()
        if pid < 0:
            raise OSError(err, f"clone3 into a cgroup: {os.strerror(err)}")
        return pid

    def capget(self):
        """Returns (effective, permitted, inheritable) as 64-bit masks."""
        import ctypes
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        data = (ctypes.c_uint32 * 6)()
        _check(self.syscall("capget", ctypes.byref(hdr), ctypes.byref(data)), "capget")
        return (data[0] | data[3] << 32, data[1] | data[4] << 32, data[2] | data[5] << 32)

    def capset(self, effective, permitted, inheritable):
        import ctypes
        hdr = (ctypes.c_uint32 * 2)(0x20080522, 0)
        m = 0xFFFFFFFF
        data = (ctypes.c_uint32 * 6)(effective & m, permitted & m, inheritable & m,
                                     effective >> 32, permitted >> 32, inheritable >> 32)
        _check(self.syscall("capset", ctypes.byref(hdr), ctypes.byref(data)), "capset")

    def close_range(self, first, last, flags):
        _check(self.syscall("close_range", first, last, flags), "close_range")

    def execveat(self, fd, path, argv, env, flags):
        import ctypes
        av = (ctypes.c_char_p * (len(argv) + 1))(*[_b(a) for a in argv], None)
        ev = (ctypes.c_char_p * (len(env) + 1))(*[_b(e) for e in env], None)
        self.syscall("execveat", fd, _b(path), av, ev, flags)
        import ctypes as c
        e = c.get_errno()
        raise OSError(e, f"execveat {path or fd}: {os.strerror(e)}")

    def join_session_keyring(self, name=None):
        # KEYCTL_JOIN_SESSION_KEYRING = 1
        _check(self.syscall("keyctl", 1, _b(name)), "keyctl join session keyring")

    def bpf(self, cmd, attr, what="bpf"):
        """bpf(2) with ``attr`` a bytes-like union bpf_attr; returns the result."""
        import ctypes
        buf = ctypes.create_string_buffer(bytes(attr), len(attr))
        return _check(self.syscall("bpf", cmd, buf, len(attr)), what)

    def seccomp_set_filter(self, prog_bytes, flags=0):
        import ctypes
        buf = ctypes.create_string_buffer(prog_bytes, len(prog_bytes))

        class SockFprog(ctypes.Structure):
            _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_void_p)]
        fprog = SockFprog(len(prog_bytes) // 8, ctypes.addressof(buf))
        # SECCOMP_SET_MODE_FILTER = 1
        return _check(self.syscall("seccomp", 1, flags, ctypes.byref(fprog)),
                      "seccomp set filter")


_kernel = None


def kernel():
    """The process-wide kernel object."""
    global _kernel
    if _kernel is None:
        _kernel = Kernel()
    return _kernel
