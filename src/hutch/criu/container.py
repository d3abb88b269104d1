"""`hutch checkpoint` and `hutch restore`: a container to CRIU images and back.

What lives outside the container is declared to CRIU, as runc does:
- bind mounts, the masked files (binds of the host's /dev/null) and, in a user
  namespace, the device nodes (binds too) are external mounts: dumped by name,
  and on restore bound again from their sources;
- a network namespace given by path (Podman's) is external: on restore the
  path from the new config.json is handed in;
- stdio pipes: their "pipe:[N]" names are saved in descriptors.json, and on
  restore the restoring hutch's own stdio takes their place;
- cgroups: CRIU freezes through the container's freezer cgroup, and on restore
  puts the processes into the cgroups hutch made from the new config.
The restored init is a child of `hutch restore` (CRIU's rst_sibling), which is a
child subreaper, so the restored container behaves like a created one: state,
exec, kill, delete and another checkpoint all work on it.
"""

import os

from .. import criu as C
from ..errors import HutchError, NotRunning, failpoint
# criu_info moved to hutch.spec.config: importing this package cost every create ~1 ms
from ..spec.config import checkpoint_info as criu_info

DESCRIPTORS = "descriptors.json"
NET_KEY = "extRootNetNS"
PIPE_MAX_FOR_LAZY = 4 << 20


def resolved_in(root, dest):
    """``dest`` as the mount really sits in the container whose root is
    ``root``: a destination through a symlink (/conf -> /real/conf) is mounted on
    its target, and CRIU names a mount by where it is.  Resolved with openat2
    inside the root; ``dest`` itself if it cannot be."""
    from ..linux import kernel as K
    try:
        rfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return dest
    try:
        fd = K.kernel().openat2(rfd, dest.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC,
                                0, K.RESOLVE_IN_ROOT | K.RESOLVE_NO_MAGICLINKS)
    except OSError:
        os.close(rfd)
        return dest
    try:
        top = os.readlink(f"/proc/self/fd/{rfd}").rstrip("/")
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return dest
    finally:
        os.close(fd)
        os.close(rfd)
    if where == top:
        return "/"
    return where[len(top):] if where.startswith(top + "/") else dest


def _criu_config(annotations, opts):
    """A container-specific CRIU configuration file, as runc takes it: the
    org.criu.config annotation names one (its settings override hutch's), an
    empty value means none; without it, /etc/criu/hutch.conf if present."""
    conf = (annotations or {}).get("org.criu.config")
    if conf is None and os.path.exists("/etc/criu/hutch.conf"):
        conf = "/etc/criu/hutch.conf"
    if conf:
        opts["config_file"] = conf


def _cgroup_binds(info, paths):
    """Without a cgroup namespace, a cgroup mount is a set of binds of the
    container's cgroup directories (see rootfs.setup): [(destination, source)]."""
    if info.get("cgroupns") or not paths:
        return []
    out = []
    for dest in info.get("cgroup_mounts", ()):
        if set(paths) <= {"unified"}:
            out.append((dest, paths["unified"]))
            continue
        for key, path in sorted(paths.items()):
            name = key[5:] if key.startswith("name=") else key
            out.append((f"{dest}/{name}", path))
    return out


def _open_dir(path, what, create=False):
    if create:
        os.makedirs(path, 0o700, exist_ok=True)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise HutchError(f"{what} {path}: {e.strerror}", e.errno) from None


def _lazy_pages_possible():
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            size = int(f.read())
    except (OSError, ValueError):
        return
    if size < PIPE_MAX_FOR_LAZY:
        raise HutchError(f"--lazy-pages: CRIU moves lazy pages through pipes of 4 MiB, "
                         f"but fs.pipe-max-size is {size} here; run `sysctl -w "
                         f"fs.pipe-max-size={PIPE_MAX_FOR_LAZY}` first (hutch does not "
                         "change host settings by itself)", 95)


def _open_ns(path):
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise HutchError(f"restore: network namespace {path}: {e.strerror}",
                         e.errno) from None


def _inode(path):
    try:
        return os.stat(path).st_ino
    except OSError as e:
        raise HutchError(f"namespace {path}: {e.strerror}", e.errno) from None


# devices the kernel creates in every network namespace once their module is
# loaded; they reach nothing until configured over another interface
_FALLBACK_DEVS = {"lo", "sit0", "tunl0", "ip6tnl0", "gre0", "gretap0", "erspan0",
                  "ip6gre0", "ip6erspan0", "ip_vti0", "ip6_vti0"}


def lock_for(own_netns, joined, interfaces):
    """The decision of :func:`network_lock`, from what it reads."""
    if joined or not own_netns:
        return None
    return "skip" if set(interfaces) <= _FALLBACK_DEVS else None


def network_lock(pid, info):
    """The network lock for dumping ``pid``'s container: "skip" when it has a
    network namespace of its own with no interface that reaches outside it (only
    loopback), since then no packet can arrive while it is frozen and nothing
    needs dropping; else None (CRIU's default, firewall rules that drop every
    packet until the restore is done).  Locking and unlocking an isolated
    namespace costs ~70 ms of restore time here (nftables commits), on the
    downtime of every migration.  The restore follows what the dump recorded."""
    try:
        own = os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        with open(f"/proc/{pid}/net/dev") as f:
            names = {line.split(":", 1)[0].strip() for line in f if ":" in line}
    except OSError:
        return None
    return lock_for(own, "network" in info.get("join", {}), names)


YARD = "criu-cgyard"


def cgroup_yard(where, proc_cgroup="/proc/self/cgroup"):
    """Makes ``where`` CRIU's cgroup yard: a small tmpfs in which each cgroup
    hierarchy of this host is bound under the name CRIU gives it ("cpu,cpuacct",
    "systemd" for name=systemd, "unified" for v2).  With it CRIU mounts no
    hierarchy itself: a cgroup2 mount waits for an RCU grace period here (the
    kernel re-applies the root's flags under the threadgroup rwsem), 7-15 ms of
    every dump and every restore; binds cost microseconds.  Returns ``where``, or
    None (and leaves nothing) when a hierarchy is not mounted whole, as inside a
    container whose cgroupfs shows only a subtree, or when mounting fails."""
    from ..cgroups import hierarchies
    from ..linux import kernel as K
    with open(proc_cgroup) as f:
        binds = yard_binds(hierarchies(), f.read())
    if binds is None:
        return None
    k = K.kernel()
    try:
        os.mkdir(where, 0o700)
    except OSError:
        return None
    try:
        k.mount("hutch-cgyard", where, "tmpfs", K.MS_NOSUID | K.MS_NODEV | K.MS_NOEXEC,
                "size=64k,mode=0700", what="mount a cgroup yard for CRIU")
        for name, source in binds.items():
            os.mkdir(os.path.join(where, name), 0o700)
            k.mount(source, os.path.join(where, name), None, K.MS_BIND,
                    what=f"bind {source} into CRIU's cgroup yard")
    except OSError:
        remove_yard(where)
        return None
    return where


def yard_binds(hs, proc_cgroup):
    """{yard name: mount point} for hierarchies ``hs`` and the text of
    /proc/self/cgroup, or None if a hierarchy is mounted only in part or one of
    ours is not mounted at all."""
    mounted = {}
    for h in hs:
        if h.root != "/":
            return None
        mounted[frozenset() if h.version == 2 else frozenset(h.controllers)] = \
            h.mountpoint
    binds = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ctrls = parts[1]
        key = frozenset(ctrls.split(",")) if ctrls else frozenset()
        if key not in mounted:
            return None
        name = ctrls[5:] if ctrls.startswith("name=") else (ctrls or "unified")
        binds[name] = mounted[key]
    return binds


def remove_yard(where):
    """Detaches a yard, its binds and whatever CRIU mounted in it, in one go."""
    _unmount(where)


def _masked_files(pid, masked):
    out = []
    for p in masked:
        try:
            st = os.stat(f"/proc/{pid}/root{p}")
        except OSError:
            continue
        if not os.path.isdir(f"/proc/{pid}/root{p}") and (st.st_rdev == os.makedev(1, 3)):
            out.append(p)
    return out


def checkpoint(root, cid, image_path, work_path=None, parent_path=None,
               leave_running=False, tcp_established=False, ext_unix_sk=False,
               shell_job=False, file_locks=False, pre_dump=False, page_server=None,
               lazy_pages=False, status_fd=-1, manage_cgroups_mode=None, empty_ns=0,
               auto_dedup=False, criu=None, on_criu=None, ready=None, meanwhile=None,
               worker=None):
    """``on_criu(pid)``: told the CRIU worker's pid as soon as it exists.
    ``ready``, ``meanwhile``: see :func:`hutch.criu.call`.  ``worker``: a CRIU
    started beforehand (a migration starts it before the freeze); closed here."""
    criu = C.find(criu)
    C.check_version(criu, root)
    # CRIU starts (~3 ms) while hutch loads the state and prepares the request
    worker = worker or C.Swrk(criu)
    try:
        _checkpoint(worker, root, cid, image_path, work_path, parent_path,
                    leave_running, tcp_established, ext_unix_sk, shell_job, file_locks,
                    pre_dump, page_server, lazy_pages, status_fd, manage_cgroups_mode,
                    empty_ns, auto_dedup, criu, on_criu, ready, meanwhile)
    finally:
        worker.close(kill=True)     # at once if the request was never sent


def _checkpoint(worker, root, cid, image_path, work_path, parent_path, leave_running,
                tcp_established, ext_unix_sk, shell_job, file_locks, pre_dump,
                page_server, lazy_pages, status_fd, manage_cgroups_mode, empty_ns,
                auto_dedup, criu, on_criu, ready, meanwhile):
    from ..container import delete_loaded, load
    from . import rpc
    from ..jsonlite import dumps
    cdir = load(root, cid)
    with cdir:
        failpoint("checkpoint:locked")
        d = cdir.data
        status = cdir.status()
        if status not in ("running", "paused"):
            raise NotRunning("container not running" if status == "stopped" else
                             f"cannot checkpoint a {status} container", 3)
        info = d.get("criu") or {}
        if info.get("rootless"):
            raise HutchError("checkpoint: CRIU needs root; this container was "
                             "created rootless", 1)
        if pre_dump and not C.features(criu)["mem_track"]:
            raise HutchError("--pre-dump needs memory change tracking (soft-dirty "
                             "pages), which this kernel lacks (CONFIG_MEM_SOFT_DIRTY "
                             "is not set); checkpoint without --pre-dump", 95)
        if lazy_pages:
            if not C.features(criu)["lazy_pages"]:
                raise HutchError("--lazy-pages: this kernel or CRIU lacks userfaultfd "
                                 "support", 95)
            _lazy_pages_possible()
        for t in info.get("join", {}):
            if t not in ("network",):
                raise HutchError(f"checkpoint: the container joined an existing {t} "
                                 "namespace; only a joined network namespace can be "
                                 "declared to CRIU", 95)
        pid = d["pid"]
        image_path = os.path.abspath(image_path)
        work_path = os.path.abspath(work_path) if work_path else image_path
        if parent_path:
            # CRIU takes it relative to the images; checked here, with its name
            if os.path.isabs(parent_path):
                raise HutchError(f"--parent-path {parent_path}: must be relative to "
                                 "--image-path", 22)
            real = os.path.join(image_path, parent_path)
            if not os.path.isdir(real):
                raise HutchError(f"invalid --parent-path {parent_path}: {real} is not "
                                 "a directory", 20 if os.path.exists(real) else 2)
        img = _open_dir(image_path, "--image-path", create=True)
        work = _open_dir(work_path, "--work-path", create=True)
        yard = os.path.join(cdir.path, YARD)
        guard = mgr = None
        resp = {}
        try:
            remove_yard(yard)       # a killed checkpoint's
            yard = cgroup_yard(yard)
            if not (leave_running or pre_dump) and status == "running" and \
                    _freezer(d):
                # CRIU would kill the processes once dumped, even if this command
                # died during the dump.  hutch freezes them itself instead, with
                # a guard that thaws them if it dies (after CRIU is done), and
                # asks CRIU to leave them as it found them: frozen.  They are
                # killed, still frozen, once the checkpoint has succeeded.
                from ..cgroups.manager import Manager
                mgr = Manager.from_state(d["cgroup"])
                guard = C.ThawGuard(mgr)
                mgr.freeze(True)
                failpoint("checkpoint:frozen")
                on_criu = _both(guard.watch, on_criu)
            opts = {
                "images_dir_fd": img, "work_dir_fd": work, "pid": pid,
                "log_file": "pre-dump.log" if pre_dump else "dump.log",
                "log_level": 4, "root": os.path.realpath(d["rootfs"]),
                "leave_running": leave_running or pre_dump or guard is not None,
                "tcp_established": tcp_established, "ext_unix_sk": ext_unix_sk,
                "shell_job": shell_job, "file_locks": file_locks,
                "manage_cgroups": True, "auto_dedup": auto_dedup,
                "empty_ns": empty_ns or None, "orphan_pts_master": True,
            }
            if manage_cgroups_mode:
                opts["manage_cgroups_mode"] = rpc.CG_MODES[manage_cgroups_mode]
            if yard:
                opts["cgroup_yard"] = yard
            lock = network_lock(pid, info)
            if lock:
                opts["network_lock"] = rpc.NETWORK_LOCK[lock]
            freezer = _freezer(d)
            if freezer:
                opts["freeze_cgroup"] = freezer
            if parent_path:
                opts["parent_img"] = parent_path
                opts["track_mem"] = True
            if pre_dump:
                opts["track_mem"] = True
            if page_server:
                host, _, port = page_server.rpartition(":")
                if not host or not port.isdigit():
                    raise HutchError(f"--page-server {page_server!r}: expected "
                                     "ADDRESS:PORT", 22)
                opts["ps"] = {"address": host, "port": int(port)}
            if lazy_pages:
                opts["lazy_pages"] = True
                if status_fd >= 0:
                    opts["status_fd"] = status_fd
            _criu_config(d.get("annotations"), opts)
            if not pre_dump:
                croot = f"/proc/{pid}/root"
                ext = [{"key": k, "val": k} for k in
                       (resolved_in(croot, dest) for dest, _ in info.get("binds", ()))]
                ext += [{"key": p, "val": "/dev/null"}
                        for p in _masked_files(pid, info.get("masked", ()))]
                if info.get("userns"):
                    ext += [{"key": p, "val": p} for p in info.get("devices", ())]
                ext += [{"key": dest, "val": dest} for dest, _ in
                        _cgroup_binds(info, (d.get("cgroup") or {}).get("paths"))]
                opts["ext_mnt"] = ext
                if "network" in info.get("join", {}):
                    ino = _inode(f"/proc/{pid}/ns/net")
                    opts["external"] = [f"net[{ino}]:{NET_KEY}"]
                stdio = []
                for fd in (0, 1, 2):
                    try:
                        stdio.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                    except OSError:
                        stdio.append("")
                with open(os.path.join(image_path, DESCRIPTORS), "w") as f:
                    f.write(dumps(stdio, compact=True))
            req = {"type": rpc.PRE_DUMP if pre_dump else rpc.DUMP, "opts": opts}
            resp = C.call(criu, req, what="checkpoint", on_start=on_criu, ready=ready,
                          worker=worker, meanwhile=meanwhile)
            if resp.get("success") and guard is not None:
                failpoint("checkpoint:dumped")
                mgr.kill_all(9)     # frozen: none of them runs again
                failpoint("checkpoint:killed")
        finally:
            for fd in (img, work):
                os.close(fd)
            if yard:
                remove_yard(yard)
            if guard is not None:
                if not resp.get("success"):
                    guard.thaw_now()
                guard.disarm()
                guard.close()
        if not resp.get("success"):
            raise C.failure(resp, "pre-dump" if pre_dump else "checkpoint",
                            os.path.join(work_path, opts["log_file"]))
        if not (leave_running or pre_dump):
            # the processes are gone: the container is too, as with runc
            delete_loaded(cdir, force=True)


def _both(first, second):
    """One on_criu callback from two (the second may be None)."""
    if second is None:
        return first

    def both(pid):
        first(pid)
        second(pid)
    return both


def _freezer(d):
    paths = (d.get("cgroup") or {}).get("paths") or {}
    return paths.get("freezer") or None


def restore(root, cid, bundle, image_path, work_path=None, detach=False,
            pid_file=None, console_socket=None, no_subreaper=False, no_pivot=False,
            tcp_established=False, ext_unix_sk=False, shell_job=False,
            file_locks=False, lazy_pages=False, manage_cgroups_mode=None, empty_ns=0,
            auto_dedup=False, criu=None, frozen=False):
    """Restores container ``cid`` from CRIU images with the bundle's config.json.
    Returns the exit code with ``detach`` false (the init is waited for, as in
    `run`), else 0 once it runs.  ``frozen``: freeze it as soon as it is back
    (a migration thaws it once the source has let go)."""
    r = Restore(root, cid, bundle, criu=criu, console_socket=console_socket,
                no_subreaper=no_subreaper, lazy_pages=lazy_pages,
                manage_cgroups_mode=manage_cgroups_mode)
    return r.run(image_path, work_path, detach=detach, pid_file=pid_file,
                 tcp_established=tcp_established, ext_unix_sk=ext_unix_sk,
                 shell_job=shell_job, file_locks=file_locks, empty_ns=empty_ns,
                 auto_dedup=auto_dedup, frozen=frozen)


class Restore:
    """A restore in two steps.  Making it prepares all that does not need the
    images: the config is checked, CRIU is started, the container's state
    directory, cgroups, root mount and cgroup yard are made.  ``run`` then hands
    the images to CRIU.  A migration's destination prepares while the source
    still runs, so that only CRIU's own restore is left for the downtime.
    ``abort`` (or a failing ``run``) undoes everything."""

    def __init__(self, root, cid, bundle, criu=None, console_socket=None,
                 no_subreaper=False, lazy_pages=False, manage_cgroups_mode=None):
        from ..state import validate_id
        from ..spec.config import load_config
        validate_id(cid)
        if os.geteuid() != 0:
            raise HutchError("restore: CRIU needs root", 1)
        self.root, self.cid = root, cid
        self.criu = criu = C.find(criu)
        C.check_version(criu, root)
        self.bundle = os.path.abspath(bundle)
        self.cfg = cfg = load_config(self.bundle)
        self.info = info = criu_info(cfg, self.bundle)
        self.lazy_pages, self.cg_mode = lazy_pages, manage_cgroups_mode
        self.nfd = _open_ns(info["join"]["network"]) if "network" in info["join"] \
            else -1
        self.fds = [self.nfd] if self.nfd >= 0 else []
        self.worker = self.cdir = self.mgr = self.mounted = self.yard = None
        self.csock = -1
        self.pid = 0
        self.state = {}
        try:
            # CRIU starts (~3 ms) while hutch checks the rest and makes the cgroups
            # and the root; the joined network namespace is the one descriptor it
            # must hold itself
            self.worker = C.Swrk(criu, extra_fds=self.fds, inherit_stdio=True)
            self._prepare(console_socket, no_subreaper)
        except BaseException:
            self.abort()
            raise

    def _prepare(self, console_socket, no_subreaper):
        from ..cgroups.manager import Manager
        from ..container import validate, _connect
        from ..linux import kernel as K
        from ..state import ContainerDir, now_rfc3339
        cfg = self.cfg
        validate(cfg)
        if self.lazy_pages and not C.features(self.criu)["lazy_pages"]:
            raise HutchError("--lazy-pages: this kernel or CRIU lacks userfaultfd "
                             "support", 95)
        cdir = ContainerDir(self.root, self.cid)
        cdir.make()
        self.cdir = cdir
        self.state = {"ociVersion": cfg.oci_version, "id": self.cid,
                      "status": "creating", "pid": 0, "bundle": self.bundle,
                      "rootfs": cfg.root_path, "created": now_rfc3339(),
                      "annotations": cfg.annotations, "owner": "", "restored": True,
                      "hooks": {}, "criu": self.info}
        mgr = self.mgr = Manager.for_container(self.cid, cfg.cgroups_path)
        self.state["cgroup"] = mgr.to_state()
        cdir.save(self.state)
        mgr.create()
        mgr.apply(cfg.resources)
        if self.cg_mode == "ignore":
            # CRIU leaves the restored tasks in its own cgroups: make them these
            # (in every other mode CRIU moves each task into the cgroups of the
            # dump, mapped onto these by cg_root, before restoring its memory)
            mgr.add(self.worker.proc.pid)
        k = K.kernel()
        # CRIU wants the root to be a mount point whose parent is not overmounted
        mounted = os.path.join(cdir.path, "criu-root")
        os.mkdir(mounted, 0o755)
        k.mount(os.path.realpath(cfg.root_path), mounted, None, K.MS_BIND | K.MS_REC,
                what="bind the rootfs for CRIU")
        self.mounted = mounted
        _make_mountpoints(k, mounted, cfg, self.bundle, self.info["binds"])
        self.yard = cgroup_yard(os.path.join(cdir.path, YARD))
        if console_socket:
            self.csock = _connect(console_socket)
            self.fds.append(self.csock)
        if not no_subreaper:
            k.prctl(K.PR_SET_CHILD_SUBREAPER, 1)

    def run(self, image_path, work_path=None, detach=False, pid_file=None,
            tcp_established=False, ext_unix_sk=False, shell_job=False,
            file_locks=False, empty_ns=0, auto_dedup=False, frozen=False):
        """Restores from ``image_path``; see :func:`restore` for what it returns."""
        try:
            failpoint("restore:prepared")
            self._run(image_path, work_path, pid_file, tcp_established, ext_unix_sk,
                      shell_job, file_locks, empty_ns, auto_dedup, frozen)
        except BaseException:
            self.abort()
            raise
        self._release()
        if detach:
            return 0
        from ..container import delete
        from ..runner import wait_child
        code = wait_child(self.pid)
        delete(self.root, self.cid, force=True)
        return code

    def _run(self, image_path, work_path, pid_file, tcp_established, ext_unix_sk,
             shell_job, file_locks, empty_ns, auto_dedup, frozen):
        from .. import jsonlite
        from ..container import _process_plan
        from . import rpc
        from ..state import proc_stat, write_pid_file
        cfg, info, mgr, cdir, state = self.cfg, self.info, self.mgr, self.cdir, \
            self.state
        image_path = os.path.abspath(image_path)
        work_path = os.path.abspath(work_path) if work_path else image_path
        try:
            with open(os.path.join(image_path, DESCRIPTORS)) as f:
                stdio = jsonlite.loads(f.read())
        except FileNotFoundError:
            raise HutchError(f"restore: {image_path} holds no checkpoint of hutch's "
                             f"or runc's ({DESCRIPTORS} is missing)", 2) from None
        img = _open_dir(image_path, "--image-path")
        self.fds.append(img)
        work = _open_dir(work_path, "--work-path", create=True)
        self.fds.append(work)
        opts = {
            "images_dir_fd": img, "work_dir_fd": work, "log_file": "restore.log",
            "log_level": 4, "root": self.mounted, "rst_sibling": True,
            "evasive_devices": True, "manage_cgroups": True, "notify_scripts": True,
            "orphan_pts_master": True, "tcp_established": tcp_established,
            "ext_unix_sk": ext_unix_sk, "shell_job": shell_job, "file_locks": file_locks,
            "lazy_pages": self.lazy_pages, "auto_dedup": auto_dedup,
            "empty_ns": empty_ns or None,
            "cg_root": [{"ctrl": _ctrl(key), "path": _rel(mgr, key)}
                        for key in mgr.paths],
        }
        if self.yard:
            opts["cgroup_yard"] = self.yard
        if self.cg_mode:
            opts["manage_cgroups_mode"] = rpc.CG_MODES[self.cg_mode]
        _criu_config(cfg.annotations, opts)
        ext = [{"key": resolved_in(self.mounted, dest), "val": src}
               for dest, src in info["binds"]]
        if info["masked"]:
            ext.append({"key": "/dev/null", "val": "/dev/null"})
        if info["userns"]:
            ext += [{"key": p, "val": p} for p in info["devices"]]
        ext += [{"key": dest, "val": src} for dest, src in _cgroup_binds(info, mgr.paths)]
        opts["ext_mnt"] = ext
        inherit = [{"key": s, "fd": i} for i, s in enumerate(stdio)
                   if isinstance(s, str) and s.startswith("pipe:")]
        if self.nfd >= 0:
            inherit.append({"key": NET_KEY, "fd": self.nfd})
        opts["inherit_fd"] = inherit
        csock = self.csock

        def on_notify(script, npid, fds):
            if script == "orphan-pts-master":
                if csock < 0:
                    raise HutchError("restore: the checkpoint has a terminal; give "
                                     "--console-socket", 22)
                from ..process.channel import send_fd
                send_fd(csock, fds[0], "/dev/ptmx")
            elif script in ("setup-namespaces", "post-restore") and npid:
                self.pid = npid
                state["pid"] = npid
                st = proc_stat(npid)
                state["starttime"] = st[1] if st else 0
                cdir.save()
                failpoint("restore:notified")
        resp = C.call(self.criu, {"type": rpc.RESTORE, "opts": opts},
                      on_notify=on_notify, what="restore", worker=self.worker)
        if not resp.get("success"):
            raise C.failure(resp, "restore", os.path.join(work_path, "restore.log"))
        failpoint("restore:restored")
        pid = self.pid = (resp.get("restore") or {}).get("pid") or self.pid
        if frozen:
            mgr.freeze(True)
        st = proc_stat(pid)
        prog = None
        if cfg.seccomp is not None:
            from .. import seccomp
            prog = seccomp.to_state(seccomp.compile(
                cfg.seccomp, cache_dir=os.path.join(self.root, ".seccomp-cache")))
        proc = _process_plan(cfg.process)
        state.update(pid=pid, starttime=st[1] if st else 0, status="running")
        state["exec"] = {"process": {k_: v for k_, v in proc.items() if k_ not in (
            "args", "terminal", "console_size", "seccomp")},
            "namespaces": sorted(cfg.namespaces), "no_new_keyring": False,
            "strict_guard": True}
        if prog is not None:
            state["exec"]["process"]["seccomp"] = prog
        cdir.save()
        failpoint("restore:saved")
        if pid_file:
            write_pid_file(pid_file, pid)

    def _release(self):
        """After a success: CRIU, the yard, the root mount, descriptors, lock."""
        self.worker.close()
        if self.yard:
            remove_yard(self.yard)
        _unmount(self.mounted)
        self._close_fds()
        self.cdir.unlock()

    def _close_fds(self):
        for fd in self.fds:
            try:
                os.close(fd)
            except OSError:
                pass
        self.fds = []

    def abort(self):
        """Undoes the restore (prepared or failed): CRIU and any restored process
        are killed, cgroups, mounts and the state directory removed."""
        from ..container import undo
        if self.worker is not None:
            self.worker.close(kill=True)    # out of the cgroups undo removes
        if self.yard:
            remove_yard(self.yard)
            self.yard = None
        if self.mgr is not None:
            undo(self.pid, self.state.get("starttime"), self.mgr)
        _unmount(self.mounted)
        self.mounted = None
        self._close_fds()
        if self.cdir is not None:
            try:
                self.cdir.remove()
            except HutchError as e:     # the restore's own error matters more
                from ..log import warn
                warn(str(e))
            self.cdir.unlock()
            self.cdir = None


def _ctrl(key):
    return "" if key == "unified" else key


def _rel(mgr, key):
    mp = (mgr.mountpoints or {}).get(key)
    path = mgr.paths[key]
    if mp and path.startswith(mp):
        return path[len(mp):] or "/"
    return path


def _make_mountpoints(k, root, cfg, bundle, binds):
    """Mount points for bind mounts that are not under a tmpfs (CRIU restores a
    tmpfs with its content), created inside the root without leaving it.  A
    mount inside a bind mount needs its mount point in that bind's source (the
    container made it there; it may be gone since): made there too, resolved
    inside the source, as runc does."""
    def source(m):
        return os.path.join(bundle, m.source or "")
    binds = [(dest.rstrip("/"), src) for dest, src in binds if os.path.isdir(src)]
    tmpfs = [m.destination for m in cfg.mounts if m.type == "tmpfs"]
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in cfg.mounts:
            if any(m.destination.startswith(t + "/") for t in tmpfs) or \
                    m.type == "cgroup":
                continue
            is_file = m.type in ("bind", None) and m.source and \
                os.path.isfile(source(m))
            _mountpoint(k, rootfd, m.destination, is_file)
            for bdest, bsrc in binds:
                if m.destination.startswith(bdest + "/"):
                    sfd = os.open(bsrc, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        _mountpoint(k, sfd, m.destination[len(bdest):], is_file)
                    finally:
                        os.close(sfd)
    finally:
        os.close(rootfd)


def _mountpoint(k, topfd, path, is_file):
    """A directory, or an empty file, at ``path`` under ``topfd`` (resolved in
    it, never leaving it)."""
    from ..rootfs.paths import mkdir_all
    if not is_file:
        os.close(mkdir_all(k, topfd, path))
        return
    fd = mkdir_all(k, topfd, os.path.dirname(path))
    try:
        os.close(os.open(os.path.basename(path), os.O_CREAT | os.O_WRONLY |
                         os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd))
    except FileExistsError:
        pass
    finally:
        os.close(fd)


def _unmount(path):
    """Detaches what is mounted on ``path`` (and under it) and removes the
    directory."""
    if not path:
        return
    from ..linux import kernel as K
    try:
        K.kernel().umount2(path, K.MNT_DETACH)
    except OSError:
        pass
    try:
        os.rmdir(path)
    except OSError:
        pass
