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

import errno
import os

from . import channel
from ..errors import HutchError
from ..linux import kernel as K
from ..linux.kernel import kernel


def fail(sock, e):
    """Reports an exception to the parent as one line, then exits."""
    if isinstance(e, HutchError):
        msg, code = str(e), e.errno
    elif isinstance(e, OSError):
        msg, code = HutchError.from_os("container init", e).args[0], e.errno
    else:
        msg, code = f"container init: {type(e).__name__}: {e}", None
    try:
        channel.send(sock, {"t": "error", "msg": msg, "errno": code})
    finally:
        os._exit(1)


def preload():
    """Imports everything the container side needs, before the plan arrives (the
    helper does this while the parent works) and before pivot_root (after it, the
    host's Python library is out of reach)."""
    from .. import capabilities, hooks, jsonlite, lsm, namespaces  # noqa: F401
    from .. import seccomp  # noqa: F401
    from ..cgroups import manager  # noqa: F401
    from ..rootfs import setup  # noqa: F401
    from . import finalize  # noqa: F401
    import _socket, fcntl, resource, struct  # noqa: F401,E401
    K._lib()        # ctypes
    K._pyapi()      # fork_into_cgroup's bindings


def join_cgroups(p):
    """stage1 puts itself in the container's cgroups, first of all (the paths
    are the host's, and a joined user or cgroup namespace could hide them).
    Returns the v2 cgroup for the init to be born in (:func:`open_v2`), or None:
    none, or joined here already.  With a user namespace or a joined cgroup
    namespace the v2 cgroup is joined here: a child born into it would be
    checked against those namespaces' credentials and view, not the host's.
    ``p``: the plan, or the prepare message (the same keys)."""
    paths = p["cgroup_paths"]
    if not paths:
        return None
    from ..cgroups.manager import join_self
    defer = not p["userns"] and "cgroup" not in p["join_paths"]
    return join_self(paths, defer_v2=defer)


def _unshare(k, p):
    # a new cgroup namespace is the init's to make, once it is in its
    # cgroups (it is born in the v2 one)
    flags = p["new_flags"] & ~K.CLONE_NEWCGROUP
    if flags:
        k.unshare(flags)
    if p["time_offsets"]:
        with open("/proc/self/timens_offsets", "w") as f:
            f.write(p["time_offsets"])


def prepare(msg, sock):
    """What stage1 does before its plan arrives (:func:`launch.prepare` sends
    this while the hutch command validates the config and builds the plan): it
    joins the cgroups and, when ``msg["early"]`` (no user namespace, nothing
    joined by path), creates the new namespaces.  Returns where stage1 resumes."""
    try:
        done = {"cgroup": join_cgroups(msg), "unshared": False}
        if msg["early"]:
            _unshare(kernel(), msg)
            done["unshared"] = True
        return done
    except BaseException as e:   # noqa: BLE001
        fail(sock, e)


def stage1(plan, sock, prepared=None):
    k = kernel()
    try:
        cgroup = prepared["cgroup"] if prepared else join_cgroups(plan)
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
        if not (prepared and prepared["unshared"]):
            _unshare(k, plan)
        fork_and_report(sock, stage2, plan, sock, cgroup=cgroup)
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


def _fork(cgroup):
    if cgroup is None:
        return os.fork()
    dfd, pfd, path = cgroup
    try:
        return kernel().fork_into_cgroup(dfd)
    except OSError as e:
        if e.errno in (errno.EAGAIN, errno.ENOMEM):     # fork would fail alike
            raise
    # the kernel cannot (older than 5.7) or will not (a permission, the v2
    # no-internal-process rule): join by writing, which gives runc's error
    try:
        os.write(pfd, b"0")
    except OSError as e:
        raise HutchError(f"join cgroup {path}: {e.strerror}", e.errno) from None
    return os.fork()


def fork_and_report(sock, fn, *args, cgroup=None):
    """Forks a child that runs ``fn(*args)`` (its errors go to the parent as one
    line), reports the child's pid, and exits: how stage1 and the exec helper
    hand over to a child in the new pid namespace.  ``cgroup``: the v2 cgroup
    the child is born in (:func:`hutch.cgroups.manager.open_v2`), closed here."""
    # the child waits until its pid is on the channel: an error it reports
    # must never come first, or the reader would not know whose zombie to reap
    # (seen under load: a thread of the library then waited on the init for
    # ever, which the unreaped child kept in its pid namespace)
    told_r, told_w = os.pipe2(os.O_CLOEXEC)
    try:
        pid = _fork(cgroup)
    except BlockingIOError as e:
        raise HutchError(f"fork the container's first process: {e.strerror} (a pids "
                         "limit of its cgroup or of a parent cgroup, or RLIMIT_NPROC, "
                         "is reached)", e.errno) from None
    finally:
        if cgroup is not None:
            os.close(cgroup[0])
            os.close(cgroup[1])
    if pid == 0:
        try:
            os.close(told_w)
            os.read(told_r, 1)      # EOF once the parent has told
            os.close(told_r)
            fn(*args)
        except BaseException as e:   # noqa: BLE001 - reported to the parent
            fail(sock, e)
        os._exit(1)
    os.close(told_r)
    channel.send(sock, {"t": "pid", "pid": pid})
    os.close(told_w)
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
    if plan["new_flags"] & K.CLONE_NEWCGROUP:
        k.unshare(K.CLONE_NEWCGROUP)
    msg = channel.recv(sock)
    if msg is None:
        os._exit(1)
    hostpid = msg["pid"]
    srcs, attached = msg.get("sources") or [], msg.get("attached") or []
    if srcs or attached:
        fds = channel.recv_fds(sock, len(srcs) + len(attached))
        # bind sources the hutch command opened in this mount namespace for us,
        # and clones of mounts an attachment asked for
        plan["source_fds"] = dict(zip(srcs, fds[:len(srcs)]))
        plan["attached_fds"] = list(zip(attached, fds[len(srcs):]))
    for dest, path in msg.get("attached_paths") or ():
        # what a rootless hutch could not clone: cloned here, in our namespace
        plan.setdefault("attached_fds", []).append((dest, k.open_tree(
            K.AT_FDCWD, path, K.OPEN_TREE_CLONE | K.OPEN_TREE_CLOEXEC,
            what=f"clone {path} for {dest}")))
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
        rf.mount_attached()
    if plan["loopback"]:
        from ..namespaces import loopback_up
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


