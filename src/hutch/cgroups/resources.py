"""linux.resources -> cgroup file writes, for v1 and v2.

:func:`plan` turns the OCI resources object into an ordered list of
:class:`Write` (controller, version, file, value, field), choosing for each
controller the hierarchy that has it: a v1 hierarchy, else the unified one (v2),
converting units the way the OCI runtime spec and runc document:

- cpu.shares (2..262144) -> cpu.weight (1..10000): 1 + ((shares - 2) * 9999) // 262142
- blkio weight (10..1000) -> io.weight (1..10000): 1 + ((weight - 10) * 9999) // 990
- memory.swap is memory+swap in OCI and v1; v2's memory.swap.max is swap alone
- quota/period -> "cpu.max" ("max PERIOD" when the quota is unlimited)
- throttles -> io.max "MAJ:MIN rbps=N wbps=N riops=N wiops=N"

A value for a controller the host lacks is refused with a clear error, unless it
is zero, unset or the default (runc's rule).  No value is ever silently dropped.
"""

from errno import EINVAL, EOPNOTSUPP, ERANGE

from ..errors import HutchError


class Write:
    __slots__ = ("controller", "version", "file", "value", "field")

    def __init__(self, controller, version, file, value, field):
        self.controller, self.version = controller, version
        self.file, self.value, self.field = file, str(value), field

    def __repr__(self):
        return f"Write({self.controller}, v{self.version}, {self.file}={self.value!r})"

    def __eq__(self, other):
        return (self.controller, self.version, self.file, self.value) == \
            (other.controller, other.version, other.file, other.value)


def shares_to_weight(shares):
    if not shares:
        return 0
    shares = min(max(shares, 2), 262144)
    return 1 + ((shares - 2) * 9999) // 262142


def blkio_weight_to_io(weight):
    if not weight:
        return 0
    return 1 + ((weight - 10) * 9999) // 990


def swap_v2(swap, limit):
    """OCI memory.swap (memory+swap) -> v2 memory.swap.max (swap only)."""
    if swap == -1:
        return "max"
    if not limit or limit == -1:
        raise HutchError("linux.resources.memory.swap: a swap limit needs a memory "
                         "limit on cgroup v2", EINVAL)
    if swap < limit:
        raise HutchError(f"linux.resources.memory.swap: {swap} is below the memory "
                         f"limit {limit} (it is memory+swap)", EINVAL)
    return swap - limit


def _max(v):
    return "max" if v is None or v < 0 else v


class Planner:
    """Where each controller lives: ``v1`` = set of v1 controller names,
    ``v2`` = controllers enabled for the container's v2 cgroup (or None when there
    is no unified hierarchy)."""

    def __init__(self, v1, v2):
        self.v1 = set(v1)
        self.v2 = None if v2 is None else set(v2)
        self.out = []

    def where(self, c1, c2=None):
        if c1 in self.v1:
            return 1
        if self.v2 is not None and (c2 or c1) in self.v2:
            return 2
        return 0

    def w(self, ctrl, ver, file, value, field):
        self.out.append(Write(ctrl, ver, file, value, field))

    def copy(self, section, d, table):
        """v1 values written as given: (key, file) pairs; unset or 0 is skipped."""
        for key, file in table:
            if d.get(key):
                self.w(section, 1, file, d[key], f"{section}.{key}")

    def missing(self, field, ctrl, why=""):
        raise HutchError(f"linux.resources.{field}: the {ctrl} controller is not "
                         f"available on this host{why}", EOPNOTSUPP)

    # --- memory -------------------------------------------------------------------
    def memory(self, m):
        interesting = {k: v for k, v in m.items() if v not in (None, 0, False)}
        if m.get("useHierarchy") is True:
            interesting.pop("useHierarchy")    # always on in modern kernels
        if not interesting:
            return
        ver = self.where("memory")
        if ver == 0:
            self.missing("memory", "memory")
        limit, swap = m.get("limit"), m.get("swap")
        if m.get("kernel"):
            raise HutchError("linux.resources.memory.kernel: kernel memory limits were "
                             "removed from Linux (5.16 deprecated them, 6.x dropped "
                             "them); remove the setting", EOPNOTSUPP)
        if ver == 1:
            self.copy("memory", m, (("limit", "memory.limit_in_bytes"),
                                    ("swap", "memory.memsw.limit_in_bytes"),
                                    ("reservation", "memory.soft_limit_in_bytes"),
                                    ("kernelTCP", "memory.kmem.tcp.limit_in_bytes")))
            if m.get("swappiness") is not None:
                if not 0 <= m["swappiness"] <= 100:
                    raise HutchError("linux.resources.memory.swappiness: must be 0..100, "
                                     f"not {m['swappiness']}", EINVAL)
                self.w("memory", 1, "memory.swappiness", m["swappiness"],
                       "memory.swappiness")
            if m.get("disableOOMKiller"):
                self.w("memory", 1, "memory.oom_control", 1, "memory.disableOOMKiller")
            if m.get("useHierarchy") is False:
                raise HutchError("linux.resources.memory.useHierarchy: false is not "
                                 "supported by this kernel (hierarchy is always on)",
                                 EOPNOTSUPP)
            return
        if limit:
            self.w("memory", 2, "memory.max", _max(limit), "memory.limit")
        if swap:
            self.w("memory", 2, "memory.swap.max", swap_v2(swap, limit), "memory.swap")
        if m.get("reservation"):
            self.w("memory", 2, "memory.low", _max(m["reservation"]), "memory.reservation")
        for key in ("kernelTCP", "disableOOMKiller"):
            if m.get(key):
                raise HutchError(f"linux.resources.memory.{key}: not supported on cgroup "
                                 "v2", EOPNOTSUPP)
        if m.get("swappiness") not in (None, 0):
            raise HutchError("linux.resources.memory.swappiness: cgroup v2 has no "
                             "per-cgroup swappiness", EOPNOTSUPP)
        if m.get("useHierarchy") is False:
            raise HutchError("linux.resources.memory.useHierarchy: cgroup v2 is always "
                             "hierarchical", EOPNOTSUPP)

    # --- cpu and cpuset -----------------------------------------------------------
    def cpu(self, c):
        sched = {k: v for k, v in c.items()
                 if k not in ("cpus", "mems") and v not in (None, 0)}
        if sched:
            ver = self.where("cpu")
            if ver == 0:
                self.missing("cpu", "cpu")
            quota, period = c.get("quota"), c.get("period")
            if ver == 1:
                self.copy("cpu", c, (("shares", "cpu.shares"), ("period", "cpu.cfs_period_us"),
                                     ("burst", "cpu.cfs_burst_us"),
                                     ("realtimePeriod", "cpu.rt_period_us"),
                                     ("realtimeRuntime", "cpu.rt_runtime_us"),
                                     ("idle", "cpu.idle")))
                if quota:
                    self.w("cpu", 1, "cpu.cfs_quota_us", quota if quota > 0 else -1,
                           "cpu.quota")
            else:
                if c.get("shares"):
                    self.w("cpu", 2, "cpu.weight", shares_to_weight(c["shares"]),
                           "cpu.shares")
                if quota or period:
                    q = "max" if not quota or quota < 0 else quota
                    self.w("cpu", 2, "cpu.max", f"{q} {period or 100000}",
                           "cpu.quota")
                if c.get("burst"):
                    self.w("cpu", 2, "cpu.max.burst", c["burst"], "cpu.burst")
                if c.get("idle"):
                    self.w("cpu", 2, "cpu.idle", c["idle"], "cpu.idle")
                if c.get("realtimePeriod") or c.get("realtimeRuntime"):
                    raise HutchError("linux.resources.cpu.realtime*: cgroup v2 has no "
                                     "realtime settings", EOPNOTSUPP)
        if c.get("cpus") or c.get("mems"):
            ver = self.where("cpuset")
            if ver == 0:
                self.missing("cpu.cpus", "cpuset")
            for key in ("cpus", "mems"):
                if c.get(key):
                    self.w("cpuset", ver, f"cpuset.{key}", c[key], f"cpu.{key}")

    # --- pids ---------------------------------------------------------------------
    def pids(self, p):
        limit = p.get("limit")
        if not limit:
            return
        ver = self.where("pids")
        if ver == 0:
            self.missing("pids", "pids")
        self.w("pids", ver, "pids.max", _max(limit), "pids.limit")

    # --- block io -----------------------------------------------------------------
    def block_io(self, b):
        if not any(v for v in b.values()):
            return
        ver = self.where("blkio", "io")
        if ver == 0:
            self.missing("blockIO", "blkio/io")
        dev = lambda d: f"{d['major']}:{d['minor']}"     # noqa: E731
        if ver == 1:
            if b.get("weight"):
                self.w("blkio", 1, "blkio.weight", b["weight"], "blockIO.weight")
            if b.get("leafWeight"):
                self.w("blkio", 1, "blkio.leaf_weight", b["leafWeight"],
                       "blockIO.leafWeight")
            for d in b.get("weightDevice") or ():
                if d.get("weight"):
                    self.w("blkio", 1, "blkio.weight_device", f"{dev(d)} {d['weight']}",
                           "blockIO.weightDevice")
                if d.get("leafWeight"):
                    self.w("blkio", 1, "blkio.leaf_weight_device",
                           f"{dev(d)} {d['leafWeight']}", "blockIO.weightDevice")
            for key, f in (("throttleReadBpsDevice", "read_bps_device"),
                           ("throttleWriteBpsDevice", "write_bps_device"),
                           ("throttleReadIOPSDevice", "read_iops_device"),
                           ("throttleWriteIOPSDevice", "write_iops_device")):
                for d in b.get(key) or ():
                    self.w("blkio", 1, f"blkio.throttle.{f}", f"{dev(d)} {d['rate']}",
                           f"blockIO.{key}")
            return
        if b.get("weight"):
            self.w("io", 2, "io.weight", f"default {blkio_weight_to_io(b['weight'])}",
                   "blockIO.weight")
        if b.get("leafWeight"):
            raise HutchError("linux.resources.blockIO.leafWeight: cgroup v2 has no leaf "
                             "weight", EOPNOTSUPP)
        for d in b.get("weightDevice") or ():
            if d.get("weight"):
                self.w("io", 2, "io.weight", f"{dev(d)} {blkio_weight_to_io(d['weight'])}",
                       "blockIO.weightDevice")
        for key, k2 in (("throttleReadBpsDevice", "rbps"), ("throttleWriteBpsDevice", "wbps"),
                        ("throttleReadIOPSDevice", "riops"),
                        ("throttleWriteIOPSDevice", "wiops")):
            for d in b.get(key) or ():
                self.w("io", 2, "io.max", f"{dev(d)} {k2}={d['rate'] or 'max'}",
                       f"blockIO.{key}")

    # --- the rest -----------------------------------------------------------------
    def hugepages(self, limits):
        for h in limits or ():
            size, limit = h.get("pageSize"), h.get("limit")
            if not size:
                raise HutchError("linux.resources.hugepageLimits: pageSize is required",
                                 EINVAL)
            ver = self.where("hugetlb")
            if ver == 0:
                if not limit:
                    continue
                self.missing("hugepageLimits", "hugetlb",
                             " (on a hybrid host it must be enabled in the cgroup2 "
                             "root's cgroup.subtree_control)")
            self.w("hugetlb", ver, f"hugetlb.{size}.limit_in_bytes" if ver == 1 else
                   f"hugetlb.{size}.max", limit, "hugepageLimits")

    def network(self, n):
        if n.get("classID"):
            if self.where("net_cls") != 1:
                self.missing("network.classID", "net_cls")
            self.w("net_cls", 1, "net_cls.classid", n["classID"], "network.classID")
        for p in n.get("priorities") or ():
            if self.where("net_prio") != 1:
                self.missing("network.priorities", "net_prio")
            self.w("net_prio", 1, "net_prio.ifpriomap", f"{p['name']} {p['priority']}",
                   "network.priorities")

    def rdma(self, r):
        for dev, lim in (r or {}).items():
            parts = [f"{k}={lim[v]}" for k, v in (("hca_handle", "hcaHandles"),
                                                 ("hca_object", "hcaObjects"))
                     if lim.get(v) is not None]
            if not parts:
                continue
            ver = self.where("rdma")
            if ver == 0:
                self.missing("rdma", "rdma")
            self.w("rdma", ver, "rdma.max", f"{dev} {' '.join(parts)}", "rdma")

    def unified(self, u):
        if u and self.v1:
            # runc's refusal and words: unified is for hosts on cgroup v2 alone
            raise HutchError("invalid configuration: linux.resources.unified cannot "
                             "be used on a host with cgroup v1 hierarchies (this one "
                             "is hybrid); it needs cgroup v2 alone", EINVAL)
        for key, val in (u or {}).items():
            if "/" in key or key.startswith(".") or not key:
                raise HutchError(f"linux.resources.unified: {key!r} is not a cgroup file "
                                 "name", EINVAL)
            if self.v2 is None:
                raise HutchError(f"linux.resources.unified.{key}: this host has no "
                                 "cgroup v2 hierarchy", EOPNOTSUPP)
            ctrl = key.split(".", 1)[0]
            if ctrl not in ("cgroup",) and ctrl not in self.v2:
                self.missing(f"unified.{key}", ctrl, " in the cgroup v2 hierarchy")
            self.w(ctrl, 2, key, val, f"unified.{key}")


KNOWN = ("devices", "memory", "cpu", "pids", "blockIO", "hugepageLimits", "network",
         "rdma", "unified")

I64 = (-(1 << 63), (1 << 63) - 1)
U64 = (0, (1 << 64) - 1)
U32 = (0, (1 << 32) - 1)
U16 = (0, (1 << 16) - 1)
_DEV = {"major": I64, "minor": I64}
_SCHEMA = {
    "memory": {"limit": I64, "reservation": I64, "swap": I64, "kernel": I64,
               "kernelTCP": I64, "swappiness": U64, "disableOOMKiller": bool,
               "useHierarchy": bool, "checkBeforeUpdate": bool},
    "cpu": {"shares": U64, "quota": I64, "burst": U64, "period": U64,
            "realtimeRuntime": I64, "realtimePeriod": U64, "cpus": str, "mems": str,
            "idle": I64},
    "pids": {"limit": I64},
    "blockIO": {"weight": U16, "leafWeight": U16,
                "weightDevice": [dict(_DEV, weight=U16, leafWeight=U16)],
                "throttleReadBpsDevice": [dict(_DEV, rate=U64)],
                "throttleWriteBpsDevice": [dict(_DEV, rate=U64)],
                "throttleReadIOPSDevice": [dict(_DEV, rate=U64)],
                "throttleWriteIOPSDevice": [dict(_DEV, rate=U64)]},
    "hugepageLimits": [{"pageSize": str, "limit": U64}],
    "network": {"classID": U32, "priorities": [{"name": str, "priority": U32}]},
    "devices": [{"allow": bool, "type": str, "major": I64, "minor": I64,
                 "access": str}],
}


def normalise(resources):
    """linux.resources as runc reads it (Go's JSON decoder): keys match the
    spec's names whatever their case ("CPU" is cpu), a section given twice is
    merged (the later value of a field wins), and unknown keys are ignored.  unified and rdma keep their keys
    (cgroup file and device names)."""
    if not isinstance(resources, dict):
        return resources
    top = {k: _SCHEMA.get(k, "keep") for k in KNOWN}
    return _fold(resources, top)


def _fold(v, schema):
    if isinstance(schema, dict) and isinstance(v, dict):
        names = {k.lower(): k for k in schema}
        out = {}
        for key, val in v.items():
            name = names.get(key.lower()) if isinstance(key, str) else None
            if name is None:
                continue        # runc ignores what it does not know
            val = _fold(val, schema[name])
            if isinstance(out.get(name), dict) and isinstance(val, dict):
                out[name] = dict(out[name], **val)
            else:
                out[name] = val
        return out
    if isinstance(schema, list) and isinstance(v, list):
        return [_fold(item, schema[0]) for item in v]
    return v


def validate(resources, where="linux.resources"):
    """Checks types and ranges of linux.resources (OCI's int64/uint64/...), so
    that no absurd number reaches a cgroup file."""
    if resources is None:
        return
    _check(resources, {k: _SCHEMA.get(k, "any") for k in KNOWN}, where)
    for key in ("rdma", "unified"):
        v = resources.get(key)
        if v is not None and not isinstance(v, dict):
            raise HutchError(f"{where}.{key}: expected an object", EINVAL)
    for k, v in (resources.get("unified") or {}).items():
        if not isinstance(v, str):
            raise HutchError(f"{where}.unified.{k}: expected a string", EINVAL)
    for k, v in (resources.get("rdma") or {}).items():
        if not isinstance(v, dict):
            raise HutchError(f"{where}.rdma.{k}: expected an object", EINVAL)
        _check(v, {"hcaHandles": U32, "hcaObjects": U32}, f"{where}.rdma.{k}")


def _check(v, schema, where):
    if schema == "any" or v is None:
        return
    if isinstance(schema, dict):
        if not isinstance(v, dict):
            raise HutchError(f"{where}: expected an object", EINVAL)
        for key, sub in schema.items():
            _check(v.get(key), sub, f"{where}.{key}")
    elif isinstance(schema, list):
        if not isinstance(v, list):
            raise HutchError(f"{where}: expected a list", EINVAL)
        for i, item in enumerate(v):
            if item is None:
                raise HutchError(f"{where}[{i}]: expected a value, got null", EINVAL)
            _check(item, schema[0], f"{where}[{i}]")
    elif schema is bool or schema is str:
        if not isinstance(v, schema):
            raise HutchError(f"{where}: expected a {'boolean' if schema is bool else 'string'}, "
                             f"got {type(v).__name__}", EINVAL)
    else:
        lo, hi = schema
        if not isinstance(v, int) or isinstance(v, bool):
            raise HutchError(f"{where}: expected an integer, got {type(v).__name__}",
                             EINVAL)
        if not lo <= v <= hi:
            raise HutchError(f"{where}: {v} is out of range ({lo} to {hi})", ERANGE)


def plan(resources, v1_controllers, v2_controllers):
    """The writes for ``resources`` (devices excepted: see the manager)."""
    validate(resources)
    p = Planner(v1_controllers, v2_controllers)
    r = resources or {}
    for key in r:
        if key not in KNOWN:
            raise HutchError(f"linux.resources.{key}: unknown resource", EINVAL)
    p.memory(_obj(r, "memory"))
    p.cpu(_obj(r, "cpu"))
    p.pids(_obj(r, "pids"))
    p.block_io(_obj(r, "blockIO"))
    p.hugepages(r.get("hugepageLimits"))
    p.network(_obj(r, "network"))
    p.rdma(r.get("rdma"))
    p.unified(r.get("unified"))
    return p.out


def _obj(r, key):
    v = r.get(key)
    if v is None:
        return {}
    if not isinstance(v, dict):
        raise HutchError(f"linux.resources.{key}: expected an object", EINVAL)
    return v
