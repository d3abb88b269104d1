"""The container and its lifecycle: create, start, kill, delete, state, list.

creating -> created -> running -> stopped.  No hutch process stays behind: the
init waits for `start` on exec.fifo, and status is derived from the init's pid and
start time each time it is asked for.
"""

import _signal as signal
import os

from .errors import ConfigError, HutchError, NotFound, NotRunning, failpoint
from .state import ContainerDir, now_rfc3339, proc_stat, validate_id, write_pid_file


def _plain_mounts(cfg):
    return [{"destination": m.destination, "type": m.type, "source": m.source,
             "options": m.options} for m in cfg.mounts]


def _process_plan(p, seccomp=None):
    return {"args": p.args, "env": p.env, "cwd": p.cwd, "uid": p.uid, "gid": p.gid,
            "additional_gids": p.additional_gids, "umask": p.umask,
            "capabilities": p.capabilities, "no_new_privileges": p.no_new_privileges,
            "rlimits": p.rlimits, "oom_score_adj": p.oom_score_adj,
            "terminal": p.terminal, "console_size": p.console_size, "seccomp": seccomp,
            "apparmor": p.apparmor_profile, "selinux": p.selinux_label}


def validate(cfg):
    """Checks that need the host, before anything is changed."""
    from . import capabilities
    from .namespaces import check_sysctls
    if cfg.process is None:
        raise ConfigError("config.json: process: is required")
    if not cfg.new_ns("mount") and (cfg.masked_paths or cfg.readonly_paths):
        # without a mount namespace of its own (none, or one joined by path) the
        # container's mounts are not hutch's to make, as with runc
        raise ConfigError("config.json: unable to restrict sys entries without a "
                          "private MNT namespace (linux.maskedPaths and "
                          "linux.readonlyPaths need a new mount namespace)")
    if not os.path.isdir(cfg.root_path):
        raise ConfigError(f"config.json: root.path: {cfg.root_path} is not a directory", 2)
    # a joined uts namespace is the container's too: its names may be set
    if cfg.hostname and not cfg.has_ns("uts"):
        raise ConfigError("config.json: hostname: unable to set hostname without a "
                          "private UTS namespace")
    if cfg.domainname and not cfg.has_ns("uts"):
        raise ConfigError("config.json: domainname: unable to set domainname without a "
                          "private UTS namespace")
    check_sysctls(cfg.sysctl, {t for t, p in cfg.namespaces.items() if not p})
    if cfg.process.capabilities:
        capabilities.check_available(cfg.process.capabilities,
                                     capabilities.current_bounding())
        skipped = capabilities.unraisable_ambient(cfg.process.capabilities)
        if skipped:
            from .log import debug
            debug("ambient capabilities not raised, as they are not both permitted "
                  "and inheritable: " + ", ".join(skipped))
    from . import lsm
    lsm.check(cfg.process.apparmor_profile, cfg.process.selinux_label,
              "config.json: process")
    if cfg.mount_label and not lsm.selinux_active():
        raise ConfigError(f"config.json: linux.mountLabel {cfg.mount_label!r} was "
                          "requested, but SELinux is not enabled on this host "
                          f"({lsm.SELINUX_FS} is not mounted)", 95)


def listen_fds():
    """Sockets passed by systemd-style socket activation (LISTEN_FDS)."""
    n = os.environ.get("LISTEN_FDS")
    if not n:
        return 0
    pid = os.environ.get("LISTEN_PID")
    if pid and pid != str(os.getpid()):
        return 0
    try:
        return max(0, int(n))
    except ValueError:
        return 0


def _user_name(uid):
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def is_rootless(flag="auto"):
    """--rootless true|false|auto: auto means "not root"."""
    return flag == "true" or (flag == "auto" and os.geteuid() != 0)


def _wants_limits(resources):
    """True if linux.resources asks for anything but the device list (which a
    user namespace enforces anyway: no mknod, no device access beyond the host's
    own permissions)."""
    return any(v not in (None, {}, []) for k, v in (resources or {}).items()
               if k != "devices")


def create(root, cid, bundle, console_socket=None, pid_file=None, no_pivot=False,
           no_new_keyring=False, preserve_fds=0, cfg=None, console_fd=-1,
           rootless=None):
    """Creates a container from the bundle's config.json (or from ``cfg``, a
    parsed Config, as the sandbox does).  ``console_fd`` is an already connected
    console socket (used by `run` when it proxies the terminal itself).
    ``rootless``: None means "if not root"."""
    from .cgroups.manager import Manager
    from .hooks import hooks_to_plain
    from .namespaces import new_flags, open_join_fds, time_offsets_text
    from .process import helper, launch
    from .spec.config import load_config
    from . import jsonlite
    validate_id(cid)
    bundle = os.path.abspath(bundle)
    if cfg is None:
        cfg = load_config(bundle)
    if rootless is None:
        rootless = is_rootless()
    if rootless and not cfg.new_ns("user") and not cfg.has_ns("user"):
        raise ConfigError("config.json: linux.namespaces: rootless containers need a "
                          "user namespace (hutch spec --rootless writes one)", 1)
    cdir = ContainerDir(root, cid)
    cdir.make()
    state = {"ociVersion": cfg.oci_version, "id": cid, "status": "creating", "pid": 0,
             "bundle": bundle, "rootfs": cfg.root_path, "created": now_rfc3339(),
             "annotations": cfg.annotations, "owner": _user_name(os.geteuid()),
             "hooks": hooks_to_plain({k: v for k, v in cfg.hooks.items()
                                      if k in ("poststart", "poststop")})}
    mgr = None
    h = None
    pid = 0
    join = []
    csock = -1
    try:
        failpoint("create:dir")
        mgr = Manager.for_container(cid, cfg.cgroups_path)
        state["cgroup"] = mgr.to_state()
        cdir.save(state)
        os.mkfifo(cdir.fifo, 0o622)
        os.chmod(cdir.fifo, 0o622)     # past the umask: a user-namespace root writes it
        failpoint("create:state")
        try:
            mgr.create()
        except HutchError as e:
            if not rootless or e.errno not in (1, 13, 30):
                raise
            # rootless, and the cgroup tree is not delegated to this user
            if _wants_limits(cfg.resources):
                raise HutchError(f"rootless: linux.resources needs cgroups, but {e} "
                                 "(the cgroup tree is not delegated to uid "
                                 f"{os.geteuid()}); remove linux.resources or run as "
                                 "root", e.errno) from None
            from .log import warn
            warn(f"rootless: running without cgroups ({e}): uid {os.geteuid()} has "
                 "no delegated cgroup tree, so limits, pause, update and stats are "
                 "unavailable")
            try:
                mgr.destroy_created()
            except HutchError:
                pass
            mgr = None
        if mgr is not None and not set(mgr.paths.values()) <= set(mgr.created):
            # a cgroup that was there already (only then is it worth a look)
            n = len(mgr.pids())
            if n:
                from .log import warn
                warn(f"container's cgroup is not empty: {n} process(es) found; they "
                     "share its limits, and a delete of this container kills them")
        if mgr is not None and mgr.is_frozen():
            # an init put in a frozen cgroup would wait there forever (runc's words)
            raise HutchError("container's cgroup unexpectedly frozen: thaw "
                             f"{mgr.paths.get('freezer') or mgr.paths.get('unified')} "
                             "(or its parent) first", 16)
        state["cgroup"] = mgr.to_state() if mgr else None
        cdir.save()
        failpoint("create:cgroups")
        # the helper that becomes the init joins the cgroups (and makes the
        # namespaces) while the checks below run: process/launch.py, prepare
        from .linux.exeguard import may_clear_immutable
        strict = may_clear_immutable(cfg.process.capabilities if cfg.process else None,
                                     cfg.has_ns("user"))
        h = helper.take(close=(cdir.lock_fd,), strict=strict)
        launch.prepare(h, cfg, mgr.paths if mgr else {})
        failpoint("create:helper")
        validate(cfg)
        if mgr is not None:
            mgr.apply(cfg.resources, devices=False)
        failpoint("create:resources")
        nlisten = listen_fds()
        prog = None
        if cfg.seccomp is not None:
            from . import seccomp
            prog = seccomp.compile(cfg.seccomp,
                                   cache_dir=os.path.join(root, ".seccomp-cache"))
        proc = _process_plan(cfg.process, prog)
        if nlisten:
            proc["env"] = proc["env"] + [f"LISTEN_FDS={nlisten}", "LISTEN_PID=1"]
        join = open_join_fds(cfg.namespaces)
        if console_socket:
            csock = _connect(console_socket)
        elif console_fd >= 0:
            csock = os.dup(console_fd)
        plan = {
            "id": cid, "oci_version": cfg.oci_version, "bundle": bundle,
            "annotations": cfg.annotations, "root": cfg.root_path,
            "rootfs_propagation": cfg.rootfs_propagation,
            "root_readonly": cfg.root_readonly, "mounts": _plain_mounts(cfg),
            "devices": cfg.devices, "masked_paths": cfg.masked_paths,
            "readonly_paths": cfg.readonly_paths, "new_mountns": cfg.new_ns("mount"),
            "userns": cfg.has_ns("user"), "new_user": cfg.new_ns("user"),
            "new_cgroupns": cfg.new_ns("cgroup"),
            "cgroup_paths": mgr.paths if mgr else {}, "rootless": rootless,
            "hostname": cfg.hostname, "domainname": cfg.domainname,
            "sysctl": cfg.sysctl, "join": join,
            "join_paths": {t: p for t, p in cfg.namespaces.items() if p},
            "new_flags": new_flags(cfg.namespaces),
            "time_offsets": time_offsets_text(cfg.time_offsets),
            "uid_mappings": cfg.uid_mappings, "gid_mappings": cfg.gid_mappings,
            "process": proc, "hooks": hooks_to_plain(cfg.hooks), "no_pivot": no_pivot,
            "no_new_keyring": no_new_keyring, "console_socket": csock,
            "fifo_fd": os.open(cdir.fifo, os.O_PATH | os.O_CLOEXEC), "keep_fds": 3 + nlisten + preserve_fds,
            "loopback": cfg.new_ns("network"), 
            "state_dir": cdir.path,
        }

        def on_pid(p):
            nonlocal pid
            pid = p
            state["pid"] = p
            st = proc_stat(p)
            state["starttime"] = st[1] if st else 0
            cdir.save()
            failpoint("create:pid")

        def fill_state():
            # what `hutch exec` needs to give its processes the init's
            # confinement (made while the init finishes its rootfs)
            state["exec"] = {"process": {k: v for k, v in proc.items() if k not in (
                "args", "terminal", "console_size", "seccomp")},
                "namespaces": sorted(cfg.namespaces), "no_new_keyring": no_new_keyring,
                "strict_guard": strict}
            from .spec.config import checkpoint_info
            state["criu"] = dict(checkpoint_info(cfg, bundle), rootless=rootless)
            if prog is not None:
                from .seccomp import to_state
                state["exec"]["process"]["seccomp"] = to_state(prog)

        def hooks_state(p, as_json=True):
            st = {"ociVersion": cfg.oci_version, "id": cid, "status": "creating",
                  "pid": p, "bundle": bundle, "annotations": cfg.annotations}
            return jsonlite.dumps(st) if as_json else st

        join, csock = [], -1      # spawn owns (and closes) the plan's fds now
        h, helper_h = None, h
        failpoint("create:spawn")
        launch.spawn(plan, helper_h, on_pid, hooks_state,
                     on_rootfs=(lambda: mgr.apply_devices(cfg.resources))
                     if mgr is not None else None, meanwhile=fill_state)
        failpoint("create:ready")
        state["status"] = "created"
        cdir.save()
        failpoint("create:saved")
        if pid_file:
            write_pid_file(pid_file, pid)
        failpoint("create:done")
    except BaseException:
        if h is not None:
            h.close()
        for _, fd in join:
            os.close(fd)
        if csock >= 0:
            os.close(csock)
        undo(pid, state.get("starttime"), mgr)
        try:
            cdir.remove()
        except HutchError as e:     # the create's own error matters more
            from .log import warn
            warn(str(e))
        raise
    finally:
        cdir.unlock()
    return state


def undo(pid, starttime, mgr):
    """Rolls back a create or restore that failed part-way: the init (if any) and
    the cgroups it made go; the caller removes the state directory."""
    if pid:
        _kill_wait(pid, starttime)
    if mgr is not None:
        try:
            mgr.destroy_created()
        except HutchError:
            pass


def _connect(path):
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise HutchError(f"connect to --console-socket {path}: {e.strerror}",
                         e.errno) from None
    return s.detach()


def _pidfd(pid, starttime):
    """A pidfd for the init, or None if it is gone (or the pid was reused)."""
    try:
        fd = os.pidfd_open(pid)
    except (ProcessLookupError, OSError):
        return None
    st = proc_stat(pid)
    if st is None or st[1] != starttime or st[0] in ("Z", "X"):
        os.close(fd)
        return None
    return fd


def _kill_wait(pid, starttime, timeout=10.0):
    fd = _pidfd(pid, starttime)
    if fd is None:
        return
    try:
        signal.pidfd_send_signal(fd, signal.SIGKILL)
        import select
        select.select([fd], [], [], timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


def load(root, cid, lock=True):
    validate_id(cid)
    cdir = ContainerDir(root, cid)
    if lock:
        cdir.lock()
    try:
        cdir.load()
    except BaseException:
        cdir.unlock()
        raise
    return cdir


def start(root, cid):
    import select
    cdir = load(root, cid)
    with cdir:
        failpoint("start:locked")
        status = cdir.status()
        if status == "stopped":
            raise HutchError("cannot start a container that has stopped")
        if status != "created":
            raise HutchError(f"cannot start an already {status} container")
        d = cdir.data
        # the pidfd first: opening exec.fifo releases the init, whose program may
        # exit at once (a zombie is "stopped" to _pidfd); from here on the pidfd
        # tells whether the init that was released is the one that went away
        pfd = _pidfd(d["pid"], d.get("starttime"))
        if pfd is None:
            raise HutchError("cannot start a container that has stopped")
        try:
            ffd = os.open(cdir.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            os.close(pfd)
            raise HutchError("cannot start an already running container") from None
        failpoint("start:released")
        got = b""
        acked = False
        try:
            while True:
                r, _, _ = select.select([ffd, pfd], [], [])
                if ffd in r:
                    chunk = os.read(ffd, 4096)
                    if chunk:
                        got += chunk
                        acked = True
                        continue
                    break       # the init closed exec.fifo: its exec succeeded
                if pfd in r and ffd not in r:
                    # the init exited; drain what it wrote
                    try:
                        got += os.read(ffd, 4096)
                    except BlockingIOError:
                        pass
                    if not acked and not got:
                        raise HutchError("container init exited before start")
                    break
        finally:
            os.close(ffd)
            os.close(pfd)
        failpoint("start:ran")
        try:
            os.unlink(cdir.fifo)
        except FileNotFoundError:
            pass
        err = got[1:].decode(errors="replace").strip()
        if err:
            raise HutchError(err)
        d["status"] = "running"
        cdir.save()
        failpoint("start:saved")
        if d.get("hooks", {}).get("poststart"):
            st = cdir.oci_state()
            from . import hooks, jsonlite
            try:
                hooks.run_hooks(d["hooks"], "poststart", jsonlite.dumps(st))
            except HutchError as e:
                from .log import warn
                warn(str(e))


def kill(root, cid, sig, all_procs=False):
    cdir = load(root, cid)
    with cdir:
        d = cdir.data
        status = cdir.status()
        if status == "stopped" and not (all_procs and d.get("cgroup")):
            raise NotRunning("container not running", 3)
        if all_procs and d.get("cgroup"):
            # as runc: --all signals whatever is left in the cgroup, even once
            # the init has gone
            from .cgroups.manager import Manager
            Manager.from_state(d["cgroup"]).kill_all(sig)
            return
        pfd = _pidfd(d["pid"], d.get("starttime"))
        if pfd is None:
            raise NotRunning("container not running", 3)
        try:
            signal.pidfd_send_signal(pfd, sig)
        except ProcessLookupError:
            raise NotRunning("container not running", 3) from None
        finally:
            os.close(pfd)


def delete(root, cid, force=False):
    validate_id(cid)
    cdir = ContainerDir(root, cid)
    try:
        cdir.lock()
    except NotFound:
        if force:
            return
        raise
    with cdir:
        try:
            cdir.load()
        except HutchError:
            # no state file: a create killed before it wrote one (there is
            # nothing else it can have made yet), or a state file that cannot be
            # read; --force removes the entry, as it must leave nothing behind
            if not force:
                raise
            cdir.remove()
            return
        delete_loaded(cdir, force)


def delete_loaded(cdir, force=False):
    """`delete` of a container whose directory the caller holds locked."""
    cid = cdir.id
    d = cdir.data
    failpoint("delete:locked")
    status = cdir.status()
    if status in ("running", "paused") and not force:
        raise HutchError(f"cannot delete container {cid} that is not stopped: "
                         f"{status}")
    if d.get("pid"):
        if status == "paused" and d.get("cgroup"):
            from .cgroups.manager import Manager
            Manager.from_state(d["cgroup"]).freeze(False)
        _kill_wait(d["pid"], d.get("starttime"))
    failpoint("delete:killed")
    if d.get("cgroup"):
        from .cgroups.manager import Manager
        Manager.from_state(d["cgroup"]).destroy()
    failpoint("delete:cgroups")
    if d.get("hooks", {}).get("poststop"):
        from . import hooks, jsonlite
        st = cdir.oci_state()
        st["status"] = "stopped"
        try:
            hooks.run_hooks(d["hooks"], "poststop", jsonlite.dumps(st))
        except HutchError as e:
            from .log import warn
            warn(str(e))
    failpoint("delete:hooks")
    cdir.remove()


def state(root, cid):
    """Read without the lock: state.json is only ever replaced whole, and a hook
    that create or start runs may ask for the state of its own container."""
    cdir = load(root, cid, lock=False)
    st = cdir.oci_state()
    if cdir.data.get("status") == "creating" and not _locked(cdir):
        st["status"] = "stopped"        # its creator died part-way
    return st


def list_all(root):
    from .state import list_ids
    out = []
    for cid in list_ids(root):
        cdir = ContainerDir(root, cid)
        try:
            d = cdir.load()
        except HutchError:
            continue
        st = cdir.oci_state()
        if d.get("status") == "creating" and not _locked(cdir):
            st["status"] = "stopped"
        st.update(rootfs=d.get("rootfs", ""), created=d.get("created", ""),
                  owner=d.get("owner", ""))
        out.append(st)
    return out


def _locked(cdir):
    import fcntl
    try:
        fd = os.open(cdir.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


# --- cgroup verbs: pause, resume, ps, update, events ---------------------------------
def _running_manager(cdir, verb):
    from .cgroups.manager import Manager
    d = cdir.data
    status = cdir.status()
    if status == "stopped":
        raise NotRunning("container not running", 3)
    if not d.get("cgroup"):
        raise HutchError(f"cannot {verb} container {cdir.id}: it has no cgroups (it "
                         "was created rootless, without cgroup delegation)", 95)
    return Manager.from_state(d["cgroup"]), status


def pause(root, cid):
    cdir = load(root, cid)
    with cdir:
        mgr, status = _running_manager(cdir, "pause")
        if status not in ("running", "created"):
            raise HutchError(f"cannot pause a {status} container", 22)
        mgr.freeze(True)


def resume(root, cid):
    cdir = load(root, cid)
    with cdir:
        mgr, status = _running_manager(cdir, "resume")
        if status != "paused":
            raise HutchError(f"cannot resume a {status} container: it is not paused", 22)
        mgr.freeze(False)


def pids(root, cid):
    """Every pid in the container's cgroup (host pids)."""
    cdir = load(root, cid)
    with cdir:
        d = cdir.data
        if cdir.status() == "stopped":
            return []       # as runc: a stopped container has no processes
        if not d.get("cgroup"):
            return _pidns_members(d["pid"])
        mgr, _ = _running_manager(cdir, "list the processes of")
        return mgr.pids()


def _pidns_members(init):
    """Without cgroups (rootless): every process in the init's pid namespace."""
    try:
        ns = os.stat(f"/proc/{init}/ns/pid")
    except OSError:
        return []
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                st = os.stat(f"/proc/{name}/ns/pid")
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (ns.st_ino, ns.st_dev):
                out.append(int(name))
    return sorted(out)


def update(root, cid, resources):
    """Changes linux.resources of a live container; only the values given change
    (the cgroup files themselves are the record of what is in force)."""
    cdir = load(root, cid)
    with cdir:
        mgr, _ = _running_manager(cdir, "update")
        mgr.apply(resources, update=True)


def stats(root, cid):
    """One stats event in runc's shape: {"type": "stats", "id", "data"}."""
    from .cgroups import stats as S
    cdir = load(root, cid)
    with cdir:
        _running_manager(cdir, "read the stats of")
        return {"type": "stats", "id": cid,
                "data": S.collect(cdir.data["cgroup"]["paths"])}


def events(root, cid, interval, emit, stats_every=True):
    """Streams events until the container stops: {"type": "oom"} as soon as an OOM
    kill is seen (checked every 100 ms), and stats every ``interval`` seconds."""
    import time
    from .cgroups import stats as S
    cdir = load(root, cid, lock=False)
    _running_manager(cdir, "watch the events of")
    paths = cdir.data["cgroup"]["paths"]
    ooms = S.oom_kills(paths)
    next_stats = time.monotonic()
    while True:
        n = S.oom_kills(paths)
        if n > ooms:
            emit({"type": "oom", "id": cid})      # runc's shape: no empty data
            ooms = n
        if cdir.status() == "stopped":
            return
        if stats_every and time.monotonic() >= next_stats:
            emit({"type": "stats", "id": cid, "data": S.collect(paths)})
            next_stats = time.monotonic() + interval
        time.sleep(0.1)
