"""Container statistics in runc's `events --stats` shape, from v1 or v2 files,
and the OOM-kill counter that `events` watches."""

import os


def _read(path):
    try:
        with open(path) as f:
            return f.read()
    except OSError:
        return None


def _int(path, default=0):
    t = _read(path)
    if t is None:
        return default
    t = t.strip()
    if t == "max":
        return 0
    try:
        return int(t)
    except ValueError:
        return default


def _kv(path):
    out = {}
    for line in (_read(path) or "").splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def _find(paths, ctrl):
    for key, path in paths.items():
        if key != "unified" and ctrl in key.split(","):
            return 1, path
    u = paths.get("unified")
    if u:
        ctrls = (_read(os.path.join(u, "cgroup.controllers")) or "").split()
        if ctrl in ctrls or (ctrl == "cpu" and os.path.exists(os.path.join(u, "cpu.stat"))):
            return 2, u
    return 0, None


def collect(paths):
    data = {"cpu": _cpu(paths), "memory": _memory(paths), "pids": _pids(paths),
            "blkio": _blkio(paths), "hugetlb": _hugetlb(paths), "cpuset": _cpuset(paths)}
    return data


def _cpu(paths):
    ver, p = _find(paths, "cpuacct")
    usage = {"total": 0, "percpu": [], "kernel": 0, "user": 0}
    if ver == 1:
        usage["total"] = _int(os.path.join(p, "cpuacct.usage"))
        usage["percpu"] = [int(x) for x in (_read(os.path.join(p, "cpuacct.usage_percpu"))
                                            or "").split()]
        st = _kv(os.path.join(p, "cpuacct.stat"))
        hz = os.sysconf("SC_CLK_TCK")
        usage["user"] = st.get("user", 0) * 1_000_000_000 // hz
        usage["kernel"] = st.get("system", 0) * 1_000_000_000 // hz
    throttling = {"periods": 0, "throttled_periods": 0, "throttled_time": 0}
    ver, p = _find(paths, "cpu")
    if ver == 1:
        st = _kv(os.path.join(p, "cpu.stat"))
        throttling = {"periods": st.get("nr_periods", 0),
                      "throttled_periods": st.get("nr_throttled", 0),
                      "throttled_time": st.get("throttled_time", 0)}
    elif ver == 2:
        st = _kv(os.path.join(p, "cpu.stat"))
        usage.update(total=st.get("usage_usec", 0) * 1000,
                     user=st.get("user_usec", 0) * 1000,
                     kernel=st.get("system_usec", 0) * 1000)
        throttling = {"periods": st.get("nr_periods", 0),
                      "throttled_periods": st.get("nr_throttled", 0),
                      "throttled_time": st.get("throttled_usec", 0) * 1000}
    return {"usage": usage, "throttling": throttling}


def _memory(paths):
    ver, p = _find(paths, "memory")
    out = {}
    if ver == 1:
        def entry(prefix):
            return {"limit": _int(os.path.join(p, prefix + "limit_in_bytes")),
                    "usage": _int(os.path.join(p, prefix + "usage_in_bytes")),
                    "max": _int(os.path.join(p, prefix + "max_usage_in_bytes")),
                    "failcnt": _int(os.path.join(p, prefix + "failcnt"))}
        out = {"usage": entry("memory."), "swap": entry("memory.memsw."),
               "kernel": entry("memory.kmem."), "kernelTCP": entry("memory.kmem.tcp."),
               "raw": _kv(os.path.join(p, "memory.stat"))}
        out["cache"] = out["raw"].get("total_cache", out["raw"].get("cache", 0))
    elif ver == 2:
        out = {"usage": {"limit": _int(os.path.join(p, "memory.max")),
                         "usage": _int(os.path.join(p, "memory.current")),
                         "max": _int(os.path.join(p, "memory.peak")),
                         "failcnt": _kv(os.path.join(p, "memory.events")).get("max", 0)},
               "swap": {"limit": _int(os.path.join(p, "memory.swap.max")),
                        "usage": _int(os.path.join(p, "memory.swap.current"))},
               "raw": _kv(os.path.join(p, "memory.stat"))}
        out["cache"] = out["raw"].get("file", 0)
    return out


def _pids(paths):
    ver, p = _find(paths, "pids")
    if not ver:
        return {}
    return {"current": _int(os.path.join(p, "pids.current")),
            "limit": _int(os.path.join(p, "pids.max"))}


def _blkio(paths):
    ver, p = _find(paths, "blkio")
    out = {}
    if ver == 1:
        def entries(name):
            rows = []
            for line in (_read(os.path.join(p, name)) or "").splitlines():
                f = line.split()
                if len(f) == 3 and ":" in f[0]:
                    ma, mi = f[0].split(":")
                    rows.append({"major": int(ma), "minor": int(mi), "op": f[1],
                                 "value": int(f[2])})
            return rows
        for key, name in (("ioServiceBytesRecursive",
                           "blkio.throttle.io_service_bytes_recursive"),
                          ("ioServicedRecursive", "blkio.throttle.io_serviced_recursive")):
            out[key] = entries(name)
        return out
    ver, p = _find(paths, "io")
    if ver == 2:
        sb, sv = [], []
        for line in (_read(os.path.join(p, "io.stat")) or "").splitlines():
            f = line.split()
            if not f or ":" not in f[0]:
                continue
            ma, mi = (int(x) for x in f[0].split(":"))
            kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
            for op, k in (("Read", "rbytes"), ("Write", "wbytes")):
                sb.append({"major": ma, "minor": mi, "op": op, "value": int(kv.get(k, 0))})
            for op, k in (("Read", "rios"), ("Write", "wios")):
                sv.append({"major": ma, "minor": mi, "op": op, "value": int(kv.get(k, 0))})
        out = {"ioServiceBytesRecursive": sb, "ioServicedRecursive": sv}
    return out


def _hugetlb(paths):
    ver, p = _find(paths, "hugetlb")
    out = {}
    if not ver:
        return out
    try:
        names = os.listdir(p)
    except OSError:
        return out
    for n in names:
        parts = n.split(".")
        if len(parts) == 3 and parts[0] == "hugetlb" and \
                parts[2] == ("usage_in_bytes" if ver == 1 else "current"):
            size = parts[1]
            if ver == 1:
                out[size] = {"usage": _int(os.path.join(p, n)),
                             "max": _int(os.path.join(p, f"hugetlb.{size}.max_usage_in_bytes")),
                             "failcnt": _int(os.path.join(p, f"hugetlb.{size}.failcnt"))}
            else:
                out[size] = {"usage": _int(os.path.join(p, n)),
                             "failcnt": _kv(os.path.join(p, f"hugetlb.{size}.events")).get("max", 0)}
    return out


def _cpuset(paths):
    ver, p = _find(paths, "cpuset")
    if not ver:
        return {}
    return {"cpus": (_read(os.path.join(p, "cpuset.cpus" if ver == 1 else
                                        "cpuset.cpus.effective")) or "").strip(),
            "mems": (_read(os.path.join(p, "cpuset.mems" if ver == 1 else
                                        "cpuset.mems.effective")) or "").strip()}


def oom_kills(paths):
    """The cgroup's OOM-kill count (v1 memory.oom_control, v2 memory.events)."""
    ver, p = _find(paths, "memory")
    if ver == 1:
        return _kv(os.path.join(p, "memory.oom_control")).get("oom_kill", 0)
    if ver == 2:
        return _kv(os.path.join(p, "memory.events")).get("oom_kill", 0)
    return 0
