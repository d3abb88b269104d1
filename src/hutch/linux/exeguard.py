"""Defence against the CVE-2019-5736 class: overwriting the host's interpreter
through /proc/<pid>/exe.

Every hutch process that will enter a container runs its interpreter from a
*detached, read-only* clone of the interpreter's mount (open_tree + mount_setattr,
then execveat).  /proc/self/exe of such a process (and of a `#!/proc/self/exe`
script the container tricks it into running) resolves to a read-only mount that is
attached nowhere, so opening it for writing fails with EROFS.  The processes are also
made non-dumpable, which keeps container processes out of /proc/<pid>/{exe,mem,fd}.

If the interpreter already runs from a read-only mount, nothing is done.
"""

import os
import sys

from . import kernel as K

_MARK = "_HUTCH_EXEGUARD"


def is_guarded():
    return bool(os.statvfs("/proc/self/exe").f_flag & os.ST_RDONLY)


def ensure():
    """Re-executes the current command from a read-only clone of the interpreter,
    unless already done.  Returns only if no re-exec is needed."""
    if is_guarded():
        os.environ.pop(_MARK, None)
        return
    if os.environ.get(_MARK):
        from ..errors import HutchError
        raise HutchError("could not run hutch from a read-only copy of its interpreter")
    k = K.kernel()
    exe = os.readlink("/proc/self/exe")
    try:
        fd = k.open_tree(K.AT_FDCWD, exe, K.OPEN_TREE_CLONE | K.OPEN_TREE_CLOEXEC,
                         what=f"clone the mount of {exe}")
        k.mount_setattr(fd, "", K.AT_EMPTY_PATH, K.MOUNT_ATTR_RDONLY |
                        K.MOUNT_ATTR_NOSUID | K.MOUNT_ATTR_NODEV,
                        what="make the interpreter's clone read-only")
    except OSError as e:
        if os.geteuid() != 0 and e.errno == 1:
            # rootless: the container's root cannot write root-owned host files
            return
        from ..errors import HutchError
        raise HutchError.from_os("guard the interpreter", e) from None
    env = [f"{k_}={v}" for k_, v in os.environ.items()] + [f"{_MARK}=1"]
    argv = [sys.executable] + sys.orig_argv[1:]
    k.execveat(fd, "", argv, env, K.AT_EMPTY_PATH)
