"""`create`: a container from a bundle, its init waiting for `start`.

The steps, each recorded before it is taken so that a failure (or a SIGKILL) at
any point is rolled back, here or by a later `delete -f`:

1. the state directory and a record with status "creating";
2. the cgroups (the helper that becomes the init joins them while it starts:
   the first cgroup migration can wait for an RCU grace period, ~10 ms here);
3. the host checks, the resource limits and the seccomp program;
4. the fork chain (:mod:`hutch.process.launch`): the init's pid is recorded as
   soon as it exists; then the attachments run (:mod:`.attach`), then the init
   makes the rootfs, the device rules go in, and the createRuntime hooks run;
5. the record, complete, with status "created"; the pid file.
"""

import errno
import os

from ..errors import ConfigError, HutchError, failpoint
from . import plan as P
from ..log import now_rfc3339
from .record import ContainerDir, Record, kill_wait, validate_id, write_pid_file


class CreateOptions(P.Options):
    """runc's create flags, plus what the library and `run` pass."""
    console_socket = None     # path of a unix socket to send the pty master to
    console_fd = -1           # an already connected console socket (run's proxy)
    pid_file = None
    no_pivot = False
    no_new_keyring = False
    preserve_fds = 0
    rootless = None           # None: rootless if not root
    attachments = ()          # :mod:`.attach` objects, run in order
    stdio = None              # (fd, fd, fd): the init's 0, 1, 2 (else the caller's)
    helper = None             # a started process.helper.Helper to use (the library's)
    config_hooks = ()         # fn(cfg, opts, root, cid) before anything is made: the
                              # CLI's (annotations that ask for a keeper)


def create(root, cid, bundle, opts=None, cfg=None):
    """Creates container ``cid`` from the bundle's config.json (or ``cfg``, a
    parsed config, as the sandbox passes).  Returns the record."""
    o = opts or CreateOptions()
    try:
        return _create(root, cid, bundle, o, cfg)
    finally:
        if o.helper is not None:      # refused before the helper was used
            o.helper.close()
            o.helper = None


def _create(root, cid, bundle, o, cfg):
    validate_id(cid)
    bundle = os.path.abspath(bundle)
    if cfg is None:
        cfg = P.load(bundle)
    rootless = is_rootless() if o.rootless is None else o.rootless
    for hook in o.config_hooks:
        hook(cfg, o, root, cid)
    if rootless and not cfg.new_ns("user") and not cfg.has_ns("user"):
        raise ConfigError("config.json: linux.namespaces: rootless containers need a "
                          "user namespace (hutch spec --rootless writes one)", errno.EPERM)
    cdir = ContainerDir(root, cid)
    cdir.make()
    rec = Record.new(cid, cfg.oci_version, bundle, cfg.root_path, cfg.annotations,
                     now_rfc3339(), _user_name(os.geteuid()))
    rec["hooks"] = P.lifecycle_hooks(cfg)
    b = _Build(root, cdir, rec, cfg, bundle, o, rootless)
    try:
        b.run()
    except BaseException:
        b.rollback()
        raise
    finally:
        cdir.unlock()
    return rec


class _Build:
    """One create's progress: what it has made so far, for the rollback."""

    def __init__(self, root, cdir, rec, cfg, bundle, o, rootless):
        self.root, self.cdir, self.rec, self.cfg = root, cdir, rec, cfg
        self.bundle, self.o, self.rootless = bundle, o, rootless
        self.mgr = self.helper = None
        self.actx = None          # the attachments' Context, for their settle
        self.join, self.csock = [], -1

    def run(self):
        from ..cgroups.manager import Manager
        cdir, rec, cfg, o = self.cdir, self.rec, self.cfg, self.o
        failpoint("create:dir")
        self.mgr = Manager.for_container(rec.id, cfg.cgroups_path)
        rec["cgroup"] = self.mgr.to_state()
        cdir.save(rec)
        os.mkfifo(cdir.fifo, 0o622)
        os.chmod(cdir.fifo, 0o622)     # past the umask: a user-namespace root writes it
        failpoint("create:state")
        self._cgroups()
        failpoint("create:cgroups")
        # the helper that becomes the init joins the cgroups (and makes the
        # namespaces) while the checks below run: process/launch.py, prepare
        from ..linux.exeguard import may_clear_immutable
        from ..process import helper, launch
        strict = may_clear_immutable(cfg.process.capabilities if cfg.process else None,
                                     cfg.has_ns("user"))
        self.helper = helper.take(close=(cdir.lock_fd,), strict=strict, spare=o.helper)
        o.helper = None
        launch.prepare(self.helper, cfg, self.mgr.paths if self.mgr else {})
        failpoint("create:helper")
        validate(cfg)
        if self.mgr is not None:
            self.mgr.apply(cfg.resources, devices=False)
        failpoint("create:resources")
        nlisten = P.listen_fds()
        proc = P.ProcessPlan.from_config(cfg.process, P.seccomp_program(cfg, self.root))
        if nlisten:
            proc.env = proc.env + [f"LISTEN_FDS={nlisten}", "LISTEN_PID=1"]
        from ..namespaces import open_join_fds
        self.join = open_join_fds(cfg.namespaces)
        if o.console_socket:
            from .console import connect
            self.csock = connect(o.console_socket)
        elif o.console_fd >= 0:
            self.csock = os.dup(o.console_fd)
        init = P.init_plan(
            cfg, rec.id, self.bundle, proc,
            cgroup_paths=self.mgr.paths if self.mgr else {}, rootless=self.rootless,
            join=self.join, console_fd=self.csock,
            fifo_fd=os.open(cdir.fifo, os.O_PATH | os.O_CLOEXEC),
            keep_fds=3 + nlisten + o.preserve_fds, no_pivot=o.no_pivot,
            no_new_keyring=o.no_new_keyring, state_dir=cdir.path, stdio=o.stdio)
        self.join, self.csock = [], -1      # the spawn owns (and closes) them now
        h, self.helper = self.helper, None
        failpoint("create:spawn")
        mgr = self.mgr

        def records():
            # what exec and checkpoint need, made while the init finishes its rootfs
            rec["exec"] = P.ExecRecord.of(cfg, proc, o.no_new_keyring, strict).to_json()
            rec["criu"] = P.criu_record(cfg, self.bundle, self.rootless)
        def on_rootfs():
            # the init has made its rootfs: what the attachments did meanwhile
            # is finished, then the device rules go in (before the hooks)
            if self.actx is not None:
                from . import attach
                attach.settle_all(o.attachments, self.actx, cdir.save)
            if mgr is not None:
                mgr.apply_devices(cfg.resources)
        launch.spawn(init, h, self._on_pid, self._hooks_state,
                     on_rootfs=on_rootfs if mgr is not None or o.attachments else None,
                     meanwhile=records,
                     on_namespaces=self._attach if o.attachments else None)
        failpoint("create:ready")
        rec["status"] = "created"
        if "exec" not in rec:
            records()
        cdir.save()
        failpoint("create:saved")
        if o.pid_file:
            write_pid_file(o.pid_file, rec.pid)
        failpoint("create:done")

    def _cgroups(self):
        cdir, rec, cfg, mgr = self.cdir, self.rec, self.cfg, self.mgr
        try:
            mgr.create()
        except HutchError as e:
            if not self.rootless or e.errno not in (errno.EPERM, errno.EACCES,
                                                    errno.EROFS):
                raise
            # rootless, and the cgroup tree is not delegated to this user
            if _wants_limits(cfg.resources):
                raise HutchError(f"rootless: linux.resources needs cgroups, but {e} "
                                 "(the cgroup tree is not delegated to uid "
                                 f"{os.geteuid()}); remove linux.resources or run as "
                                 "root", e.errno) from None
            from ..log import warn
            warn(f"rootless: running without cgroups ({e}): uid {os.geteuid()} has "
                 "no delegated cgroup tree, so limits, pause, update and stats are "
                 "unavailable")
            try:
                mgr.destroy_created()
            except HutchError:
                pass
            mgr = self.mgr = None
        if mgr is not None and not set(mgr.paths.values()) <= set(mgr.created):
            # a cgroup that was there already (only then is it worth a look)
            n = len(mgr.pids())
            if n:
                from ..log import warn
                warn(f"container's cgroup is not empty: {n} process(es) found; they "
                     "share its limits, and a delete of this container kills them")
        if mgr is not None and mgr.is_frozen():
            # an init put in a frozen cgroup would wait there forever (runc's words)
            raise HutchError("container's cgroup unexpectedly frozen: thaw "
                             f"{mgr.paths.get('freezer') or mgr.paths.get('unified')} "
                             "(or its parent) first", errno.EBUSY)
        rec["cgroup"] = mgr.to_state() if mgr else None
        cdir.save()

    def _on_pid(self, pid):
        """The init exists and makes its rootfs: its identity is recorded."""
        if self.rec.pid != pid:
            self.rec.set_init(pid)
            self.cdir.save()
        failpoint("create:pid")

    def _attach(self, pid):
        """The init exists with all its namespaces and waits for "go": the
        attachments run (its pid recorded first, for their undo)."""
        from . import attach
        self.rec.set_init(pid)
        self.cdir.save()
        ctx = attach.Context(self.rec.id, pid, self.root, self.bundle, self.cfg,
                             self.rec)
        attach.attach_all(self.o.attachments, ctx, self.cdir.save)
        self.actx = ctx
        return ctx.mounts

    def _hooks_state(self, pid, as_json=True):
        cfg = self.cfg
        st = {"ociVersion": cfg.oci_version, "id": self.rec.id, "status": "creating",
              "pid": pid, "bundle": self.bundle, "annotations": cfg.annotations}
        if not as_json:
            return st
        from .. import jsonlite
        return jsonlite.dumps(st)

    def rollback(self):
        if self.helper is not None:
            self.helper.close()
        for _, fd in self.join:
            os.close(fd)
        if self.csock >= 0:
            os.close(self.csock)
        undo(self.rec, self.mgr, self.root)
        try:
            self.cdir.remove()
        except HutchError as e:     # the create's own error matters more
            from ..log import warn
            warn(str(e))


def undo(rec, mgr, root=None):
    """Rolls back a create or restore that failed part-way: its attachments,
    the init (if any) and the cgroups it made; the caller removes the state
    directory."""
    if rec.get("attachments"):
        from . import attach
        from ..log import warn
        for err in attach.detach_all(attach.Context(rec.id, rec.pid, root, rec.bundle,
                                                    None, rec)):
            warn(err)
    kill_wait(rec.pid, rec.starttime)
    if mgr is not None:
        try:
            mgr.destroy_created()
        except HutchError:
            pass


def validate(cfg):
    """Checks that need the host, before anything is changed."""
    from .. import capabilities
    from ..namespaces import check_sysctls
    if cfg.process is None:
        raise ConfigError("config.json: process: is required")
    if not cfg.new_ns("mount") and (cfg.masked_paths or cfg.readonly_paths):
        # without a mount namespace of its own (none, or one joined by path) the
        # container's mounts are not hutch's to make, as with runc
        raise ConfigError("config.json: unable to restrict sys entries without a "
                          "private MNT namespace (linux.maskedPaths and "
                          "linux.readonlyPaths need a new mount namespace)")
    if not os.path.isdir(cfg.root_path):
        raise ConfigError(f"config.json: root.path: {cfg.root_path} is not a directory",
                          errno.ENOENT)
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
            from ..log import debug
            debug("ambient capabilities not raised, as they are not both permitted "
                  "and inheritable: " + ", ".join(skipped))
    from .. import lsm
    lsm.check(cfg.process.apparmor_profile, cfg.process.selinux_label,
              "config.json: process")
    if cfg.mount_label and not lsm.selinux_active():
        raise ConfigError(f"config.json: linux.mountLabel {cfg.mount_label!r} was "
                          "requested, but SELinux is not enabled on this host "
                          f"({lsm.SELINUX_FS} is not mounted)", errno.EOPNOTSUPP)


def is_rootless(flag="auto"):
    """--rootless true|false|auto: auto means "not root"."""
    return flag == "true" or (flag == "auto" and os.geteuid() != 0)


def _wants_limits(resources):
    """True if linux.resources asks for anything but the device list (which a
    user namespace enforces anyway: no mknod, no device access beyond the host's
    own permissions)."""
    return any(v not in (None, {}, []) for k, v in (resources or {}).items()
               if k != "devices")


def _user_name(uid):
    import pwd
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)
