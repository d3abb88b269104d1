"""The OCI runtime configuration: loading and validation, with no side effects.

``load_config`` turns config.json into a :class:`Config` whose fields are checked for
type, range and shape.  Anything hostile or malformed raises
:class:`hutch.errors.ConfigError` naming the offending field, e.g.
``config.json: process.args[0]: expected a string, got int``.
Fields hutch does not know are ignored, as the spec allows.
"""

import os

from ..errors import ConfigError

NAMESPACES = {
    "pid": 0x20000000, "network": 0x40000000, "mount": 0x00020000, "ipc": 0x08000000,
    "uts": 0x04000000, "user": 0x10000000, "cgroup": 0x02000000, "time": 0x00000080,
}
# the /proc/<pid>/ns/ file of each type
NS_PROC_NAME = {"pid": "pid", "network": "net", "mount": "mnt", "ipc": "ipc",
                "uts": "uts", "user": "user", "cgroup": "cgroup", "time": "time"}

RLIMITS = {
    "RLIMIT_CPU": 0, "RLIMIT_FSIZE": 1, "RLIMIT_DATA": 2, "RLIMIT_STACK": 3,
    "RLIMIT_CORE": 4, "RLIMIT_RSS": 5, "RLIMIT_NPROC": 6, "RLIMIT_NOFILE": 7,
    "RLIMIT_MEMLOCK": 8, "RLIMIT_AS": 9, "RLIMIT_LOCKS": 10, "RLIMIT_SIGPENDING": 11,
    "RLIMIT_MSGQUEUE": 12, "RLIMIT_NICE": 13, "RLIMIT_RTPRIO": 14, "RLIMIT_RTTIME": 15,
}
U64 = (1 << 64) - 1
U32 = (1 << 32) - 1
PROPAGATIONS = ("private", "rprivate", "shared", "rshared", "slave", "rslave",
                "unbindable", "runbindable", "")
HOOK_KINDS = ("prestart", "createRuntime", "createContainer", "startContainer",
              "poststart", "poststop")


class _V:
    """Typed access to one JSON object, with error paths."""

    __slots__ = ("d", "path", "src")

    def __init__(self, d, path, src):
        if not isinstance(d, dict):
            raise ConfigError(f"{src}: {path or 'top level'}: expected an object, "
                              f"got {_tname(d)}")
        self.d, self.path, self.src = d, path, src

    def _p(self, key):
        return f"{self.path}.{key}" if self.path else key

    def err(self, key, msg):
        return ConfigError(f"{self.src}: {self._p(key)}: {msg}")

    def get(self, key, types, default=None, required=False):
        v = self.d.get(key)
        if v is None:
            if required:
                raise self.err(key, "is required")
            return default
        if types is int:
            if not isinstance(v, int) or isinstance(v, bool):
                raise self.err(key, f"expected an integer, got {_tname(v)}")
        elif types is bool:
            if not isinstance(v, bool):
                raise self.err(key, f"expected a boolean, got {_tname(v)}")
        elif not isinstance(v, types):
            want = {str: "a string", list: "a list", dict: "an object"}.get(types, "?")
            raise self.err(key, f"expected {want}, got {_tname(v)}")
        return v

    def int(self, key, lo, hi, default=None, required=False):
        v = self.get(key, int, default, required)
        if v is not None and not lo <= v <= hi:
            raise self.err(key, f"{v} is out of range [{lo}, {hi}]")
        return v

    def str(self, key, default=None, required=False):
        v = self.get(key, str, default, required)
        if v is not None and "\0" in v:
            raise self.err(key, "contains a NUL byte")
        return v

    def strlist(self, key, default=()):
        v = self.get(key, list)
        if v is None:
            return list(default)
        for i, s in enumerate(v):
            if not isinstance(s, str):
                raise self.err(f"{key}[{i}]", f"expected a string, got {_tname(s)}")
            if "\0" in s:
                raise self.err(f"{key}[{i}]", "contains a NUL byte")
        return v

    def obj(self, key, required=False):
        v = self.get(key, dict, None, required)
        return None if v is None else _V(v, self._p(key), self.src)

    def objlist(self, key):
        v = self.get(key, list)
        if v is None:
            return []
        return [_V(x, f"{self._p(key)}[{i}]", self.src) for i, x in enumerate(v)]


def _tname(v):
    if v is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string",
            list: "list", dict: "object"}.get(type(v), type(v).__name__)


class Mount:
    __slots__ = ("destination", "type", "source", "options", "uid_mappings",
                 "gid_mappings")

    def __init__(self, destination, type=None, source=None, options=(),
                 uid_mappings=(), gid_mappings=()):
        self.destination, self.type, self.source = destination, type, source
        self.options = list(options)
        self.uid_mappings, self.gid_mappings = list(uid_mappings), list(gid_mappings)

    def __repr__(self):
        return f"Mount({self.destination!r}, {self.type!r}, {self.source!r}, {self.options})"


class Hook:
    __slots__ = ("path", "args", "env", "timeout")

    def __init__(self, path, args=None, env=None, timeout=None):
        self.path, self.args, self.env, self.timeout = path, args or [path], env, timeout


class Process:
    """The process to run: from config.json's ``process`` or an exec process.json."""

    __slots__ = ("terminal", "console_size", "args", "env", "cwd", "uid", "gid",
                 "umask", "additional_gids", "username", "capabilities", "rlimits",
                 "no_new_privileges", "apparmor_profile", "selinux_label",
                 "oom_score_adj", "command_line")

    def __init__(self):
        self.terminal = False
        self.console_size = None
        self.args = []
        self.env = []
        self.cwd = "/"
        self.uid = self.gid = 0
        self.umask = None
        self.additional_gids = []
        self.username = None
        self.capabilities = None   # dict of set name -> list of names, or None
        self.rlimits = []          # (resource number, soft, hard, name)
        self.no_new_privileges = False
        self.apparmor_profile = None
        self.selinux_label = None
        self.oom_score_adj = None
        self.command_line = None


def parse_process(v, require_args=True):
    """Validates a ``process`` object (``v`` is a _V)."""
    from .. import capabilities
    p = Process()
    p.terminal = v.get("terminal", bool, False)
    cs = v.obj("consoleSize")
    if cs is not None:
        p.console_size = (cs.int("height", 0, 65535, 0), cs.int("width", 0, 65535, 0))
    p.args = v.strlist("args")
    p.command_line = v.str("commandLine")
    if require_args and not p.args:
        raise v.err("args", "must name the program to run")
    p.env = v.strlist("env")
    for i, e in enumerate(p.env):
        if "=" not in e or e.startswith("="):
            raise v.err(f"env[{i}]", f"{e!r} is not of the form KEY=value")
    p.cwd = v.str("cwd", "/")
    if not p.cwd.startswith("/"):
        raise v.err("cwd", f"{p.cwd!r} is not an absolute path")
    user = v.obj("user")
    if user is not None:
        p.uid = user.int("uid", 0, U32 - 1, 0)
        p.gid = user.int("gid", 0, U32 - 1, 0)
        p.umask = user.int("umask", 0, 0o777)
        gids = user.get("additionalGids", list, [])
        for i, g in enumerate(gids):
            if not isinstance(g, int) or isinstance(g, bool) or not 0 <= g < U32:
                raise user.err(f"additionalGids[{i}]", f"{g!r} is not a valid gid")
        p.additional_gids = gids
        p.username = user.str("username")
    caps = v.obj("capabilities")
    if caps is not None:
        p.capabilities = {}
        for kind in ("bounding", "effective", "inheritable", "permitted", "ambient"):
            names = caps.strlist(kind)
            for i, n in enumerate(names):
                if capabilities.number(n) is None:
                    raise caps.err(f"{kind}[{i}]", f"unknown capability {n!r}")
            p.capabilities[kind] = names
    seen = set()
    for r in v.objlist("rlimits"):
        t = r.str("type", required=True)
        if t not in RLIMITS:
            raise r.err("type", f"unknown rlimit {t!r}")
        if t in seen:
            raise r.err("type", f"rlimit {t} is given twice")
        seen.add(t)
        hard = r.int("hard", 0, U64, required=True)
        soft = r.int("soft", 0, U64, required=True)
        if soft > hard:
            raise r.err("soft", f"soft limit {soft} is above the hard limit {hard}")
        p.rlimits.append((RLIMITS[t], soft, hard, t))
    p.no_new_privileges = v.get("noNewPrivileges", bool, False)
    p.apparmor_profile = v.str("apparmorProfile")
    p.selinux_label = v.str("selinuxLabel")
    p.oom_score_adj = v.int("oomScoreAdj", -1000, 1000)
    return p


class Config:
    __slots__ = ("oci_version", "root_path", "root_readonly", "process", "hostname",
                 "domainname", "mounts", "hooks", "annotations", "namespaces",
                 "uid_mappings", "gid_mappings", "time_offsets", "devices",
                 "cgroups_path", "resources", "rootfs_propagation", "masked_paths",
                 "readonly_paths", "mount_label", "sysctl", "seccomp", "raw")

    def ns_flags_new(self):
        """The clone flags of namespaces to create (not joined by path)."""
        f = 0
        for t, path in self.namespaces.items():
            if not path:
                f |= NAMESPACES[t]
        return f

    def has_ns(self, t):
        return t in self.namespaces

    def new_ns(self, t):
        return t in self.namespaces and not self.namespaces[t]


def checkpoint_info(cfg, bundle):
    """What checkpoint needs to know about a container, recorded at create.  A
    relative bind source is the bundle's, as at create.  (Here rather than in
    hutch.criu, whose import would cost every create ~1 ms.)"""
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
            "cgroupns": cfg.new_ns("cgroup")}


def _id_mappings(v, key):
    out = []
    for m in v.objlist(key):
        c = m.int("containerID", 0, U32 - 1, required=True)
        h = m.int("hostID", 0, U32 - 1, required=True)
        s = m.int("size", 1, U32, required=True)
        if c + s > U32 or h + s > U32:
            raise m.err("size", f"mapping {c}:{h}:{s} overflows the 32-bit id range")
        out.append((c, h, s))
    return out


def _clean_dest(v, key, dest):
    if not dest.startswith("/"):
        raise v.err(key, f"{dest!r} is not an absolute path")
    parts = [p for p in dest.split("/") if p and p != "."]
    if ".." in parts:
        raise v.err(key, f"{dest!r} contains '..'")
    return "/" + "/".join(parts)


def parse_config(data, src="config.json", bundle=None):
    v = _V(data, "", src)
    c = Config()
    c.raw = data
    c.oci_version = v.str("ociVersion", "")
    root = v.obj("root")
    if root is None:
        raise ConfigError(f"{src}: root: is required")
    c.root_path = root.str("path", required=True)
    if not c.root_path:
        raise root.err("path", "is empty")
    if bundle is not None and not c.root_path.startswith("/"):
        c.root_path = os.path.join(bundle, c.root_path)
    c.root_readonly = root.get("readonly", bool, False)
    proc = v.obj("process")
    c.process = parse_process(proc) if proc is not None else None
    c.hostname = v.str("hostname")
    c.domainname = v.str("domainname")
    for key, val in (("hostname", c.hostname), ("domainname", c.domainname)):
        if val is not None and len(val.encode()) > 64:
            raise v.err(key, "is longer than 64 bytes")
    c.mounts = []
    for i, m in enumerate(v.objlist("mounts")):
        dest = _clean_dest(m, "destination", m.str("destination", required=True))
        opts = m.strlist("options")
        c.mounts.append(Mount(dest, m.str("type"), m.str("source"), opts,
                              _id_mappings(m, "uidMappings"),
                              _id_mappings(m, "gidMappings")))
    c.hooks = {}
    hooks = v.obj("hooks")
    if hooks is not None:
        for kind in HOOK_KINDS:
            lst = []
            for h in hooks.objlist(kind):
                path = h.str("path", required=True)
                if not path.startswith("/"):
                    raise h.err("path", f"{path!r} is not an absolute path")
                args = h.strlist("args") or [path]
                env = h.strlist("env") if h.d.get("env") is not None else None
                lst.append(Hook(path, args, env, h.int("timeout", 1, 1 << 31)))
            if lst:
                c.hooks[kind] = lst
    ann = v.get("annotations", dict, {})
    for k, val in ann.items():
        if not isinstance(val, str):
            raise v.err(f"annotations.{k}", f"expected a string, got {_tname(val)}")
    c.annotations = ann
    lin = v.obj("linux") or _V({}, "linux", src)
    c.namespaces = {}
    for n in lin.objlist("namespaces"):
        t = n.str("type", required=True)
        if t not in NAMESPACES:
            raise n.err("type", f"unknown namespace type {t!r}")
        if t in c.namespaces:
            raise n.err("type", f"namespace {t} is given twice")
        path = n.str("path", "")
        if path and not path.startswith("/"):
            raise n.err("path", f"{path!r} is not an absolute path")
        c.namespaces[t] = path
    c.uid_mappings = _id_mappings(lin, "uidMappings")
    c.gid_mappings = _id_mappings(lin, "gidMappings")
    if c.new_ns("user") and not (c.uid_mappings and c.gid_mappings):
        raise lin.err("uidMappings", "a new user namespace needs uidMappings and "
                      "gidMappings")
    if (c.uid_mappings or c.gid_mappings) and not c.new_ns("user"):
        raise lin.err("uidMappings", "mappings are given without a new user namespace")
    c.time_offsets = {}
    to = lin.obj("timeOffsets")
    if to is not None:
        if not c.new_ns("time"):
            raise lin.err("timeOffsets", "needs a new time namespace")
        for clock in ("monotonic", "boottime"):
            o = to.obj(clock)
            if o is not None:
                c.time_offsets[clock] = (o.int("secs", -(1 << 62), 1 << 62, 0),
                                         o.int("nanosecs", 0, 999999999, 0))
    c.devices = []
    for d in lin.objlist("devices"):
        t = d.str("type", required=True)
        if t not in ("c", "b", "u", "p"):
            raise d.err("type", f"unknown device type {t!r}")
        path = _clean_dest(d, "path", d.str("path", required=True))
        if not path.startswith("/dev/"):
            raise d.err("path", f"{path!r} is not under /dev")
        major = d.int("major", 0, (1 << 32) - 1, 0 if t == "p" else None,
                      required=(t != "p"))
        minor = d.int("minor", 0, (1 << 32) - 1, 0 if t == "p" else None,
                      required=(t != "p"))
        c.devices.append((path, t, major, minor, d.int("fileMode", 0, 0o7777),
                          d.int("uid", 0, U32 - 1), d.int("gid", 0, U32 - 1)))
    c.cgroups_path = lin.str("cgroupsPath")
    from ..cgroups.resources import normalise, validate as validate_resources
    c.resources = normalise(lin.get("resources", dict))
    from ..errors import HutchError
    try:
        validate_resources(c.resources)
    except HutchError as e:
        raise ConfigError(f"{src}: {e.args[0]}", e.errno) from None
    c.rootfs_propagation = lin.str("rootfsPropagation", "")
    if c.rootfs_propagation not in PROPAGATIONS:
        raise lin.err("rootfsPropagation", f"unknown propagation "
                      f"{c.rootfs_propagation!r}")
    c.masked_paths = [_clean_dest(lin, "maskedPaths", p) for p in lin.strlist("maskedPaths")]
    c.readonly_paths = [_clean_dest(lin, "readonlyPaths", p)
                        for p in lin.strlist("readonlyPaths")]
    c.mount_label = lin.str("mountLabel")
    sysctl = lin.get("sysctl", dict, {})
    for k, val in sysctl.items():
        if not isinstance(val, str):
            raise lin.err(f"sysctl.{k}", f"expected a string, got {_tname(val)}")
    c.sysctl = sysctl
    c.seccomp = lin.get("seccomp", dict)
    return c


def load_config(bundle):
    from .. import jsonlite
    path = os.path.join(bundle, "config.json")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError as e:
        raise ConfigError(f"cannot read {path}: {e.strerror}", e.errno) from None
    try:
        obj = jsonlite.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as e:
        raise ConfigError(f"config.json: {e}") from None
    return parse_config(obj, "config.json", bundle)
