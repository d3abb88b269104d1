"""The last steps before the user's program: console, executable lookup,
credentials, capabilities, no_new_privs, fds, and the exec itself.

Shared by the container's init and (later) by `hutch exec`.
"""

import errno
import os
import _signal as signal
import stat

from ..errors import HutchError
from ..hooks import env_dict
from ..linux import kernel as K

DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def open_console(k, rf, plan):
    """Opens a pty pair on the container's devpts, sends the master to the console
    socket and returns the slave fd."""
    from ..rootfs.paths import open_in_root
    sock = plan["console_socket"]
    if sock < 0:
        raise HutchError("process.terminal is true but no --console-socket was given")
    try:
        if rf is not None:
            master = open_in_root(k, rf.rootfd, "/dev/pts/ptmx",
                                  os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
        else:
            master = os.open("/dev/ptmx", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise HutchError("process.terminal needs a devpts mount at /dev/pts in the "
                         "container", errno.ENOENT) from None
    return hand_over_pty(k, master, sock, plan["process"]["console_size"])


def hand_over_pty(k, master, sock, console_size):
    """Unlocks the pty whose ``master`` is given, sizes it, sends the master to
    the console socket ``sock`` and returns the slave.  Closes master and sock."""
    import struct
    from .channel import send_fd
    try:
        k.ioctl(master, K.TIOCSPTLCK, struct.pack("i", 0), what="unlock the pty")
        slave = k.ioctl(master, K.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY,
                        what="open the pty's slave")
        if console_size:
            k.ioctl(slave, K.TIOCSWINSZ, struct.pack("HHHH", console_size[0],
                                                     console_size[1], 0, 0),
                    what="set the console size")
        try:
            send_fd(sock, master, "/dev/ptmx")
        except OSError as e:
            raise HutchError(f"send the console to --console-socket: {e.strerror}",
                             e.errno) from None
    finally:
        os.close(master)
        os.close(sock)
    return slave


def take_console(k, slave):
    for fd in (0, 1, 2):
        os.dup2(slave, fd)
    os.close(slave)
    k.ioctl(0, K.TIOCSCTTY, 0, what="make the console the controlling terminal")


def safe_chdir(k, cwd, source="config.json"):
    """chdir to ``cwd`` inside the current root, never through a /proc magic link
    (/proc/self/fd/N could name a host directory hutch still holds: the
    CVE-2024-21626 class), and check the result is reachable from the root."""
    try:
        root = os.open("/", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        try:
            fd = k.openat2(root, cwd, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC,
                           resolve=K.RESOLVE_IN_ROOT | K.RESOLVE_NO_MAGICLINKS)
        finally:
            os.close(root)
        try:
            os.fchdir(fd)
        finally:
            os.close(fd)
        here = os.getcwd()
    except OSError as e:
        why = "it goes through a /proc magic link, which is refused" \
            if e.errno in (errno.ELOOP, errno.EXDEV) else e.strerror.lower()
        raise HutchError(f'chdir to cwd ("{cwd}") set in {source} failed: {why}',
                         e.errno) from None
    if not here.startswith("/"):
        raise HutchError(f'chdir to cwd ("{cwd}") set in {source} failed: it is '
                         "outside the container's root", errno.ENOENT)


def chdir_or_defer(k, proc, source="config.json"):
    """The cwd as root, before the credentials change.  Where root is refused
    (EACCES, EPERM) the chdir is tried again as the user in :func:`exec_process`,
    as runc does: a volume chowned to the container user may be closed to root."""
    try:
        safe_chdir(k, proc["cwd"], source)
    except HutchError as e:
        if e.errno not in (errno.EACCES, errno.EPERM):
            raise
        proc["chdir_as_user"] = True


def reopen_dev_null():
    """stdio that is the host's /dev/null becomes the container's own /dev/null:
    nothing of the host's mounts stays in the process's fd table (and CRIU can
    then checkpoint it: it cannot dump a file from a mount outside the
    container).  Call after entering the container's root."""
    null = None
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
        except OSError:
            continue
        if not stat.S_ISCHR(st.st_mode) or st.st_rdev != os.makedev(1, 3):
            continue
        if null is None:
            try:
                null = os.open("/dev/null", os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            except OSError:
                return          # the container has no /dev/null: keep what we have
            if os.fstat(null).st_rdev != os.makedev(1, 3):
                os.close(null)
                return
        os.dup2(null, fd)
    if null is not None:
        os.close(null)


def set_rlimits(rlimits):
    import resource
    for res, soft, hard, name in rlimits:
        try:
            resource.setrlimit(res, (soft if soft < 1 << 63 else resource.RLIM_INFINITY,
                                     hard if hard < 1 << 63 else resource.RLIM_INFINITY))
        except (OSError, ValueError) as e:
            cur = resource.getrlimit(res)
            raise HutchError(f"set {name} to {soft}/{hard}: "
                             f"{getattr(e, 'strerror', None) or e} (the current hard "
                             f"limit is {cur[1]}; raising it needs CAP_SYS_RESOURCE, "
                             "which hutch lacks)", getattr(e, "errno", errno.EPERM)) \
                from None


def set_oom_score_adj(value, procfd=None):
    """Through ``procfd`` (the host's procfs) when given, else /proc."""
    try:
        fd = os.open("self/oom_score_adj" if procfd is not None else
                     "/proc/self/oom_score_adj", os.O_WRONLY | os.O_CLOEXEC,
                     dir_fd=procfd)
        try:
            os.write(fd, str(value).encode())
        finally:
            os.close(fd)
    except OSError as e:
        raise HutchError(f"set oom_score_adj to {value}: {e.strerror}", e.errno) \
            from None


def _read_db(path):
    """Lines of /etc/passwd or /etc/group in the current root, split on ':'.  Only
    a regular file is read (a hostile image could put a fifo there)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | os.O_NOCTTY)
    except OSError:
        return []
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return []
        data = b""
        while len(data) < 1 << 22:
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    finally:
        os.close(fd)
    return [line.split(":") for line in data.decode(errors="replace").splitlines()
            if line and not line.startswith("#")]


def resolve_user(proc, etc="/etc"):
    """Turns ``user_name`` / ``group_name`` (from `exec --user name[:group]`) into
    ids using the container's /etc/passwd and /etc/group, as runc does.  A numeric
    uid needs no entry."""
    name, group = proc.get("user_name"), proc.get("group_name")
    if name is not None:
        for f in _read_db(etc + "/passwd"):
            if len(f) >= 4 and f[0] == name and f[2].isdigit() and f[3].isdigit():
                proc["uid"] = int(f[2])
                if group is None:
                    proc["gid"] = int(f[3])
                break
        else:
            raise HutchError(f"unable to find user {name}: no matching entries in "
                             "passwd file", errno.ENOENT)
    if group is not None:
        for f in _read_db(etc + "/group"):
            if len(f) >= 3 and f[0] == group and f[2].isdigit():
                proc["gid"] = int(f[2])
                break
        else:
            raise HutchError(f"unable to find group {group}: no matching entries in "
                             "group file", errno.ENOENT)


def _home_of(uid):
    try:
        with open("/etc/passwd") as f:
            for line in f:
                parts = line.rstrip("\n").split(":")
                if len(parts) >= 6 and parts[2] == str(uid):
                    return parts[5] or "/"
    except OSError:
        pass
    return "/"


def prepare_exec(proc):
    """Finds the executable in the container, and completes the environment."""
    env = list(proc["env"])
    keys = {e.split("=", 1)[0] for e in env}
    if "HOME" not in keys:
        env.append("HOME=" + _home_of(proc["uid"]))
    name = proc["args"][0]
    return find_executable(name, env), env


def find_executable(name, env):
    if "/" in name:
        try:
            st = os.stat(name)
        except OSError as e:
            raise HutchError(f'exec: "{name}": stat {name}: {e.strerror.lower()}',
                             e.errno) from None
        if stat.S_ISDIR(st.st_mode):
            raise HutchError(f'exec: "{name}": is a directory', errno.EISDIR)
        if not st.st_mode & 0o111:
            raise HutchError(f'exec: "{name}": permission denied', errno.EACCES)
        return name
    path = DEFAULT_PATH
    for e in env:
        if e.startswith("PATH="):
            path = e[5:]
    for d in path.split(":"):
        cand = os.path.join(d or ".", name)
        try:
            st = os.stat(cand)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode) and st.st_mode & 0o111:
            return cand
    raise HutchError(f'exec: "{name}": executable file not found in $PATH',
                     errno.ENOENT)


def reset_signals():
    """Python ignores SIGPIPE and SIGXFSZ; ignored signals survive exec."""
    for s in range(1, signal.NSIG):
        if s in (signal.SIGKILL, signal.SIGSTOP):
            continue
        try:
            signal.signal(s, signal.SIG_DFL)
        except (OSError, ValueError):
            pass
    signal.pthread_sigmask(signal.SIG_SETMASK, ())


def cloexec_from(k, first):
    """Marks every fd from ``first`` up close-on-exec: close_range, or, where a
    seccomp profile denies it, each fd listed in /proc/self/fd."""
    try:
        k.close_range(first, 0xFFFFFFFF, K.CLOSE_RANGE_CLOEXEC)
        return
    except OSError as e:
        if e.errno not in (errno.EPERM, errno.ENOSYS):      # the filter said no
            raise
    import fcntl
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                fcntl.fcntl(fd, fcntl.F_SETFD, fcntl.FD_CLOEXEC)
            except OSError:
                pass


def give_stdio_to(uid):
    """Makes the process's terminal owned by its user, as runc does, so that a
    non-root user can use its console; the group stays (devpts gives tty).
    Only for a process with a terminal of the container's own (runc also
    chowns other stdio, which can be the caller's pipes, files or terminal on
    the host: hutch leaves those alone).  /dev/null is left alone, and so is
    what the kernel refuses (an unmapped owner, a read-only /dev)."""
    for fd in (0, 1, 2):
        try:
            st = os.fstat(fd)
            if st.st_rdev == _DEV_NULL or st.st_uid == uid:
                continue
            os.fchown(fd, uid, st.st_gid)
        except OSError as e:
            if e.errno not in (errno.EBADF, errno.EINVAL, errno.EPERM, errno.EROFS):
                raise


_DEV_NULL = os.makedev(1, 3)


def exec_process(k, proc, exe, env, keep_fds, procfd=None, last=None):
    """``procfd``: the host's procfs, needed only when an LSM label is set.
    ``last()`` runs once the process is confined as it will be (credentials,
    capabilities, seccomp filter), right before execve: the startContainer
    hooks, which run under the container's filter as with runc."""
    from .. import capabilities as C
    caps = proc["capabilities"]
    reset_signals()
    if proc.get("apparmor") or proc.get("selinux"):
        from .. import lsm
        lsm.apply_exec_labels(procfd, proc.get("apparmor"), proc.get("selinux"))
    # nothing of hutch's own reaches the program: every fd past the kept ones
    # closes.  Done before any filter is loaded: a profile older than close_range
    # (or one whose default errno is unusual) must not see it.
    cloexec_from(k, keep_fds)
    for fd in range(3, keep_fds):
        try:
            os.set_inheritable(fd, True)
        except OSError:
            pass
    # From the first filter on, hutch makes only the calls runc makes at this
    # point (prctl, capset, setgroups, setres[ug]id, umask, chdir, execve), so
    # that any profile runc can run, hutch can run.
    sec = proc.get("seccomp")
    if sec and not proc["no_new_privileges"]:
        # without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it
        # while the capabilities are still there
        from .. import seccomp
        seccomp.load(k, sec)
        sec = None
    if caps is not None:
        C.drop_bounding(k, C.mask(caps.get("bounding", ())))
    if proc.get("terminal"):
        give_stdio_to(proc["uid"])
    try:
        k.setgroups(proc["additional_gids"])
    except PermissionError:
        if proc["additional_gids"]:
            raise HutchError("setgroups: not permitted in this user namespace",
                             errno.EPERM) from None
    k.prctl(K.PR_SET_KEEPCAPS, 1)
    try:
        k.setresgid(proc["gid"], proc["gid"], proc["gid"])
        k.setresuid(proc["uid"], proc["uid"], proc["uid"])
    except OSError as e:
        why = " (the id is not mapped in the container's user namespace)" \
            if e.errno == errno.EINVAL else ""
        raise HutchError(f"switch to user {proc['uid']}:{proc['gid']}: "
                         f"{os.strerror(e.errno)}{why}", e.errno) from None
    k.prctl(K.PR_SET_KEEPCAPS, 0)
    if caps is not None:
        C.apply_sets(k, caps)
    if proc["umask"] is not None:
        os.umask(proc["umask"])
    if proc.get("chdir_as_user"):
        # root was refused the cwd (a user namespace, root-squashed NFS): the
        # user may have access where root had none, as runc allows
        safe_chdir(k, proc["cwd"])
    if proc["no_new_privileges"]:
        k.prctl(K.PR_SET_NO_NEW_PRIVS, 1, what="set no_new_privs")
    if sec:
        from .. import seccomp
        seccomp.load(k, sec)      # as late as possible: right before execve
    if last is not None:
        last()
    os.execve(exe, proc["args"], env_dict(env))
