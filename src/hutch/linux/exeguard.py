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
"""

import os

from . import kernel as K


def is_guarded():
    """True if this interpreter already runs from a read-only mount."""
    return bool(os.statvfs("/proc/self/exe").f_flag & os.ST_RDONLY)


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
        if os.geteuid() != 0 and e.errno == 1:
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
