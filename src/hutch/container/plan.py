"""The config turned into plans: what each verb hands to the processes that do
the work, and what it records for the verbs that come later.  Every shape is built
here and nowhere else:

- :class:`ProcessPlan`: a process to run (the init's, or an exec's), built from
  config.json's ``process``, from a process.json, or from the record of the
  init's confinement; :meth:`ProcessPlan.wire` is what the helper receives;
- :func:`init_plan`: everything the container's init needs, sent to stage1;
- :class:`ExecRecord`: the init's confinement, kept in the record for `exec`;
- :class:`CriuRecord`: what `checkpoint` needs to know about the container;
- :func:`seccomp_program`: the compiled filter, through the state root's cache.

Plans are plain classes with slots: ``dataclasses`` would cost ~7 ms of imports
on every verb.
"""

import os

from ..errors import ConfigError, HutchError


class Options:
    """A verb's options: class attributes are the defaults; ``Options(**kw)``
    sets only names the class declares, so a misspelt option fails loudly."""

    def __init__(self, **kw):
        for k, v in kw.items():
            if not hasattr(type(self), k) or k.startswith("_"):
                raise TypeError(f"{type(self).__name__}: no option {k!r}")
            setattr(self, k, v)

    def __repr__(self):
        names = [k for k in dir(type(self)) if not k.startswith("_") and
                 not callable(getattr(type(self), k))]
        return f"{type(self).__name__}({', '.join(f'{k}={getattr(self, k)!r}' for k in names)})"


def load(bundle):
    """The bundle's config.json, parsed and checked (see :mod:`hutch.spec.config`);
    the one place a verb reads it."""
    from ..spec.config import load_config
    return load_config(bundle)


# --- processes ------------------------------------------------------------------
class ProcessPlan:
    """A process to run, in the shape the helper and the init take."""

    FIELDS = ("args", "env", "cwd", "uid", "gid", "additional_gids", "umask",
              "capabilities", "no_new_privileges", "rlimits", "oom_score_adj",
              "terminal", "console_size", "seccomp", "apparmor", "selinux",
              "user_name", "group_name")
    # what the record keeps of the init's process: the rest is per exec
    CONFINEMENT = ("env", "cwd", "uid", "gid", "additional_gids", "umask",
                   "capabilities", "no_new_privileges", "rlimits", "oom_score_adj",
                   "apparmor", "selinux")
    __slots__ = FIELDS

    def __init__(self, **kw):
        self.args, self.env, self.cwd = [], [], "/"
        self.uid = self.gid = 0
        self.additional_gids, self.rlimits = [], []
        self.umask = self.capabilities = self.oom_score_adj = None
        self.no_new_privileges = self.terminal = False
        self.console_size = self.seccomp = self.apparmor = self.selinux = None
        self.user_name = self.group_name = None
        for k, v in kw.items():
            setattr(self, k, v)

    @classmethod
    def from_config(cls, p, seccomp=None):
        """From a parsed ``process`` (:class:`hutch.spec.config.Process`)."""
        return cls(args=p.args, env=p.env, cwd=p.cwd, uid=p.uid, gid=p.gid,
                   additional_gids=p.additional_gids, umask=p.umask,
                   capabilities=p.capabilities,
                   no_new_privileges=p.no_new_privileges, rlimits=p.rlimits,
                   oom_score_adj=p.oom_score_adj, terminal=p.terminal,
                   console_size=p.console_size, seccomp=seccomp,
                   apparmor=p.apparmor_profile, selinux=p.selinux_label)

    @classmethod
    def from_record(cls, rec):
        """The init's process as an :class:`ExecRecord` kept it (its
        ``process``): where an exec starts from."""
        plan = cls(**{k: rec[k] for k in cls.CONFINEMENT if k in rec})
        plan.rlimits = [tuple(r) for r in plan.rlimits]
        if rec.get("seccomp") is not None:
            from ..seccomp import from_state
            plan.seccomp = from_state(rec["seccomp"])
        return plan

    def over_json(self, data, p):
        """An exec process.json (``data``, parsed as ``p``) over this process:
        what it gives replaces; capabilities, no_new_privileges, rlimits, the
        OOM score and labels it leaves out stay the init's, as in runc."""
        self.args, self.env, self.cwd = p.args, p.env, p.cwd
        self.uid, self.gid, self.additional_gids = p.uid, p.gid, p.additional_gids
        self.umask, self.terminal, self.console_size = p.umask, p.terminal, \
            p.console_size
        if "capabilities" in data:
            self.capabilities = p.capabilities
        if "noNewPrivileges" in data:
            self.no_new_privileges = p.no_new_privileges
        if p.rlimits:
            self.rlimits = p.rlimits
        if p.oom_score_adj is not None:
            self.oom_score_adj = p.oom_score_adj
        if p.apparmor_profile:
            self.apparmor = p.apparmor_profile
        if p.selinux_label:
            self.selinux = p.selinux_label
        return self

    def wire(self):
        """The dict the helper, the init and finalize take."""
        return {k: getattr(self, k) for k in self.FIELDS}

    def confinement(self):
        """What the record keeps (see :class:`ExecRecord`), seccomp as text."""
        out = {k: getattr(self, k) for k in self.CONFINEMENT}
        if self.seccomp is not None:
            from ..seccomp import to_state
            out["seccomp"] = to_state(self.seccomp)
        return out


# --- the init -------------------------------------------------------------------
def plain_mounts(cfg):
    return [{"destination": m.destination, "type": m.type, "source": m.source,
             "options": m.options} for m in cfg.mounts]


def init_plan(cfg, cid, bundle, proc, *, cgroup_paths, rootless, join, console_fd,
              fifo_fd, keep_fds, no_pivot, no_new_keyring, state_dir, stdio=None):
    """Everything the container's init needs, as stage1 receives it.  The fds
    in it (``join``, ``console_fd``, ``fifo_fd``) pass to the spawn, which
    closes them.  ``stdio``: three fds for the init's 0, 1 and 2 instead of
    the caller's own (the library's pipes); they stay the caller's."""
    from ..hooks import hooks_to_plain
    from ..namespaces import new_flags, time_offsets_text
    return {
        "id": cid, "oci_version": cfg.oci_version, "bundle": bundle,
        "annotations": cfg.annotations, "root": cfg.root_path,
        "rootfs_propagation": cfg.rootfs_propagation,
        "root_readonly": cfg.root_readonly, "mounts": plain_mounts(cfg),
        "devices": cfg.devices, "masked_paths": cfg.masked_paths,
        "readonly_paths": cfg.readonly_paths, "new_mountns": cfg.new_ns("mount"),
        "userns": cfg.has_ns("user"), "new_user": cfg.new_ns("user"),
        "new_cgroupns": cfg.new_ns("cgroup"), "cgroup_paths": cgroup_paths,
        "rootless": rootless, "hostname": cfg.hostname,
        "domainname": cfg.domainname, "sysctl": cfg.sysctl, "join": join,
        "join_paths": {t: p for t, p in cfg.namespaces.items() if p},
        "new_flags": new_flags(cfg.namespaces),
        "time_offsets": time_offsets_text(cfg.time_offsets),
        "uid_mappings": cfg.uid_mappings, "gid_mappings": cfg.gid_mappings,
        "process": proc.wire(), "hooks": hooks_to_plain(cfg.hooks),
        "no_pivot": no_pivot, "no_new_keyring": no_new_keyring,
        "console_socket": console_fd, "fifo_fd": fifo_fd, "keep_fds": keep_fds,
        "loopback": cfg.new_ns("network"), "state_dir": state_dir,
        "stdio": list(stdio) if stdio else None,
    }


def lifecycle_hooks(cfg):
    """The hooks later verbs run (start's poststart, delete's poststop)."""
    from ..hooks import hooks_to_plain
    return hooks_to_plain({k: v for k, v in cfg.hooks.items()
                           if k in ("poststart", "poststop")})


# --- what later verbs need --------------------------------------------------------
class ExecRecord:
    """The init's confinement, which `exec` gives its processes: the process's
    user, env, capabilities, rlimits, labels and filter, the namespaces to join,
    and whether exec must re-exec from the read-only interpreter clone."""

    __slots__ = ("process", "namespaces", "no_new_keyring", "strict_guard")

    def __init__(self, process, namespaces, no_new_keyring=False, strict_guard=True):
        self.process, self.namespaces = process, namespaces
        self.no_new_keyring, self.strict_guard = no_new_keyring, strict_guard

    @classmethod
    def of(cls, cfg, proc, no_new_keyring=False, strict_guard=True):
        return cls(proc.confinement(), sorted(cfg.namespaces), no_new_keyring,
                   strict_guard)

    @classmethod
    def from_record(cls, record, root=None):
        """From the record; a format-0 record made before this was kept has it
        rebuilt from the bundle's config.json."""
        info = record.exec_info
        if info is not None:
            return cls(info["process"], info["namespaces"],
                       info.get("no_new_keyring", False),
                       info.get("strict_guard", True))
        cfg = load(record.bundle)
        prog = seccomp_program(cfg, root) if cfg.seccomp is not None else None
        return cls.of(cfg, ProcessPlan.from_config(cfg.process, prog))

    def to_json(self):
        return {"process": self.process, "namespaces": self.namespaces,
                "no_new_keyring": self.no_new_keyring,
                "strict_guard": self.strict_guard}


def criu_record(cfg, bundle, rootless=False):
    """What checkpoint and restore need to know about a container, recorded at
    create (:class:`CriuRecord`'s JSON form).  A relative bind source is the
    bundle's, as at create."""
    binds = [(m.destination, os.path.join(bundle, m.source or "")) for m in cfg.mounts
             if m.type == "bind" or "bind" in m.options or "rbind" in m.options]
    devices = [d[0] for d in cfg.devices]
    if cfg.has_ns("user"):
        from ..rootfs.setup import DEFAULT_DEVICES
        devices += [d[0] for d in DEFAULT_DEVICES if d[0] not in devices]
    return {"binds": binds, "masked": list(cfg.masked_paths), "devices": devices,
            "join": {t: p for t, p in cfg.namespaces.items() if p},
            "userns": cfg.has_ns("user"),
            "cgroup_mounts": [m.destination for m in cfg.mounts if m.type == "cgroup"],
            "cgroupns": cfg.new_ns("cgroup"), "rootless": rootless}


class CriuRecord:
    """:func:`criu_record`'s JSON, read back with defaults for what an older
    record lacks."""

    __slots__ = ("binds", "masked", "devices", "join", "userns", "cgroup_mounts",
                 "cgroupns", "rootless")

    def __init__(self, data):
        data = data or {}
        self.binds = [tuple(b) for b in data.get("binds", ())]
        self.masked = list(data.get("masked", ()))
        self.devices = list(data.get("devices", ()))
        self.join = dict(data.get("join") or {})
        self.userns = bool(data.get("userns"))
        self.cgroup_mounts = list(data.get("cgroup_mounts", ()))
        self.cgroupns = bool(data.get("cgroupns"))
        self.rootless = bool(data.get("rootless"))


def seccomp_program(cfg, root=None):
    """The config's seccomp filter compiled (None without one), through the
    state root's cache of compiled programs."""
    if cfg.seccomp is None:
        return None
    from .. import seccomp
    return seccomp.compile(cfg.seccomp, cache_dir=os.path.join(root, ".seccomp-cache")
                           if root else None)


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


def process_json(path):
    """An exec --process file: (the JSON object, its parsed Process)."""
    from .. import jsonlite
    from ..spec.config import parse_process_json
    try:
        with open(path, "rb") as f:
            data = jsonlite.loads(f.read())
    except OSError as e:
        raise HutchError(f"read --process {path}: {e.strerror}", e.errno) from None
    except ValueError as e:
        raise ConfigError(f"process.json: not valid JSON: {e}") from None
    return data, parse_process_json(data)
