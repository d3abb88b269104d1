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
from ..errors import HutchError, NotRunning

DESCRIPTORS = "descriptors.json"
NET_KEY = "extRootNetNS"
PIPE_MAX_FOR_LAZY = 4 << 20


def criu_info(cfg):
    """What checkpoint needs to know about a container, recorded at create."""
    binds = [(m.destination, m.source) for m in cfg.mounts
             if m.type == "bind" or "bind" in m.options or "rbind" in m.options]
    devices = [d[0] for d in cfg.devices]
    if cfg.has_ns("user"):
        from ..rootfs.setup import DEFAULT_DEVICES
        devices += [d[0] for d in DEFAULT_DEVICES if d[0] not in devices]
    return {"binds": binds, "masked": list(cfg.masked_paths), "devices": devices,
            "join": {t: p for t, p in cfg.namespaces.items() if p},
            "userns": cfg.has_ns("user"),
            "cgroup_mounts": [m.destination for m in cfg.mounts if m.type == "cgroup"],
            "cgroupns": cfg.new_ns("cgroup")}


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


def network_lock(pid, info):
    """The network lock for dumping ``pid``'s container: "skip" when it has a
    network namespace of its own with no interface that reaches outside it (only
    loopback), since then no packet can arrive while it is frozen and nothing
    needs dropping; else None (CRIU's default, firewall rules that drop every
    packet until the restore is done).  Locking and unlocking an isolated
    namespace costs ~70 ms of restore time here (nftables commits), on the
    downtime of every migration.  The restore follows what the dump recorded."""
    if "network" in info.get("join", {}):
        return None
    try:
        if os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat("/proc/self/ns/net").st_ino:
            return None
        with open(f"/proc/{pid}/net/dev") as f:
            names = {line.split(":", 1)[0].strip() for line in f if ":" in line}
    except OSError:
        return None
    return "skip" if names <= _FALLBACK_DEVS else None


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
               auto_dedup=False, criu=None, on_criu=None, ready=None):
    """``on_criu(pid)``: told the CRIU worker's pid as soon as it exists."""
    criu = C.find(criu)
    C.check_version(criu, root)
    # CRIU starts (~3 ms) while hutch loads the state and prepares the request
    worker = C.Swrk(criu)
    try:
        _checkpoint(worker, root, cid, image_path, work_path, parent_path,
                    leave_running, tcp_established, ext_unix_sk, shell_job, file_locks,
                    pre_dump, page_server, lazy_pages, status_fd, manage_cgroups_mode,
                    empty_ns, auto_dedup, criu, on_criu, ready)
    finally:
        worker.close(kill=True)     # at once if the request was never sent


def _checkpoint(worker, root, cid, image_path, work_path, parent_path, leave_running,
                tcp_established, ext_unix_sk, shell_job, file_locks, pre_dump,
                page_server, lazy_pages, status_fd, manage_cgroups_mode, empty_ns,
                auto_dedup, criu, on_criu, ready):
    from ..container import delete, load
    from . import rpc
    from ..jsonlite import dumps
    cdir = load(root, cid)
    with cdir:
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
        img = _open_dir(image_path, "--image-path", create=True)
        work = _open_dir(work_path, "--work-path", create=True)
        try:
            opts = {
                "images_dir_fd": img, "work_dir_fd": work, "pid": pid,
                "log_file": "pre-dump.log" if pre_dump else "dump.log",
                "log_level": 4, "root": os.path.realpath(d["rootfs"]),
                "leave_running": leave_running or pre_dump,
                "tcp_established": tcp_established, "ext_unix_sk": ext_unix_sk,
                "shell_job": shell_job, "file_locks": file_locks,
                "manage_cgroups": True, "auto_dedup": auto_dedup,
                "empty_ns": empty_ns or None, "orphan_pts_master": True,
            }
            if manage_cgroups_mode:
                opts["manage_cgroups_mode"] = rpc.CG_MODES[manage_cgroups_mode]
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
            if not pre_dump:
                ext = [{"key": dest, "val": dest} for dest, _ in info.get("binds", ())]
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
                          worker=worker)
        finally:
            for fd in (img, work):
                os.close(fd)
        if not resp.get("success"):
            raise C.failure(resp, "pre-dump" if pre_dump else "checkpoint",
                            os.path.join(work_path, opts["log_file"]))
    if not (leave_running or pre_dump):
        # the processes are gone: the container is too, as with runc
        delete(root, cid, force=True)


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
    from ..state import validate_id
    from ..spec.config import load_config
    validate_id(cid)
    if os.geteuid() != 0:
        raise HutchError("restore: CRIU needs root", 1)
    criu = C.find(criu)
    C.check_version(criu, root)
    bundle = os.path.abspath(bundle)
    cfg = load_config(bundle)
    info = criu_info(cfg)
    nfd = _open_ns(info["join"]["network"]) if "network" in info["join"] else -1
    # CRIU starts (~3 ms) while hutch checks the rest and makes the cgroups and
    # the root; the joined network namespace is the one descriptor it must hold
    try:
        worker = C.Swrk(criu, extra_fds=[nfd] if nfd >= 0 else [], inherit_stdio=True)
    except BaseException:
        if nfd >= 0:
            os.close(nfd)
        raise
    extra = [nfd] if nfd >= 0 else []
    try:
        return _restore(worker, extra, nfd, root, cid, bundle, cfg, info, image_path,
                        work_path, detach, pid_file, console_socket, no_subreaper,
                        tcp_established, ext_unix_sk, shell_job, file_locks,
                        lazy_pages, manage_cgroups_mode, empty_ns, auto_dedup, criu,
                        frozen)
    finally:
        worker.close(kill=True)     # at once unless it has answered
        for fd in extra:
            try:
                os.close(fd)
            except OSError:
                pass


def _restore(worker, extra, nfd, root, cid, bundle, cfg, info, image_path, work_path,
             detach, pid_file, console_socket, no_subreaper, tcp_established,
             ext_unix_sk, shell_job, file_locks, lazy_pages, manage_cgroups_mode,
             empty_ns, auto_dedup, criu, frozen):
    from .. import jsonlite
    from ..cgroups.manager import Manager
    from ..container import _process_plan, validate, _connect
    from . import rpc
    from ..linux import kernel as K
    from ..state import ContainerDir, now_rfc3339, proc_stat, write_atomic
    validate(cfg)
    if lazy_pages and not C.features(criu)["lazy_pages"]:
        raise HutchError("--lazy-pages: this kernel or CRIU lacks userfaultfd support",
                         95)
    image_path = os.path.abspath(image_path)
    work_path = os.path.abspath(work_path) if work_path else image_path
    try:
        with open(os.path.join(image_path, DESCRIPTORS)) as f:
            stdio = jsonlite.loads(f.read())
    except FileNotFoundError:
        raise HutchError(f"restore: {image_path} holds no checkpoint of hutch's or "
                         f"runc's ({DESCRIPTORS} is missing)", 2) from None
    cdir = ContainerDir(root, cid)
    cdir.make()
    state = {"ociVersion": cfg.oci_version, "id": cid, "status": "creating", "pid": 0,
             "bundle": bundle, "rootfs": cfg.root_path, "created": now_rfc3339(),
             "annotations": cfg.annotations, "owner": "", "restored": True,
             "hooks": {}, "criu": info}
    mgr = None
    mounted = None
    pid = 0
    try:
        mgr = Manager.for_container(cid, cfg.cgroups_path)
        state["cgroup"] = mgr.to_state()
        cdir.save(state)
        mgr.create()
        mgr.apply(cfg.resources, device_nodes=cfg.devices)
        if manage_cgroups_mode == "ignore":
            # CRIU leaves the restored tasks in its own cgroups: make them these
            # (in every other mode CRIU moves each task into the cgroups of the
            # dump, mapped onto these by cg_root, before restoring its memory)
            mgr.add(worker.proc.pid)
        k = K.kernel()
        # CRIU wants the root to be a mount point whose parent is not overmounted
        mounted = os.path.join(cdir.path, "criu-root")
        os.mkdir(mounted, 0o755)
        k.mount(os.path.realpath(cfg.root_path), mounted, None, K.MS_BIND | K.MS_REC,
                what="bind the rootfs for CRIU")
        _make_mountpoints(k, mounted, cfg)
        img = _open_dir(image_path, "--image-path")
        extra.append(img)
        work = _open_dir(work_path, "--work-path", create=True)
        extra.append(work)
        opts = {
            "images_dir_fd": img, "work_dir_fd": work, "log_file": "restore.log",
            "log_level": 4, "root": mounted, "rst_sibling": True,
            "evasive_devices": True, "manage_cgroups": True, "notify_scripts": True,
            "orphan_pts_master": True, "tcp_established": tcp_established,
            "ext_unix_sk": ext_unix_sk, "shell_job": shell_job, "file_locks": file_locks,
            "lazy_pages": lazy_pages, "auto_dedup": auto_dedup,
            "empty_ns": empty_ns or None,
            "cg_root": [{"ctrl": _ctrl(key), "path": _rel(mgr, key)}
                        for key in mgr.paths],
        }
        if manage_cgroups_mode:
            opts["manage_cgroups_mode"] = rpc.CG_MODES[manage_cgroups_mode]
        ext = [{"key": dest, "val": src} for dest, src in info["binds"]]
        if info["masked"]:
            ext.append({"key": "/dev/null", "val": "/dev/null"})
        if info["userns"]:
            ext += [{"key": p, "val": p} for p in info["devices"]]
        ext += [{"key": dest, "val": src} for dest, src in _cgroup_binds(info, mgr.paths)]
        opts["ext_mnt"] = ext
        inherit = [{"key": s, "fd": i} for i, s in enumerate(stdio)
                   if isinstance(s, str) and s.startswith("pipe:")]
        if nfd >= 0:
            inherit.append({"key": NET_KEY, "fd": nfd})
        opts["inherit_fd"] = inherit
        csock = _connect(console_socket) if console_socket else -1
        if csock >= 0:
            extra.append(csock)
        if not no_subreaper:
            k.prctl(K.PR_SET_CHILD_SUBREAPER, 1)

        def on_notify(script, npid, fds):
            nonlocal pid
            if script == "orphan-pts-master":
                if csock < 0:
                    raise HutchError("restore: the checkpoint has a terminal; give "
                                     "--console-socket", 22)
                from ..process.channel import send_fd
                send_fd(csock, fds[0], "/dev/ptmx")
            elif script in ("setup-namespaces", "post-restore") and npid:
                pid = npid
                state["pid"] = npid
                st = proc_stat(npid)
                state["starttime"] = st[1] if st else 0
                cdir.save()
        resp = C.call(criu, {"type": rpc.RESTORE, "opts": opts}, on_notify=on_notify,
                      what="restore", worker=worker)
        if not resp.get("success"):
            raise C.failure(resp, "restore", os.path.join(work_path, "restore.log"))
        pid = (resp.get("restore") or {}).get("pid") or pid
        st = proc_stat(pid)
        prog = None
        if cfg.seccomp is not None:
            from .. import seccomp
            prog = seccomp.to_state(seccomp.compile(
                cfg.seccomp, cache_dir=os.path.join(root, ".seccomp-cache")))
        proc = _process_plan(cfg.process)
        state.update(pid=pid, starttime=st[1] if st else 0, status="running")
        state["exec"] = {"process": {k_: v for k_, v in proc.items() if k_ not in (
            "args", "terminal", "console_size", "seccomp")},
            "namespaces": sorted(cfg.namespaces), "no_new_keyring": False,
            "strict_guard": True}
        if prog is not None:
            state["exec"]["process"]["seccomp"] = prog
        cdir.save()
        if pid_file:
            write_atomic(os.path.abspath(pid_file), str(pid))
        if frozen:
            mgr.freeze(True)
    except BaseException:
        from ..container import undo
        worker.close(kill=True)     # out of the cgroups undo removes
        undo(pid, state.get("starttime"), mgr)
        _unmount(mounted)
        mounted = None
        cdir.remove()
        raise
    finally:
        _unmount(mounted)
        cdir.unlock()
    if detach:
        return 0
    from ..container import delete
    from ..runner import wait_child
    worker.close()
    code = wait_child(pid)
    delete(root, cid, force=True)
    return code


def _ctrl(key):
    return "" if key == "unified" else key


def _rel(mgr, key):
    mp = (mgr.mountpoints or {}).get(key)
    path = mgr.paths[key]
    if mp and path.startswith(mp):
        return path[len(mp):] or "/"
    return path


def _make_mountpoints(k, root, cfg):
    """Mount points for bind mounts that are not under a tmpfs (CRIU restores a
    tmpfs with its content), created inside the root without leaving it."""
    from ..rootfs.paths import mkdir_all
    tmpfs = [m.destination for m in cfg.mounts if m.type == "tmpfs"]
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in cfg.mounts:
            if any(m.destination.startswith(t + "/") for t in tmpfs):
                continue
            if m.type in ("bind", None) and m.source and os.path.isfile(m.source):
                parent = os.path.dirname(m.destination)
                fd = mkdir_all(k, rootfd, parent)
                try:
                    try:
                        os.close(os.open(os.path.basename(m.destination),
                                         os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW |
                                         os.O_CLOEXEC, 0o644, dir_fd=fd))
                    except FileExistsError:
                        pass
                finally:
                    os.close(fd)
            elif m.type != "cgroup":
                os.close(mkdir_all(k, rootfd, m.destination))
    finally:
        os.close(rootfd)


def _unmount(path):
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
