"""A new process in a running container (`hutch exec`), or in any process's
namespaces (`hutch enter`).  This is the parent side; the helper and the child are
in :mod:`hutch.process.enter`, whose docstring describes the whole sequence.

The process gets the init's confinement unless told otherwise: the user, env,
capabilities, no_new_privs, rlimits, oom_score_adj and LSM labels recorded when
the container was created.  An exec ``process.json`` (what engines send) replaces
the values it gives; capabilities, rlimits and labels it leaves out fall back to
the init's, as in runc.
"""

import errno
import os

from ..errors import HutchError, failpoint
from ..spec.config import NAMESPACES
from .plan import Options

CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


class ExecOptions(Options):
    """runc's exec flags that are not about the process itself."""
    detach = False
    pid_file = None
    console_socket = None
    preserve_fds = 0
    ignore_paused = False
    cgroups = ()              # --cgroup [ctrl,...:]path
    source = "config.json"    # what the cwd came from, for the error message
    stdio = None              # (fd, fd, fd): the process's 0, 1, 2 (else hutch's)
    spawn = False             # return the process's pid at once; the caller, a
                              # child subreaper, waits for it (the library)
    helper = None             # a started "enter" process.helper.Helper to use


# --- building the process -------------------------------------------------------
def prepare(root, cid):
    """The container's directory, locked (:func:`exec_in` releases it), and
    the init's confinement (:class:`plan.ExecRecord`)."""
    from .lifecycle import load
    from .plan import ExecRecord
    cdir = load(root, cid)
    try:
        return cdir, ExecRecord.from_record(cdir.data, root)
    except BaseException:
        cdir.unlock()
        raise


def from_process_json(path, base):
    """An exec --process file over ``base`` (see :meth:`ProcessPlan.over_json`)."""
    from .plan import process_json
    data, p = process_json(path)
    return base.over_json(data, p)


def parse_user(spec):
    """``uid[:gid]``, either part numeric or a name looked up in the container.
    Returns (uid, gid, user_name, group_name) with None for what is not given."""
    from ..spec.config import U32
    user, sep, group = spec.partition(":")
    if not user or (sep and not group):
        raise HutchError(f"invalid --user {spec!r}: expected uid[:gid]", errno.EINVAL)
    out = []
    for part in (user, group):
        if not part:
            out.append((None, None))
        elif part.isdigit():
            if int(part) >= U32:
                raise HutchError(f"invalid --user {spec!r}: {part} is out of range",
                                 errno.ERANGE)
            out.append((int(part), None))
        else:
            out.append((None, part))
    return out[0][0], out[1][0], out[0][1], out[1][1]


def apply_overrides(proc, args=None, env=(), cwd=None, user=None, additional_gids=(),
                    caps=(), no_new_privs=False, apparmor=None, process_label=None,
                    tty=None):
    """runc's exec flags over a process (argv form or --process)."""
    from .. import capabilities as C
    if args is not None:
        proc.args = list(args)
    if env:
        keys = {e.partition("=")[0] for e in env}
        proc.env = [e for e in proc.env if e.partition("=")[0] not in keys]
        for e in env:
            if "=" not in e or e.startswith("="):
                raise HutchError(f"invalid --env {e!r}: expected KEY=value",
                                 errno.EINVAL)
            proc.env.append(e)
    if cwd is not None:
        if not cwd.startswith("/"):
            raise HutchError(f"invalid --cwd {cwd!r}: not an absolute path",
                             errno.EINVAL)
        proc.cwd = cwd
    if user is not None:
        uid, gid, uname, gname = parse_user(user)
        if uid is not None:
            proc.uid = uid
        if gid is not None:
            proc.gid = gid
        proc.user_name, proc.group_name = uname, gname
    for g in additional_gids:
        if not g.isdigit():
            raise HutchError(f"invalid --additional-gids {g!r}: not a number",
                             errno.EINVAL)
        if int(g) not in proc.additional_gids:
            proc.additional_gids = proc.additional_gids + [int(g)]
    if caps:
        sets = {k: list(v) for k, v in (proc.capabilities or {}).items()}
        for c in caps:
            if C.number(c) is None:
                raise HutchError(f"invalid --cap {c!r}: unknown capability",
                                 errno.EINVAL)
            name = C.NAMES[C.number(c)]
            for k in CAP_SETS:
                if name not in sets.setdefault(k, []):
                    sets[k].append(name)
        proc.capabilities = sets
    if no_new_privs:
        proc.no_new_privileges = True
    if apparmor:
        proc.apparmor = apparmor
    if process_label:
        proc.selinux = process_label
    if tty is not None:
        proc.terminal = tty
    if not proc.args:
        raise HutchError("exec: no command given (pass COMMAND [ARGS...] or "
                         "--process FILE)", errno.EINVAL)
    return proc


# --- cgroups --------------------------------------------------------------------
def sub_cgroup_paths(paths, specs):
    """The cgroup of each hierarchy for an exec with ``--cgroup [ctrl,...:]path``:
    a sub-cgroup of the container's (which must exist: joining it says so), or
    "/" for the container's own.  runc's phrases."""
    out = dict(paths)
    if not specs:
        return out
    seen = set()
    known = {c for key in paths for c in key.split(",")}
    for spec in specs:
        ctrls, sep, sub = spec.rpartition(":")
        parts = [p for p in sub.split("/") if p and p != "."]
        if ".." in parts:
            raise HutchError(f"invalid --cgroup argument: {sub} is not a sub cgroup "
                             "path (it must be below the container's cgroup)",
                             errno.EINVAL)
        wanted = ctrls.split(",") if sep else None
        for c in wanted or ():
            if c not in known and not (c == "" and "unified" in paths):
                raise HutchError(f"invalid --cgroup argument: unknown controller {c!r} "
                                 f"(the container's: {', '.join(sorted(known))})",
                                 errno.EINVAL)
        matched = False
        for key, path in paths.items():
            names = set(key.split(",")) | ({"unified"} if key == "unified" else set())
            if wanted is not None and not names & set(wanted):
                continue
            if key in seen and wanted is None:
                continue
            matched = True
            seen.add(key)
            out[key] = os.path.join(path, *parts)
        if not matched:
            raise HutchError(f"--cgroup {spec!r}: the container has no cgroup with "
                             f"controller {ctrls!r}", errno.ENOENT)
    return out


# --- exec -----------------------------------------------------------------------
def exec_in(cdir, info, proc, opts=None):
    """Runs ``proc`` (a :class:`ProcessPlan`) in the container whose directory
    ``cdir`` is (locked, from :func:`prepare`), confined as ``info`` (its
    :class:`plan.ExecRecord`).  Returns the exit code (0 at once with
    ``opts.detach``).

    The container's lock is held until the helper that enters the container has
    its plan and the init's pidfd, so that exec is serialised with every other
    verb on the container, and released before anything that can wait (a
    process that waits frozen with --ignore-paused, a foreground exec)."""
    o = opts or ExecOptions()
    try:
        if cdir.lock_fd is None:
            cdir.lock()
            cdir.load()
        return _exec_locked(cdir, info, proc, o)
    finally:
        cdir.unlock()
        if o.helper is not None:      # refused before the helper was used
            o.helper.close()
            o.helper = None


def _exec_locked(cdir, info, proc, o):
    from .record import check
    failpoint("exec:locked")
    d = cdir.data
    status = cdir.status()
    check("exec", status, ignore_paused=o.ignore_paused)
    paths = sub_cgroup_paths(d.cgroup_paths, o.cgroups)
    pidfd = d.pidfd()
    if pidfd is None:
        check("exec", "stopped")
    flags = 0
    for t in info.namespaces:
        flags |= NAMESPACES[t]
    plan = {"process": proc.wire(), "ns_flags": flags, "keep_fds": 3 + o.preserve_fds,
            "no_new_keyring": info.no_new_keyring, "target": f"container {cdir.id}",
            "source": o.source, "gone_msg": "cannot exec in a stopped container",
            "stdio": list(o.stdio) if o.stdio else None}
    strict = info.strict_guard
    if not strict:
        from ..linux.exeguard import may_clear_immutable
        if may_clear_immutable(proc.capabilities, "user" in info.namespaces):
            # from now on the container may hold CAP_LINUX_IMMUTABLE: every later
            # exec must re-exec from the read-only clone too
            strict = True
            d.setdefault("exec", info.to_json())["strict_guard"] = True
            cdir.save()
    notify_state = cdir.oci_state() if proc.seccomp and proc.seccomp["notify"] \
        else None
    spare, o.helper = o.helper, None    # run_entry owns it from here
    return run_entry(plan, pidfd, paths, o.detach, o.pid_file, o.console_socket, strict,
                     notify_state, started=cdir.unlock, keep_from=(cdir.lock_fd,),
                     frozen=status == "paused", spawn=o.spawn, spare=spare)


def run_entry(plan, pidfd, cgroup_paths, detach=False, pid_file=None,
              console_socket=None, strict=True, notify_state=None, started=None,
              keep_from=(), frozen=False, spawn=False, spare=None):
    """Starts the plan's process through a helper (owns ``pidfd``) and, unless
    ``detach``, waits for it.  ``started()`` is called once the helper has the
    plan and is in the cgroups (exec releases the container's lock there);
    ``keep_from``: fds a newly started helper must not inherit (that lock).
    ``frozen``: the cgroups are frozen (exec --ignore-paused), so the helper
    stops as it joins them: ``started()`` comes before it says so.  ``spawn``:
    returns the process's pid once it runs, for the caller to wait for."""
    from ..linux import exeguard
    from ..linux import kernel as K
    from ..process import channel, helper
    from . import console
    proc = plan["process"]
    csock = proxy = -1
    try:
        if proc["terminal"]:
            if console_socket:
                csock = console.connect(console_socket)
            elif detach:
                raise HutchError("cannot allocate a tty when hutch detaches without "
                                 "--console-socket", errno.EINVAL)
            else:
                proxy, csock = channel.socketpair()
        elif console_socket:
            raise HutchError("cannot use --console-socket without a terminal (pass "
                             "--tty, or terminal: true in process.json)", errno.EINVAL)
    except BaseException:
        os.close(pidfd)
        if spare is not None:
            spare.close()
        raise
    h = helper.take(close=tuple(fd for fd in keep_from if fd is not None),
                    kind="enter", strict=strict, spare=spare)
    hpid, sock, child = h.pid, h.sock, 0
    h.pid, h.sock = 0, -1
    try:
        # the helper joins the cgroups itself, meanwhile (in frozen ones it would
        # stop there: then once it has the plan, see started below)
        plan["cgroup_paths"] = cgroup_paths
        if not frozen:
            helper.prepare_enter(sock, plan)
        K.kernel().prctl(K.PR_SET_CHILD_SUBREAPER, 1)
        exeguard.protect_self()
        if not (detach or spawn):
            console.hold_signals()
        from ..log import debug
        debug(f"nsexec container setup: the exec helper is pid {hpid}")
        try:
            failpoint("exec:helper")
            try:
                helper.send_enter(sock, plan, pidfd, csock)
            except OSError:
                pass    # the helper died early (a cgroup it could not join): read why
        finally:
            os.close(pidfd)
            if csock >= 0:
                os.close(csock)
        if not frozen:
            helper.wait_joined(sock)    # in the cgroups before the lock goes
        if started is not None:
            # the helper holds the pidfd and is in the cgroups: from here on a
            # concurrent verb cannot make it enter anything else, and the wait
            # for the program may be long (--ignore-paused waits for resume)
            started()
        failpoint("exec:sent")
        if frozen:
            helper.wait_joined(sock)
        msg = channel.recv(sock)
        os.waitpid(hpid, 0)
        hpid = 0
        if msg is None:
            raise HutchError("the exec helper exited during setup")
        if msg["t"] == "error":
            raise HutchError(msg["msg"], msg.get("errno"))
        child = msg["pid"]
        debug(f"child process in init(): the exec'd process is pid {child}")
        failpoint("exec:pid")
        msg = channel.recv(sock)      # EOF: the program was exec'd
        if msg is not None and msg.get("t") == "seccomp":
            _pass_notify_fd(sock, proc["seccomp"], child, notify_state)
            msg = channel.recv(sock)
        if msg is not None and msg.get("t") == "error":
            raise HutchError(msg["msg"], msg.get("errno"))
        debug("setns_init: about to exec: the program runs")
        failpoint("exec:started")
        if pid_file:
            from .record import write_pid_file
            write_pid_file(pid_file, child)
    except BaseException:
        import _signal as signal
        for pid in (hpid, child):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        if proxy >= 0:
            os.close(proxy)
        console.release_signals()
        raise
    finally:
        os.close(sock)
    if detach:
        return 0
    if spawn:
        return child
    master = console.recv_master(proxy) if proxy >= 0 else None
    return console.wait_child(child, master)


def _pass_notify_fd(sock, prog, pid, state):
    from ..process import channel
    from ..seccomp import send_to_listener
    fd = channel.recv_fds(sock, 1)[0]
    try:
        send_to_listener(prog["listener_path"], fd, pid, state or {},
                         prog["listener_metadata"])
    finally:
        os.close(fd)
    channel.send(sock, {"t": "ok"})


# --- enter ----------------------------------------------------------------------
def target_namespaces(pid, wanted=None):
    """The namespace types to join for `hutch enter`: ``wanted`` (checked), or
    every type in which ``pid`` differs from hutch."""
    from ..spec.config import NS_PROC_NAME
    out = []
    for t in (wanted or NAMESPACES):
        if t not in NAMESPACES:
            raise HutchError(f"unknown namespace type {t!r} (one of "
                             f"{', '.join(NAMESPACES)})", errno.EINVAL)
        name = NS_PROC_NAME[t]
        try:
            theirs = os.stat(f"/proc/{pid}/ns/{name}")
        except FileNotFoundError:
            if wanted:
                raise HutchError(f"{t} namespaces are not supported by this kernel",
                                 errno.EOPNOTSUPP) from None
            continue
        except OSError as e:
            raise HutchError(f"read the {t} namespace of pid {pid}: {e.strerror}",
                             e.errno) from None
        ours = os.stat(f"/proc/self/ns/{name}")
        if wanted or (theirs.st_ino, theirs.st_dev) != (ours.st_ino, ours.st_dev):
            if t == "user" and (theirs.st_ino, theirs.st_dev) == (ours.st_ino,
                                                                   ours.st_dev):
                continue    # the kernel refuses to re-enter one's own user namespace
            out.append(t)
    return out


def enter(pid, proc, namespaces=None, join_cgroups=False, detach=False,
          pid_file=None):
    """Runs ``proc`` in the namespaces (and optionally the cgroups) of ``pid``."""
    from ..cgroups import hierarchies
    try:
        pidfd = os.pidfd_open(pid)
    except ProcessLookupError:
        raise HutchError(f"no process with pid {pid}", errno.ESRCH) from None
    except OSError as e:
        raise HutchError(f"open pid {pid}: {e.strerror}", e.errno) from None
    try:
        types = target_namespaces(pid, namespaces)
        paths = {}
        if join_cgroups:
            from ..cgroups import own_cgroup
            for hy in hierarchies():
                rel = own_cgroup(hy.key, pid)
                paths[hy.key] = os.path.join(hy.mountpoint, rel.lstrip("/"))
    except BaseException:
        os.close(pidfd)
        raise
    flags = 0
    for t in types:
        flags |= NAMESPACES[t]
    if "mount" not in types and proc.cwd is None:
        proc.cwd = os.getcwd()
    plan = {"process": proc.wire(), "ns_flags": flags, "keep_fds": 3, "no_new_keyring": True,
            "target": f"pid {pid}", "source": "--cwd",
            "gone_msg": f"pid {pid} exited before hutch could enter it"}
    return run_entry(plan, pidfd, paths, detach, pid_file)
