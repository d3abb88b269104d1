"""The container side of the fork chain.  Runs in forked children of ``hutch create``.

stage1 (first child): joins namespaces given by path, creates the user namespace
(the parent writes its maps), creates the other namespaces, then forks the init and
exits.  The init is pid 1 of a new pid namespace.

stage2 (the init): builds the rootfs, runs createContainer hooks, pivots, reports
ready, then blocks opening exec.fifo until ``hutch start`` reads it.  Then it takes
on the configured credentials and seccomp filter, runs the startContainer hooks
under them (as runc does) and execs the user's program.  No hutch code runs in the
container after that exec.

Every module stage2 needs is imported before pivot_root: after it, the host's Python
library is out of reach.
"""

import os

from . import channel
from ..errors import HutchError
from ..linux import kernel as K
from ..linux.kernel import kernel


def fail(sock, e):
    """Reports an exception to the parent as one line, then exits."""
    if isinstance(e, HutchError):
        msg, errno = str(e), e.errno
    elif isinstance(e, OSError):
        msg, errno = HutchError.from_os("container init", e).args[0], e.errno
    else:
        msg, errno = f"container init: {type(e).__name__}: {e}", None
    try:
        channel.send(sock, {"t": "error", "msg": msg, "errno": errno})
    finally:
        os._exit(1)


def preload():
    """Imports everything the container side needs, before the plan arrives (the
    helper does this while the parent works) and before pivot_root (after it, the
    host's Python library is out of reach)."""
    from .. import capabilities, hooks, jsonlite, lsm, network, namespaces  # noqa: F401
    from .. import seccomp  # noqa: F401
    from ..rootfs import setup  # noqa: F401
    from . import finalize  # noqa: F401
    import _socket, fcntl, resource, struct  # noqa: F401,E401
    K._lib()     # ctypes


def stage1(plan, sock):
    k = kernel()
    try:
        for t, fd in plan["join"]:
            k.setns(fd, 0, what=f"join the {t} namespace {plan['join_paths'][t]}")
            os.close(fd)
        if plan["new_user"]:
            k.unshare(K.CLONE_NEWUSER)
            channel.send(sock, {"t": "stage1", "pid": os.getpid()})   # maps, please
            reply = channel.recv(sock)
            if reply is None or reply.get("t") != "ok":
                os._exit(1)
            k.setresgid(0, 0, 0)
            k.setresuid(0, 0, 0)
        if plan["new_flags"]:
            k.unshare(plan["new_flags"])
        if plan["time_offsets"]:
            with open("/proc/self/timens_offsets", "w") as f:
                f.write(plan["time_offsets"])
        fork_and_report(sock, stage2, plan, sock)
    except BaseException as e:   # noqa: BLE001
        fail(sock, e)


def send_notify_fd(k, proc, sock):
    """Loads a filter with SCMP_ACT_NOTIFY rules now, and sends its listener fd to
    the hutch command (which passes it to listenerPath)."""
    from .. import seccomp
    fd = seccomp.load(k, proc["seccomp"])
    proc["seccomp"] = None
    try:
        channel.send(sock, {"t": "seccomp"})
        channel.send_fds(sock, [fd])
    finally:
        os.close(fd)
    reply = channel.recv(sock)
    if reply is None or reply.get("t") != "ok":
        os._exit(1)


def fork_and_report(sock, fn, *args):
    """Forks a child that runs ``fn(*args)`` (its errors go to the parent as one
    line), reports the child's pid, and exits: how stage1 and the exec helper
    hand over to a child in the new pid namespace."""
    try:
        pid = os.fork()
    except BlockingIOError as e:
        raise HutchError(f"fork the container's first process: {e.strerror} (a pids "
                         "limit of its cgroup or of a parent cgroup, or RLIMIT_NPROC, "
                         "is reached)", e.errno) from None
    if pid == 0:
        try:
            fn(*args)
        except BaseException as e:   # noqa: BLE001 - reported to the parent
            fail(sock, e)
        os._exit(1)
    channel.send(sock, {"t": "pid", "pid": pid})
    os._exit(0)


def state_json(plan, pid, status):
    from .. import jsonlite
    return jsonlite.dumps({"ociVersion": plan["oci_version"], "id": plan["id"],
                           "status": status, "pid": pid, "bundle": plan["bundle"],
                           "annotations": plan["annotations"]})


def stage2(plan, sock):
    k = kernel()
    from .. import hooks
    from ..rootfs.setup import Rootfs
    from . import finalize
    proc = plan["process"]
    msg = channel.recv(sock)
    if msg is None:
        os._exit(1)
    hostpid = msg["pid"]
    if msg.get("sources"):
        # bind sources the hutch command opened in this mount namespace for us
        plan["source_fds"] = dict(zip(msg["sources"],
                                      channel.recv_fds(sock, len(msg["sources"]))))
    k.prctl(K.PR_SET_DUMPABLE, 0, what="make the init non-dumpable")
    k.setsid()
    finalize.set_rlimits(proc["rlimits"])
    if proc["oom_score_adj"] is not None:
        finalize.set_oom_score_adj(proc["oom_score_adj"])
    fifo_fd = plan["fifo_fd"]
    hostproc = os.open("/proc", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    rf = None
    if plan["new_mountns"]:
        rf = Rootfs(k, plan)
        rf.prepare()
        rf.do_mounts()
        for fd in (plan.pop("source_fds", None) or {}).values():
            os.close(fd)        # host directories: not one is kept past the mounts
        rf.make_devices()
    if plan["loopback"]:
        from ..network import loopback_up
        loopback_up(k)
    if plan["sysctl"]:
        from ..namespaces import write_sysctls
        write_sysctls(plan["sysctl"])
    channel.send(sock, {"t": "hooks"})
    reply = channel.recv(sock)
    if reply is None or reply.get("t") != "ok":
        os._exit(1)
    if rf is not None and plan["hooks"].get("createContainer"):
        os.fchdir(rf.rootfd)    # the hooks run in the rootfs, as runc runs them
    hooks.run_hooks(plan["hooks"], "createContainer", state_json(plan, hostpid,
                                                                 "creating"))
    console = None
    if proc["terminal"]:
        console = finalize.open_console(k, rf, plan)
    if rf is not None:
        rf.mask_paths()
        rf.readonly_paths()
        if console is not None:
            rf.console(console)
        rf.dev_readonly()
        rf.enter(plan["no_pivot"])
        rf.close()
        finalize.reopen_dev_null()
    elif plan["root"]:
        # no mount namespace of its own (none, or one joined by path): hutch makes
        # no mounts there (they would land in a namespace that is not the
        # container's), but the process gets the bundle's root, as with runc
        k.chroot(plan["root"])
        os.chdir("/")
    if plan["hostname"] is not None:
        k.sethostname(plan["hostname"])
    if plan["domainname"] is not None:
        k.setdomainname(plan["domainname"])
    if not plan["no_new_keyring"]:
        k.join_session_keyring(None)
    if console is not None:
        finalize.take_console(k, console)
    exe, env = finalize.prepare_exec(proc)
    finalize.chdir_or_defer(k, proc)
    if proc["seccomp"] and proc["seccomp"]["notify"]:
        send_notify_fd(k, proc, sock)
    channel.send(sock, {"t": "ready"})
    os.close(sock)
    # wait for `hutch start`: opening the fifo for writing blocks until it reads
    if plan["userns"]:
        # a non-dumpable task's /proc/self/fd belongs to the host's root, which the
        # container's root is not; the user namespace already keeps it from the host
        k.prctl(K.PR_SET_DUMPABLE, 1, what="make the init dumpable")
    try:
        wfd = os.open(f"self/fd/{fifo_fd}", os.O_WRONLY | os.O_CLOEXEC,
                      dir_fd=hostproc)
    except OSError as e:
        os.write(2, f"hutch: container init: open exec.fifo: {e.strerror}\n".encode())
        os._exit(1)
    os.close(fifo_fd)
    if not (proc.get("apparmor") or proc.get("selinux")):
        os.close(hostproc)      # else kept (close-on-exec) to write the labels
        hostproc = None
    if wfd < plan["keep_fds"]:
        import fcntl
        nfd = fcntl.fcntl(wfd, fcntl.F_DUPFD_CLOEXEC, plan["keep_fds"])
        os.close(wfd)
        wfd = nfd
    try:
        os.write(wfd, b"\0")
        started = state_json(plan, hostpid, "created")
        finalize.exec_process(
            k, proc, exe, env, plan["keep_fds"], hostproc,
            last=(lambda: hooks.run_hooks(plan["hooks"], "startContainer", started))
            if plan["hooks"].get("startContainer") else None)
    except BaseException as e:   # noqa: BLE001 - reported to `hutch start`
        text = str(e) if isinstance(e, HutchError) else \
            HutchError.from_os("start the container process", e).args[0] \
            if isinstance(e, OSError) else f"{type(e).__name__}: {e}"
        try:
            os.write(wfd, text.encode())
        finally:
            os._exit(127)


