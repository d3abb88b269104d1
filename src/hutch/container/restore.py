"""`restore`: a container back from CRIU images (see :mod:`.checkpoint`).

The restored init is a child of `hutch restore` (CRIU's rst_sibling), which is a
child subreaper, so the restored container behaves like a created one: state,
exec, kill, delete and another checkpoint all work on it.
"""

import errno
import os

from .. import criu as C
from ..criu import host as H
from ..errors import HutchError, failpoint
from ..linux.fs import unmount_dir
from .plan import Options


class RestoreOptions(Options):
    """runc's restore flags, plus what a migration passes."""
    work_path = None
    detach = False
    pid_file = None
    console_socket = None
    no_subreaper = False
    no_pivot = False
    tcp_established = False
    ext_unix_sk = False
    shell_job = False
    file_locks = False
    lazy_pages = False
    manage_cgroups_mode = None
    empty_ns = 0
    auto_dedup = False
    criu = None
    frozen = False      # freeze it as soon as it is back (a migration thaws it)
    attachments = ()    # :mod:`.attach` objects for the restored container
    config_hooks = ()   # as CreateOptions': fn(cfg, opts, root, cid)


def restore(root, cid, bundle, image_path, opts=None):
    """Restores container ``cid`` from CRIU images with the bundle's config.json.
    Returns the exit code without ``detach`` (the init is waited for, as in
    `run`), else 0 once it runs."""
    r = Restore(root, cid, bundle, opts)
    return r.run(image_path)


class Restore:
    """A restore in two steps.  Making it prepares all that does not need the
    images: the config is checked, CRIU is started, the container's state
    directory, cgroups, root mount and cgroup yard are made.  ``run`` then hands
    the images to CRIU.  A migration's destination prepares while the source
    still runs, so that only CRIU's own restore is left for the downtime.
    ``abort`` (or a failing ``run``) undoes everything."""

    def __init__(self, root, cid, bundle, opts=None):
        from . import plan as P
        from .record import validate_id
        self.o = o = opts or RestoreOptions()
        validate_id(cid)
        if os.geteuid() != 0:
            raise HutchError("restore: CRIU needs root", errno.EPERM)
        self.root, self.cid = root, cid
        self.criu = criu = C.find(o.criu)
        C.check_version(criu, root)
        self.bundle = os.path.abspath(bundle)
        self.cfg = cfg = P.load(self.bundle)
        for hook in o.config_hooks:     # as create's: a keeper of its own, anew
            hook(cfg, o, root, cid)
        self.attached = []
        self.record = P.criu_record(cfg, self.bundle)
        self.info = info = P.CriuRecord(self.record)
        self.nfd = H.open_ns(info.join["network"]) if "network" in info.join \
            else -1
        self.fds = [self.nfd] if self.nfd >= 0 else []
        self.worker = self.cdir = self.mgr = self.mounted = self.yard = None
        self.csock = -1
        self.pid = 0
        from .record import Record
        self.rec = Record()
        try:
            # CRIU starts (~3 ms) while hutch checks the rest and makes the cgroups
            # and the root; the joined network namespace is the one descriptor it
            # must hold itself
            self.worker = C.Swrk(criu, extra_fds=self.fds, inherit_stdio=True)
            self._prepare()
        except BaseException:
            self.abort()
            raise

    def _prepare(self):
        from ..cgroups.manager import Manager
        from ..linux import kernel as K
        from .create import validate
        from ..log import now_rfc3339
        from .record import ContainerDir, Record
        cfg, o = self.cfg, self.o
        validate(cfg)
        if o.lazy_pages and not C.features(self.criu)["lazy_pages"]:
            raise HutchError("--lazy-pages: this kernel or CRIU lacks userfaultfd "
                             "support", errno.EOPNOTSUPP)
        cdir = ContainerDir(self.root, self.cid)
        cdir.make()
        self.cdir = cdir
        rec = self.rec = Record.new(self.cid, cfg.oci_version, self.bundle,
                                    cfg.root_path, cfg.annotations, now_rfc3339(), "")
        rec.update(restored=True, criu=self.record)
        mgr = self.mgr = Manager.for_container(self.cid, cfg.cgroups_path)
        rec["cgroup"] = mgr.to_state()
        cdir.save(rec)
        mgr.create()
        mgr.apply(cfg.resources)
        if o.attachments:
            # the restored container's own (a keeper serving its views): before
            # CRIU, which binds what they serve where the dump had theirs
            from . import attach
            ctx = attach.Context(self.cid, 0, self.root, self.bundle, cfg, rec)
            attach.attach_all(o.attachments, ctx, cdir.save)
            attach.settle_all(o.attachments, ctx, cdir.save)
            self.attached = ctx.mounts
        if o.manage_cgroups_mode == "ignore":
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
        H.make_mountpoints(k, mounted, cfg, self.bundle, self.info.binds)
        self.yard = H.cgroup_yard(os.path.join(cdir.path, H.YARD))
        if o.console_socket:
            from .console import connect
            self.csock = connect(o.console_socket)
            self.fds.append(self.csock)
        if not o.no_subreaper:
            k.prctl(K.PR_SET_CHILD_SUBREAPER, 1)

    def run(self, image_path):
        """Restores from ``image_path``; see :func:`restore` for what it returns."""
        try:
            failpoint("restore:prepared")
            self._run(image_path)
        except BaseException:
            self.abort()
            raise
        self._release()
        if self.o.detach:
            return 0
        from .console import wait_child
        from .lifecycle import delete
        code = wait_child(self.pid)
        delete(self.root, self.cid, force=True)
        return code

    def _run(self, image_path):
        from .. import jsonlite
        from ..criu import rpc
        from . import plan as P
        from .record import write_pid_file
        cfg, info, mgr, cdir, rec, o = self.cfg, self.info, self.mgr, self.cdir, \
            self.rec, self.o
        image_path = os.path.abspath(image_path)
        work_path = os.path.abspath(o.work_path) if o.work_path else image_path
        try:
            with open(os.path.join(image_path, H.DESCRIPTORS)) as f:
                stdio = jsonlite.loads(f.read())
        except FileNotFoundError:
            raise HutchError(f"restore: {image_path} holds no checkpoint of hutch's "
                             f"or runc's ({H.DESCRIPTORS} is missing)",
                             errno.ENOENT) from None
        img = H.open_dir(image_path, "--image-path")
        self.fds.append(img)
        work = H.open_dir(work_path, "--work-path", create=True)
        self.fds.append(work)
        opts = {
            "images_dir_fd": img, "work_dir_fd": work, "log_file": "restore.log",
            "log_level": 4, "root": self.mounted, "rst_sibling": True,
            "evasive_devices": True, "manage_cgroups": True, "notify_scripts": True,
            "orphan_pts_master": True, "tcp_established": o.tcp_established,
            "ext_unix_sk": o.ext_unix_sk, "shell_job": o.shell_job,
            "file_locks": o.file_locks, "lazy_pages": o.lazy_pages,
            "auto_dedup": o.auto_dedup, "empty_ns": o.empty_ns or None,
            "cg_root": H.cg_root(mgr),
        }
        if self.yard:
            opts["cgroup_yard"] = self.yard
        if o.manage_cgroups_mode:
            opts["manage_cgroups_mode"] = rpc.CG_MODES[o.manage_cgroups_mode]
        H.criu_config(cfg.annotations, opts)
        ext = [{"key": H.resolved_in(self.mounted, dest), "val": src}
               for dest, src in info.binds]
        if info.masked:
            ext.append({"key": "/dev/null", "val": "/dev/null"})
        if info.userns:
            ext += [{"key": p, "val": p} for p in info.devices]
        ext += [{"key": dest, "val": src}
                for dest, src in H.cgroup_binds(info, mgr.paths)]
        ext += [{"key": H.resolved_in(self.mounted, dest), "val": src}
                for src, dest in self.attached]
        opts["ext_mnt"] = ext
        inherit = [{"key": s, "fd": i} for i, s in enumerate(stdio)
                   if isinstance(s, str) and s.startswith("pipe:")]
        if self.nfd >= 0:
            inherit.append({"key": H.NET_KEY, "fd": self.nfd})
        opts["inherit_fd"] = inherit
        csock = self.csock

        def on_notify(script, npid, fds):
            if script == "orphan-pts-master":
                if csock < 0:
                    raise HutchError("restore: the checkpoint has a terminal; give "
                                     "--console-socket", errno.EINVAL)
                from ..linux.fdpass import send_fd
                send_fd(csock, fds[0], "/dev/ptmx")
            elif script in ("setup-namespaces", "post-restore") and npid:
                self.pid = npid
                rec.set_init(npid)
                cdir.save()
                failpoint("restore:notified")
        resp = C.call(self.criu, {"type": rpc.RESTORE, "opts": opts},
                      on_notify=on_notify, what="restore", worker=self.worker)
        if not resp.get("success"):
            raise C.failure(resp, "restore", os.path.join(work_path, "restore.log"))
        failpoint("restore:restored")
        pid = self.pid = (resp.get("restore") or {}).get("pid") or self.pid
        if o.frozen:
            mgr.freeze(True)
        proc = P.ProcessPlan.from_config(cfg.process, P.seccomp_program(cfg, self.root))
        rec.set_init(pid)
        rec["status"] = "running"
        rec["exec"] = P.ExecRecord.of(cfg, proc).to_json()
        cdir.save()
        if rec.get("attachments"):
            from . import attach
            ctx = attach.Context(self.cid, pid, self.root, self.bundle, cfg, rec)
            for entry in rec["attachments"]:
                hook = getattr(attach.resolve(entry["kind"]), "restored", None)
                if hook is not None:
                    hook(ctx, entry.get("data"))
        failpoint("restore:saved")
        if o.pid_file:
            write_pid_file(o.pid_file, pid)

    def _release(self):
        """After a success: CRIU, the yard, the root mount, descriptors, lock."""
        self.worker.close()
        if self.yard:
            H.remove_yard(self.yard)
        unmount_dir(self.mounted)
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
        from .create import undo
        if self.worker is not None:
            self.worker.close(kill=True)    # out of the cgroups undo removes
        if self.yard:
            H.remove_yard(self.yard)
            self.yard = None
        if self.mgr is not None:
            undo(self.rec, self.mgr, self.root)
        unmount_dir(self.mounted)
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


