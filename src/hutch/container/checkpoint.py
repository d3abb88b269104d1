"""`checkpoint`: a running container to CRIU images (and `restore`, in
:mod:`.restore`, back).

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
"""

import errno
import os

from .. import criu as C
from ..criu import host as H
from ..errors import HutchError, failpoint
from .plan import CriuRecord, Options


class CheckpointOptions(Options):
    """runc's checkpoint flags, plus what a migration passes."""
    work_path = None
    parent_path = None
    leave_running = False
    tcp_established = False
    ext_unix_sk = False
    shell_job = False
    file_locks = False
    pre_dump = False
    page_server = None          # ADDRESS:PORT
    lazy_pages = False
    status_fd = -1
    manage_cgroups_mode = None
    empty_ns = 0
    auto_dedup = False
    criu = None                 # the CRIU binary (None: found)
    on_criu = None              # on_criu(pid): the CRIU worker's pid, once it exists
    ready = None                # see :func:`hutch.criu.call`
    meanwhile = None
    worker = None               # a CRIU started beforehand; closed here


def checkpoint(root, cid, image_path, opts=None):
    """Dumps container ``cid`` into ``image_path``.  Without leave_running (or
    pre_dump) the container is gone afterwards, as with runc."""
    o = opts or CheckpointOptions()
    criu = C.find(o.criu)
    C.check_version(criu, root)
    # CRIU starts (~3 ms) while hutch loads the state and prepares the request
    worker = o.worker or C.Swrk(criu)
    try:
        _checkpoint(worker, root, cid, image_path, o, criu)
    finally:
        worker.close(kill=True)     # at once if the request was never sent


def _checkpoint(worker, root, cid, image_path, o, criu):
    from ..criu import rpc
    from ..jsonlite import dumps
    from .lifecycle import delete_loaded, load
    from .record import check
    work_path, parent_path, pre_dump = o.work_path, o.parent_path, o.pre_dump
    leave_running, on_criu = o.leave_running, o.on_criu
    cdir = load(root, cid)
    with cdir:
        failpoint("checkpoint:locked")
        d = cdir.data
        status = cdir.status()
        check("checkpoint", status)
        info = CriuRecord(d.criu)
        for entry in d.get("attachments") or ():
            # an attachment whose work CRIU cannot carry says so (the keeper's
            # FUSE views are mounts CRIU cannot save)
            from . import attach
            cls = attach.resolve(entry["kind"])
            refusal = getattr(cls, "checkpoint_refusal", None)
            if callable(refusal):
                refusal = refusal(entry.get("data"))
            if refusal:
                raise HutchError(f"checkpoint: {refusal}", errno.EOPNOTSUPP)
        if info.rootless:
            raise HutchError("checkpoint: CRIU needs root; this container was "
                             "created rootless", errno.EPERM)
        if pre_dump and not C.features(criu)["mem_track"]:
            raise HutchError("--pre-dump needs memory change tracking (soft-dirty "
                             "pages), which this kernel lacks (CONFIG_MEM_SOFT_DIRTY "
                             "is not set); checkpoint without --pre-dump", errno.EOPNOTSUPP)
        if o.lazy_pages:
            if not C.features(criu)["lazy_pages"]:
                raise HutchError("--lazy-pages: this kernel or CRIU lacks userfaultfd "
                                 "support", errno.EOPNOTSUPP)
            H.lazy_pages_possible()
        for t in info.join:
            if t not in ("network",):
                raise HutchError(f"checkpoint: the container joined an existing {t} "
                                 "namespace; only a joined network namespace can be "
                                 "declared to CRIU", errno.EOPNOTSUPP)
        pid = d.pid
        image_path = os.path.abspath(image_path)
        work_path = os.path.abspath(work_path) if work_path else image_path
        if parent_path:
            # CRIU takes it relative to the images; checked here, with its name
            if os.path.isabs(parent_path):
                raise HutchError(f"--parent-path {parent_path}: must be relative to "
                                 "--image-path", errno.EINVAL)
            real = os.path.join(image_path, parent_path)
            if not os.path.isdir(real):
                raise HutchError(f"invalid --parent-path {parent_path}: {real} is not "
                                 "a directory", errno.ENOTDIR if os.path.exists(real)
                                 else errno.ENOENT)
        img = H.open_dir(image_path, "--image-path", create=True)
        work = H.open_dir(work_path, "--work-path", create=True)
        yard = os.path.join(cdir.path, H.YARD)
        guard = mgr = None
        resp = {}
        try:
            H.remove_yard(yard)       # a killed checkpoint's
            yard = H.cgroup_yard(yard)
            if not (leave_running or pre_dump) and status == "running" and \
                    _freezer(d):
                # CRIU would kill the processes once dumped, even if this command
                # died during the dump.  hutch freezes them itself instead, with
                # a guard that thaws them if it dies (after CRIU is done), and
                # asks CRIU to leave them as it found them: frozen.  They are
                # killed, still frozen, once the checkpoint has succeeded.
                from ..cgroups.manager import Manager
                mgr = Manager.from_state(d.cgroup)
                guard = C.ThawGuard(mgr)
                mgr.freeze(True)
                failpoint("checkpoint:frozen")
                on_criu = _both(guard.watch, on_criu)
            opts = {
                "images_dir_fd": img, "work_dir_fd": work, "pid": pid,
                "log_file": "pre-dump.log" if pre_dump else "dump.log",
                "log_level": 4, "root": os.path.realpath(d.rootfs),
                "leave_running": leave_running or pre_dump or guard is not None,
                "tcp_established": o.tcp_established, "ext_unix_sk": o.ext_unix_sk,
                "shell_job": o.shell_job, "file_locks": o.file_locks,
                "manage_cgroups": True, "auto_dedup": o.auto_dedup,
                "empty_ns": o.empty_ns or None, "orphan_pts_master": True,
            }
            if o.manage_cgroups_mode:
                opts["manage_cgroups_mode"] = rpc.CG_MODES[o.manage_cgroups_mode]
            if yard:
                opts["cgroup_yard"] = yard
            lock = H.network_lock(pid, info.join)
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
            if o.page_server:
                host, _, port = o.page_server.rpartition(":")
                if not host or not port.isdigit():
                    raise HutchError(f"--page-server {o.page_server!r}: expected "
                                     "ADDRESS:PORT", errno.EINVAL)
                opts["ps"] = {"address": host, "port": int(port)}
            if o.lazy_pages:
                opts["lazy_pages"] = True
                if o.status_fd >= 0:
                    opts["status_fd"] = o.status_fd
            H.criu_config(d.annotations, opts)
            if not pre_dump:
                croot = f"/proc/{pid}/root"
                ext = [{"key": k, "val": k} for k in
                       (H.resolved_in(croot, dest) for dest, _ in info.binds)]
                ext += [{"key": p, "val": "/dev/null"}
                        for p in H.masked_files(pid, info.masked)]
                if info.userns:
                    ext += [{"key": p, "val": p} for p in info.devices]
                ext += [{"key": dest, "val": dest} for dest, _ in
                        H.cgroup_binds(info, d.cgroup_paths)]
                # what attachments bound in (the keeper's views): external, bound
                # again on restore from what the restored container's own
                # attachments serve
                ext += [{"key": H.resolved_in(croot, dest), "val": dest}
                        for dest in attached_mounts(d)]
                opts["ext_mnt"] = ext
                if "network" in info.join:
                    ino = H.inode(f"/proc/{pid}/ns/net")
                    opts["external"] = [f"net[{ino}]:{H.NET_KEY}"]
                stdio = []
                for fd in (0, 1, 2):
                    try:
                        stdio.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
                    except OSError:
                        stdio.append("")
                with open(os.path.join(image_path, H.DESCRIPTORS), "w") as f:
                    f.write(dumps(stdio, compact=True))
            req = {"type": rpc.PRE_DUMP if pre_dump else rpc.DUMP, "opts": opts}
            resp = C.call(criu, req, what="checkpoint", on_start=on_criu, ready=o.ready,
                          worker=worker, meanwhile=o.meanwhile)
            if resp.get("success") and guard is not None:
                failpoint("checkpoint:dumped")
                mgr.kill_all(9)     # frozen: none of them runs again
                failpoint("checkpoint:killed")
        finally:
            for fd in (img, work):
                os.close(fd)
            if yard:
                H.remove_yard(yard)
            if guard is not None:
                if not resp.get("success"):
                    guard.thaw_now()
                guard.disarm()
                guard.close()
        if not resp.get("success"):
            raise C.failure(resp, "pre-dump" if pre_dump else "checkpoint",
                            os.path.join(work_path, opts["log_file"]))
        if not pre_dump:
            _checkpointed(cdir, image_path)
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
    return d.cgroup_paths.get("freezer") or None




def attached_mounts(record):
    """The destinations of the binds the container's attachments asked for."""
    out = []
    for entry in record.get("attachments") or ():
        out.extend((entry.get("data") or {}).get("mounts") or ())
    return out


def _checkpointed(cdir, image_path):
    """After a dump: what each attachment's restore needs goes beside the
    images (a detached sandbox's keeper: its spec and its log so far)."""
    from . import attach
    for entry in cdir.data.get("attachments") or ():
        saved = getattr(attach.resolve(entry["kind"]), "checkpointed", None)
        if saved is not None:
            saved(cdir.path, entry.get("data"), image_path)
