"""Entering a running process's namespaces: the container side of `hutch exec`
and `hutch enter`.

Three processes take part:

* the **parent** (the hutch command, :mod:`hutch.container.exec`) holds a pidfd of the
  target from the start, sends the helper the target's cgroups to join, then the
  plan with the pidfd;
* the **helper** (:mod:`hutch.process.helper`, running from the guarded
  interpreter) makes itself non-dumpable, puts itself in the cgroups (v1; the
  child is born in the v2 one: :func:`join_cgroups`), opens the host's procfs,
  then joins every namespace in one ``setns(pidfd, flags)``.  The kernel switches them all at once,
  the user namespace first, and only if the process behind the pidfd is still
  alive: a pid that was reused, or an init that died, can never be entered.  A pid
  namespace applies to children, so the helper forks and exits;
* the **child** (already in the container's pid namespace and cgroups, with the
  container's root as its root and cwd) sets up the process exactly as the init
  was set up (rlimits, session, keyring, user, cwd, console, LSM label,
  capabilities, no_new_privs, seccomp) and execs.  The parent is a child subreaper,
  so the child becomes its child when the helper exits.

Errors travel to the parent over the socket as one line.  A successful exec closes
the socket (it is close-on-exec), which is how the parent knows the program runs.
"""

import errno
import os

from . import channel
from ..errors import HutchError
from ..linux import kernel as K
from ..linux.kernel import kernel


def preload():
    """Everything the child needs, imported before the container's mounts hide
    the host's Python library."""
    from . import finalize, init  # noqa: F401
    from .. import capabilities, lsm, seccomp  # noqa: F401
    from ..cgroups import manager  # noqa: F401  (join_cgroups)
    import fcntl, resource, struct  # noqa: F401,E401
    K._lib()
    K._pyapi()      # fork_into_cgroup's bindings


def _join_error(path, e):
    hint = " (exec joins an existing sub-cgroup: create it first)" \
        if e.errno == errno.ENOENT else ""
    return HutchError(f"adding pid {os.getpid()} to cgroups: open {path}/cgroup.procs: "
                      f"{(e.strerror or '').lower()}{hint}", e.errno)


def join_cgroups(plan, sock):
    """The helper puts itself in the target's cgroups (``plan["cgroup_paths"]``),
    before any namespace (the paths are the host's), and says so; see
    :func:`hutch.cgroups.manager.join_self`.  Returns the v2 cgroup for the child
    to be born in, or None.  In the target's user namespace the child could not
    be born there with the host's view: the v2 cgroup is joined here then."""
    paths = plan.get("cgroup_paths") or {}
    cgroup = None
    if paths:
        from ..cgroups.manager import join_self
        cgroup = join_self(paths, defer_v2=not plan["ns_flags"] & K.CLONE_NEWUSER,
                           error=_join_error)
    channel.send(sock, {"t": "joined"})
    return cgroup


def prepare(msg, sock):
    """The cgroups, joined before the plan comes (:func:`helper.prepare_enter`,
    sent while the command gets ready): returns where :func:`stage` resumes."""
    from .init import fail
    try:
        kernel().prctl(K.PR_SET_DUMPABLE, 0, what="make the exec helper non-dumpable")
        return {"cgroup": join_cgroups(msg, sock)}
    except BaseException as e:   # noqa: BLE001
        fail(sock, e)


def stage(plan, sock, pidfd, console_sock, prepared=None):
    """In the helper: join, fork the child, report its pid, exit."""
    from .init import fail, fork_and_report
    k = kernel()
    try:
        k.prctl(K.PR_SET_DUMPABLE, 0, what="make the exec helper non-dumpable")
        hostproc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
        cgroup = prepared["cgroup"] if prepared else join_cgroups(plan, sock)
        flags = plan["ns_flags"]
        # born in its v2 cgroup, the child joins the cgroup namespace itself
        # (its view is then the same as for a child of a helper in the cgroup)
        cgroupns = pidfd if cgroup is not None and flags & K.CLONE_NEWCGROUP else -1
        if cgroupns >= 0:
            flags &= ~K.CLONE_NEWCGROUP
        if flags:
            try:
                k.setns(pidfd, flags)
            except OSError as e:
                if e.errno == errno.ESRCH:
                    raise HutchError(plan["gone_msg"], errno.ESRCH) from None
                raise HutchError(f"join the namespaces of {plan['target']}: "
                                 f"{os.strerror(e.errno)}", e.errno) from None
        if cgroupns < 0:
            os.close(pidfd)
        fork_and_report(sock, child, plan, sock, hostproc, console_sock, cgroupns,
                        cgroup=cgroup)
    except BaseException as e:   # noqa: BLE001
        fail(sock, e)


def child(plan, sock, hostproc, console_sock, cgroupns=-1):
    from . import finalize
    k = kernel()
    proc = plan["process"]
    if cgroupns >= 0:
        try:
            k.setns(cgroupns, K.CLONE_NEWCGROUP)
        except OSError as e:
            if e.errno == errno.ESRCH:
                raise HutchError(plan["gone_msg"], errno.ESRCH) from None
            raise HutchError(f"join the cgroup namespace of {plan['target']}: "
                             f"{os.strerror(e.errno)}", e.errno) from None
        os.close(cgroupns)
    k.setsid()
    finalize.set_rlimits(proc["rlimits"])
    finalize.reopen_dev_null()
    if proc["oom_score_adj"] is not None:
        finalize.set_oom_score_adj(proc["oom_score_adj"], hostproc)
    finalize.resolve_user(proc)
    if not plan["no_new_keyring"]:
        k.join_session_keyring(None)
    console = None
    if proc["terminal"]:
        console = open_console(k, proc, console_sock)
    cwd = proc["cwd"]
    if cwd is not None:
        finalize.chdir_or_defer(k, proc, plan["source"])
    else:
        proc["cwd"] = os.getcwd()
    exe, env = finalize.prepare_exec(proc)
    if proc["seccomp"] and proc["seccomp"]["notify"]:
        from .init import send_notify_fd
        send_notify_fd(k, proc, sock)
    if console is not None:
        finalize.take_console(k, console)
    keep = plan["keep_fds"]
    if sock < keep:     # the channel must not take a preserved fd's place
        import fcntl
        nsock = fcntl.fcntl(sock, fcntl.F_DUPFD_CLOEXEC, keep)
        os.close(sock)
        sock = nsock
    try:
        finalize.exec_process(k, proc, exe, env, keep, hostproc)
    except BaseException as e:   # noqa: BLE001
        from .init import fail
        fail(sock, e)


def open_console(k, proc, console_sock):
    """A new pty on the container's devpts; the master goes to the console socket
    and the slave becomes the process's terminal."""
    from . import finalize
    if console_sock < 0:
        raise HutchError("a terminal was requested but no console socket was given")
    master = -1
    for path in ("/dev/pts/ptmx", "/dev/ptmx"):
        try:
            master = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_CLOEXEC)
            break
        except OSError as e:
            err = e
    if master < 0:
        raise HutchError(f"open a terminal in the container: /dev/pts/ptmx: "
                         f"{err.strerror}", err.errno)
    return finalize.hand_over_pty(k, master, console_sock, proc["console_size"])
