"""The parent side of the fork chain (runs in `hutch create`).

The parent forks stage1, writes the user namespace's id maps, puts stage1 in the
container's cgroup (so the init is there before any user code runs), runs the
prestart and createRuntime hooks, and waits for the init to report ready.  It is a
child subreaper meanwhile, so that a failed init can be reaped and nothing is left.
"""

import errno
import os
import _signal as signal

from . import channel
from ..errors import HutchError, failpoint
from ..linux import kernel as K
from ..linux.kernel import kernel


def prepare(h, cfg, cgroup_paths):
    """Gives the helper (stage1-to-be) what it can do before the plan, so that
    it does it while this command validates the config and builds the plan: join
    the container's cgroups and, with no user namespace to map and nothing
    joined by path, create the new namespaces (:func:`init.prepare`).  Errors
    reach :func:`spawn` through the channel."""
    from ..namespaces import new_flags, time_offsets_text
    early = not cfg.has_ns("user") and not any(cfg.namespaces.values())
    msg = {"t": "prepare", "cgroup_paths": cgroup_paths, "userns": cfg.has_ns("user"),
           "join_paths": {t: p for t, p in cfg.namespaces.items() if p},
           "early": early, "new_flags": new_flags(cfg.namespaces),
           "time_offsets": time_offsets_text(cfg.time_offsets)}
    try:
        channel.send(h.sock, msg)
    except OSError:
        pass    # the helper died early; spawn reads why


def spawn(plan, h, on_pid, hooks_state, on_rootfs=None, meanwhile=None,
          on_namespaces=None):
    """Starts the container's init through ``h``, a :class:`helper.Helper` that
    becomes stage1 (it joins the container's cgroups itself: :func:`prepare`).
    ``on_pid(pid)`` is called as soon as the init's pid is known (the caller records
    it for crash-safe clean-up); ``hooks_state(pid)`` returns the state JSON for the
    createRuntime hooks; ``on_rootfs()`` runs once the init has made the rootfs
    and its device nodes, before those hooks (the device rules go in there);
    ``meanwhile()`` once they have run, while the init finishes (masks, pivot).
    ``on_namespaces(pid)``: called once the init exists with all its namespaces,
    before it is let go to make its rootfs (the container's attachments).
    The plan's fds are closed here in every case."""
    from .. import hooks
    from . import helper
    from ..linux import exeguard
    from ..log import debug
    k = kernel()
    k.prctl(K.PR_SET_CHILD_SUBREAPER, 1)
    exeguard.protect_self()
    c1, psock, c2 = h.pid, h.sock, None
    # the milestones carry runc's words too: tools and tests match on them
    debug(f"nsexec container setup: the plan goes to stage1 (pid {c1})")
    try:
        try:
            helper.send_plan(h, plan)
        except OSError:
            pass    # the helper died early; its error message is read below
        _close_plan_fds(plan)
        while True:
            msg = channel.recv(psock)
            if msg is None:
                raise HutchError("container init exited during setup" +
                                 _exit_text(c1, c2))
            t = msg["t"]
            if t == "error":
                raise HutchError(msg["msg"], msg.get("errno"))
            if t == "stage1":     # only with a new user namespace
                from ..namespaces import write_id_maps
                write_id_maps(c1, plan["uid_mappings"], plan["gid_mappings"],
                              plan["rootless"])
                channel.send(psock, {"t": "ok"})
            elif t == "pid":
                c2 = msg["pid"]
                debug(f"child process in init(): the container's init is pid {c2}")
                extra = on_namespaces(c2) if on_namespaces is not None else None
                srcs = _bind_sources(plan) if plan["new_user"] and \
                    plan["new_mountns"] else []
                opened = _open_in_mount_ns(c2, srcs) if srcs else []
                clones, by_path = _clone_mounts(extra) if extra and \
                    plan["new_mountns"] else ([], [])
                try:
                    channel.send(psock, {"t": "go", "pid": c2,
                                         "sources": [s for s, _ in opened],
                                         "attached": [d for d, _ in clones],
                                         "attached_paths": by_path})
                    if opened or clones:
                        channel.send_fds(psock, [fd for _, fd in opened + clones])
                finally:
                    for _, fd in opened + clones:
                        os.close(fd)
                # while the init builds its rootfs: stage1 is reaped and the pid
                # recorded (the init cannot outlive this command before it is
                # ready: it exits at the channel's EOF)
                os.waitpid(c1, 0)
                c1 = None
                on_pid(c2)
            elif t == "hooks":
                failpoint("create:rootfs")
                if on_rootfs is not None:
                    on_rootfs()
                state = hooks_state(c2)
                hooks.run_hooks(plan["hooks"], "prestart", state)
                hooks.run_hooks(plan["hooks"], "createRuntime", state)
                channel.send(psock, {"t": "ok"})
                if meanwhile is not None:
                    meanwhile()
            elif t == "seccomp":      # a notify filter: its fd goes to the listener
                from ..seccomp import send_to_listener
                fd = channel.recv_fds(psock, 1)[0]
                prog = plan["process"]["seccomp"]
                try:
                    send_to_listener(prog["listener_path"], fd, c2,
                                     hooks_state(c2, as_json=False),
                                     prog["listener_metadata"])
                finally:
                    os.close(fd)
                channel.send(psock, {"t": "ok"})
            elif t == "ready":
                debug("init: closing the pipe to signal completion (the init is "
                      "ready and waits for start)")
                return c2
    except BaseException:
        for pid in (c2, c1):
            if pid:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        for pid in (c1, c2):
            if pid:
                try:
                    os.waitpid(pid, 0)
                except ChildProcessError:
                    pass
        raise
    finally:
        os.close(psock)


def _bind_sources(plan):
    """The bind mounts' sources, as absolute paths (relative ones are the
    bundle's)."""
    out = []
    for m in plan["mounts"]:
        opts = m["options"] or ()
        if m["type"] == "bind" or "bind" in opts or "rbind" in opts:
            src = m["source"] or ""
            out.append(src if src.startswith("/") else
                       os.path.join(plan["bundle"], src))
    return out


def _open_in_mount_ns(pid, sources):
    """Opens the bind sources (O_PATH) inside the init's new mount namespace,
    with this command's credentials: a container whose root is an unprivileged
    host uid (a user namespace) can then bind a directory only the host's root
    can reach, as runc allows.  The init has not pivoted yet, so its root is the
    host's, seen in its own mount namespace: a walk through /proc/PID/root
    opens each source there without joining the namespace (no fork).  A source
    that cannot be opened is left to the init, whose own error then names it.
    Returns [(source, fd)]."""
    try:
        root = os.open(f"/proc/{pid}/root", os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return []
    out = []
    try:
        for src in sources:
            # symlinks resolved first: an absolute one met in the walk would
            # restart from this command's root, outside the init's namespace
            real = os.path.realpath(src)
            try:
                out.append((src, os.open(real.lstrip("/") or ".",
                                         os.O_PATH | os.O_CLOEXEC, dir_fd=root)))
            except OSError:
                pass
    finally:
        os.close(root)
    return out


def _clone_mounts(mounts):
    """Detached clones, made in this command's mount namespace, of the host paths
    attachments asked to have bound into the container: [(destination, fd)].
    The init attaches each in its own namespace (a clone may come from a mount
    made after the init's namespace was copied, such as the keeper's views).
    A rootless command may not clone (EPERM: no CAP_SYS_ADMIN over the host's
    mount namespace): those come back as [(destination, path)], for the init to
    clone in its own namespace (a file made after it was copied is there too)."""
    k = kernel()
    out, by_path = [], []
    try:
        for src, dest in mounts:
            try:
                out.append((dest, k.open_tree(K.AT_FDCWD, src, K.OPEN_TREE_CLONE |
                                              K.OPEN_TREE_CLOEXEC,
                                              what=f"clone {src} for {dest}")))
            except OSError as e:
                if e.errno != errno.EPERM or os.geteuid() == 0:
                    raise
                by_path.append([dest, src])
    except BaseException:
        for _, fd in out:
            os.close(fd)
        raise
    return out, by_path


def _close_plan_fds(plan):
    for _, fd in plan["join"]:
        os.close(fd)
    plan["join"] = []
    for key in ("console_socket", "fifo_fd"):
        if plan[key] >= 0:
            os.close(plan[key])
            plan[key] = -1


def _exit_text(c1, c2):
    """Why the fork chain closed its channel without a word: the init's (or
    stage1's) exit status.  The channel's EOF means both have closed it, so the
    init is gone or going: wait for it (never long)."""
    import select
    for pid in (c2, c1):
        if not pid:
            continue
        try:
            fd = os.pidfd_open(pid)
        except OSError:
            continue
        try:
            select.select([fd], [], [], 2.0)
            _, status = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            continue
        finally:
            os.close(fd)
        if status:
            code = os.waitstatus_to_exitcode(status)
            if code >= 0:
                return f" (exit status {code})"
            if -code == signal.SIGKILL:
                return (" (killed by SIGKILL: if a memory limit applies to its cgroup "
                        "or a parent cgroup, the OOM killer)")
            return f" (killed by signal {-code})"
    return ""
