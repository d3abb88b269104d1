"""Linux security modules: the AppArmor profile and SELinux label of a container's
processes.

Both are set the same way: the label is written to the task's ``attr/exec`` file
in procfs just before execve, and the kernel applies it at the exec.  hutch writes
through the *host's* procfs (an fd opened before the container's mounts were
entered), never the container's /proc, which a hostile image could fake (the
CVE-2019-16884 class).

When a config or an exec asks for a label and the LSM is not active on the host,
hutch refuses with a clear error instead of running the process unconfined.
"""

import errno
import os

from .errors import HutchError

APPARMOR_ENABLED = "/sys/module/apparmor/parameters/enabled"
SELINUX_FS = "/sys/fs/selinux"


def apparmor_active(path=APPARMOR_ENABLED):
    try:
        with open(path) as f:
            return f.read(1) == "Y"
    except OSError:
        return False


def selinux_active(fs=SELINUX_FS):
    return os.path.exists(os.path.join(fs, "enforce"))


def check(apparmor, selinux, where):
    """Refuses a label for an LSM that is not active.  ``where`` names the field or
    flag, e.g. ``config.json: process``."""
    if apparmor and not apparmor_active():
        raise HutchError(f"{where}: apparmorProfile {apparmor!r} was requested, but "
                         "AppArmor is not enabled on this host "
                         f"({APPARMOR_ENABLED} is missing or not Y)", errno.EOPNOTSUPP)
    if selinux and not selinux_active():
        raise HutchError(f"{where}: selinuxLabel {selinux!r} was requested, but "
                         f"SELinux is not enabled on this host ({SELINUX_FS} is not "
                         "mounted)", errno.EOPNOTSUPP)


def apply_exec_labels(procfd, apparmor, selinux):
    """Sets the labels the next execve of the calling thread takes on.  ``procfd``
    is an O_PATH fd of a procfs that shows the calling task ("thread-self")."""
    if apparmor:
        data = f"exec {apparmor}".encode()
        try:
            _write_attr(procfd, "thread-self/attr/apparmor/exec", data)
        except HutchError as e:
            if e.errno != errno.ENOENT:
                raise
            # kernels before 5.8 have only the file shared by all LSMs
            _write_attr(procfd, "thread-self/attr/exec", data)
    if selinux:
        _write_attr(procfd, "thread-self/attr/exec", selinux.encode(), "SELinux label")


def _write_attr(procfd, path, data, what="AppArmor profile"):
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC | os.O_NOFOLLOW, dir_fd=procfd)
    except OSError as e:
        raise HutchError(f"set the {what}: open /proc/{path}: {e.strerror}",
                         e.errno) from None
    try:
        os.write(fd, data)
    except OSError as e:
        raise HutchError(f"set the {what} {data.decode(errors='replace')!r}: "
                         f"{e.strerror}", e.errno) from None
    finally:
        os.close(fd)
