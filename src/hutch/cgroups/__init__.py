"""cgroups: one interface over v1, v2 and hybrid layouts.

The layout is detected at run time from /proc/self/mountinfo:
- v1: one hierarchy per controller (or co-mounted set), plus named hierarchies;
- v2: a single unified hierarchy;
- hybrid: v1 controllers plus a cgroup2 mount (usually /sys/fs/cgroup/unified).

A container's cgroup is recorded in its state as ``{"paths": {key: dir}, "created":
[dirs], "layout": ...}`` so that verbs other than create never need to re-detect
anything.  Keys are the v1 hierarchy's controller list ("cpu,cpuacct", "memory",
"name=systemd") or "unified" for cgroup2.
"""

import os

from ..errors import HutchError


class Hierarchy:
    __slots__ = ("key", "mountpoint", "root", "version", "controllers")

    def __init__(self, key, mountpoint, root, version, controllers):
        self.key, self.mountpoint, self.root = key, mountpoint, root
        self.version, self.controllers = version, controllers

    def __repr__(self):
        return f"Hierarchy({self.key!r}, {self.mountpoint!r}, v{self.version})"


def _unescape(s):
    return s.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n") \
        .replace("\\134", "\\")


def hierarchies(mountinfo="/proc/self/mountinfo"):
    """The cgroup hierarchies mounted on this host, one per distinct hierarchy."""
    out = {}
    with open(mountinfo) as f:
        for line in f:
            left, _, right = line.partition(" - ")
            fields = left.split()
            rf = right.split()
            if not rf or rf[0] not in ("cgroup", "cgroup2"):
                continue
            root, mp = _unescape(fields[3]), _unescape(fields[4])
            if rf[0] == "cgroup2":
                key, ver, ctrls = "unified", 2, None
            else:
                opts = rf[2].split(",") if len(rf) > 2 else []
                names = [o for o in opts if o not in ("rw", "ro") and
                         "=" not in o or o.startswith("name=")]
                names = [o for o in names if o not in ("relatime", "noatime", "nosuid",
                                                       "nodev", "noexec", "xattr",
                                                       "clone_children", "noprefix",
                                                       "cpuset_v2_mode")]
                if not names:
                    continue
                key, ver, ctrls = ",".join(sorted(names)), 1, names
            out.setdefault(key, Hierarchy(key, mp, root, ver, ctrls))
    for h in out.values():
        if h.version == 2:
            try:
                with open(os.path.join(h.mountpoint, "cgroup.controllers")) as f:
                    h.controllers = f.read().split()
            except OSError:
                h.controllers = []
    return list(out.values())


def layout(hs):
    v1 = any(h.version == 1 for h in hs)
    v2 = any(h.version == 2 for h in hs)
    if v1 and v2:
        return "hybrid"
    return "v1" if v1 else ("v2" if v2 else "none")


def own_cgroup(key, pid="self"):
    """The cgroup path of a process in one hierarchy ('unified' for cgroup2)."""
    with open(f"/proc/{pid}/cgroup") as f:
        for line in f:
            _, ctrls, path = line.rstrip("\n").split(":", 2)
            if key == "unified" and ctrls == "":
                return path
            if ctrls and ",".join(sorted(ctrls.split(","))) == key:
                return path
    return "/"


def resolve_path(cgroups_path, cid):
    """The cgroup path (relative to each hierarchy root) for a container."""
    if not cgroups_path:
        return f"/hutch/{cid}"
    if ":" in cgroups_path and not cgroups_path.startswith("/"):
        raise HutchError(f"cgroupsPath {cgroups_path!r} is in the systemd slice:prefix:name "
                         "form, which needs --systemd-cgroup")
    parts = [p for p in cgroups_path.split("/") if p and p != "."]
    if ".." in parts:
        raise HutchError(f"cgroupsPath {cgroups_path!r} contains '..'")
    return "/" + "/".join(parts)


def frozen(info):
    """True when the container's cgroup is frozen (v1 freezer or cgroup.freeze)."""
    from .manager import Manager
    return Manager.from_state(info).is_frozen()
