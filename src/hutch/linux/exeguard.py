"""Defence against the CVE-2019-5736 class: overwriting the host's interpreter
through /proc/<pid>/exe.

Every hutch process that enters a container runs its interpreter from a *detached,
read-only* clone of the interpreter's mount (open_tree + mount_setattr, then
fexecve).  /proc/self/exe of such a process, and of a `#!/proc/self/exe` script the
container tricks it into running, resolves to a read-only mount that is attached
nowhere, so opening it for writing fails with EROFS.  Those processes are also
non-dumpable, which keeps container processes out of /proc/<pid>/{exe,mem,fd}.

Only the process that enters the container needs this (see
:mod:`hutch.process.helper`); the hutch command itself stays in the host's pid
namespace and is made non-dumpable.

The re-exec costs an interpreter start (~7 ms) on the critical path of every
create and exec.  ``setup.sh`` therefore installs the interpreter hutch runs from
as an *immutable* file (FS_IMMUTABLE_FL, /usr/local/lib/hutch/bin/python3): no
process can open an immutable file for writing, root included, until the flag is
cleared, and clearing it needs CAP_LINUX_IMMUTABLE in the host's user namespace.
When hutch runs from such a file, the helper is a plain fork, unless a process in
the container may hold that capability (``strict``): a container without a user
namespace whose capabilities include CAP_LINUX_IMMUTABLE, or leave capabilities
unset (then its root keeps them all).  Those still get the read-only clone.
"""

import errno
import os

from . import kernel as K


FS_IMMUTABLE_FL = 0x10


def is_guarded():
    """True if this interpreter already runs from a read-only mount."""
    return bool(os.statvfs("/proc/self/exe").f_flag & os.ST_RDONLY)


def is_immutable(path="/proc/self/exe"):
    """True if ``path`` is a root-owned file with the immutable flag set."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return False
    try:
        if os.fstat(fd).st_uid != 0:
            return False
        buf = K.kernel().ioctl(fd, K.FS_IOC_GETFLAGS, b"\0" * 8,
                               what=f"the flags of {path}")
        return bool(int.from_bytes(buf[:4], "little") & FS_IMMUTABLE_FL)
    except OSError:
        return False
    finally:
        os.close(fd)


def needs_reexec(strict=False):
    """(re-exec needed, guarded even against CAP_LINUX_IMMUTABLE): whether a
    process that enters a container must re-exec from a read-only clone (see the
    module doc).  Decided in the parent, before the fork."""
    if is_guarded():
        return False, True
    reexec = strict or not is_immutable()
    return reexec, reexec


def may_clear_immutable(capabilities, userns):
    """True if the container's processes may hold CAP_LINUX_IMMUTABLE in the
    host's user namespace (``capabilities``: the process's sets, None if unset)."""
    if userns:
        return False
    if capabilities is None:
        return True
    return any("LINUX_IMMUTABLE" in c.upper() for names in capabilities.values()
               for c in names)


def guarded_exe_fd():
    """An O_PATH fd (close-on-exec) of this interpreter's binary on a detached,
    read-only clone of its mount, to fexecve.  None when no guard is needed: the
    interpreter is on a read-only mount already, or hutch runs rootless (then the
    container's root is an unprivileged host user and cannot write the root-owned
    interpreter; cloning mounts is not allowed anyway)."""
    if is_guarded():
        return None
    k = K.kernel()
    exe = os.readlink("/proc/self/exe")
    try:
        tree = k.open_tree(K.AT_FDCWD, exe, K.OPEN_TREE_CLONE | K.OPEN_TREE_CLOEXEC,
                           what=f"clone the mount of {exe}")
    except OSError as e:
        if os.geteuid() != 0 and e.errno == errno.EPERM:
            return None
        from ..errors import HutchError
        raise HutchError.from_os("guard the interpreter", e) from None
    try:
        k.mount_setattr(tree, "", K.AT_EMPTY_PATH, K.MOUNT_ATTR_RDONLY |
                        K.MOUNT_ATTR_NOSUID | K.MOUNT_ATTR_NODEV,
                        what="make the interpreter's clone read-only")
        return tree
    except OSError as e:
        os.close(tree)
        from ..errors import HutchError
        raise HutchError.from_os("guard the interpreter", e) from None


def protect_self():
    """Makes the calling hutch command non-dumpable (root only), so that a
    container sharing the host's pid namespace cannot open /proc/<pid>/exe of it
    without CAP_SYS_PTRACE."""
    if os.geteuid() == 0:
        K.kernel().prctl(K.PR_SET_DUMPABLE, 0, what="make hutch non-dumpable")
