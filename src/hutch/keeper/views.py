"""A container's own /proc and /sys files, computed from its cgroup (LXCFS's idea,
one container at a time).

The keeper serves these views through FUSE, mounted over the container's files
(``TARGETS``). A view reads the host's file under ``proc``/``sys`` and a few of the
cgroup's files. It starts no process. A cgroup file that is missing or odd leaves
the host's value in its field, and a view never raises: if something unforeseen
fails, the host's file is served as it is.

Where a controller has a v1 hierarchy (a key such as "memory" or "cpu,cpuacct"),
its v1 files are used. Otherwise its v2 files in "unified" are used (a hybrid host
has both kinds).

- meminfo: the host's file, with the cgroup's fields rewritten in the kernel's
  layout (``%-16s%8d kB``). MemTotal is the memory limit, capped at the host's.
  MemFree is MemTotal minus usage. Cached, Active*, Inactive*, Unevictable, Shmem
  and SwapCached come from memory.stat. MemAvailable is MemFree plus the
  reclaimable page cache, at most MemTotal. Buffers is 0. SwapTotal is the swap
  limit: memsw minus the memory limit on v1, memory.swap.max on v2, at most the
  host's. It is 0 when no swap limit is set. SwapFree is SwapTotal minus the swap
  in use. With no memory limit, the host's file is served unchanged.
- The visible CPUs are the cgroup's cpuset (all online CPUs without one), cut to
  the first ceil(quota / period) CPUs when a CPU quota is set. They are
  renumbered 0..k-1 wherever they appear.
- cpuinfo: the host's ``processor`` blocks for the visible CPUs, renumbered. Only
  the ``processor`` line changes. Blocks that are not a processor's are kept.
- cpu_online (also served as present and possible): "0\\n" or "0-<k-1>\\n".
- stat: one "cpuN" line per visible CPU, in USER_HZ. user and system are the
  cgroup's CPU time: v1 per-CPU cpuacct, or v2 cpu.stat spread evenly over the
  CPUs. idle is the container's uptime minus both. The other fields are 0. The
  "cpu" line holds the sums. The other lines are the host's. Without cgroup CPU
  times, the host's lines for the visible CPUs are used.
- uptime: seconds since the container's init started, then idle: uptime times
  the number of CPUs, minus the container's CPU time.
- loadavg: the cgroup's own 1/5/15-minute load. ``sample()`` (called every 5 s)
  counts its R and D tasks and damps them the kernel's way. The output has
  running/total tasks as of the last sample, and the host's last pid.
- diskstats: the host's lines for the devices the cgroup did I/O on, with the
  cgroup's completed reads and writes and their sectors (v1 blkio.throttle.*,
  v2 io.stat). The other fields are 0.
- swaps: the header, and one "none virtual" line with meminfo's SwapTotal and
  used swap when SwapTotal is above 0.
"""

import functools
import math
import os
import time

TARGETS = {
    "meminfo": "/proc/meminfo", "cpuinfo": "/proc/cpuinfo", "stat": "/proc/stat",
    "uptime": "/proc/uptime", "loadavg": "/proc/loadavg",
    "diskstats": "/proc/diskstats", "swaps": "/proc/swaps",
    "cpu_online": "/sys/devices/system/cpu/online",
    "cpu_present": "/sys/devices/system/cpu/present",
    "cpu_possible": "/sys/devices/system/cpu/possible",
}

UNLIMITED = 1 << 62          # v1 "no limit" is 2**63 rounded down to a page
PERIODS = (60.0, 300.0, 900.0)
INTERVAL = 5.0               # seconds between the keeper's samples
SWAPS_HEADER = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n"
STRICT = False               # tests set it: a surprise raises instead of falling back


def _read(path):
    """A small file's text (os-level: a read is on every view's path)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        chunks = []
        while True:
            b = os.read(fd, 65536)
            if not b:
                break
            chunks.append(b)
        return b"".join(chunks).decode(errors="replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _num(text):
    """The first integer in a cgroup file; None for "max", nothing, or odd text."""
    try:
        return int(text.split()[0])
    except (AttributeError, IndexError, ValueError):
        return None


def _ints(text):
    try:
        return [int(x) for x in text.split()] or None
    except (AttributeError, ValueError):
        return None


def _kv(text):
    """``key value`` lines (memory.stat, cpu.stat, cpuacct.stat) as a dict."""
    out = {}
    for line in (text or "").splitlines():
        k, _, v = line.partition(" ")
        try:
            out[k] = int(v)
        except ValueError:
            pass
    return out


def _dev(text):
    """"MAJ:MIN" as (major, minor); None if odd."""
    major, _, minor = text.partition(":")
    return (int(major), int(minor)) if major.isdigit() and minor.isdigit() else None


def _cpulist(text):
    """The kernel's CPU list format ("0-3,5") as a sorted list; None if odd."""
    cpus = set()
    try:
        for part in text.strip().split(","):
            if part:
                lo, _, hi = part.partition("-")
                cpus.update(range(int(lo), int(hi or lo) + 1))
    except (AttributeError, ValueError):
        return None
    return sorted(cpus) or None


def _safe(fn):
    """A view never raises: on a surprise it serves the host's file as it is."""
    @functools.wraps(fn)
    def view(self):
        try:
            return fn(self)
        except Exception:
            if STRICT:
                raise
            return self._host(fn.__name__)
    return view


class Views:
    def __init__(self, cgroup_paths, init_pid, proc="/proc", sys="/sys",
                 clock=time.monotonic):
        self.paths = dict(cgroup_paths or {})
        self.init_pid, self.proc, self.sys, self.clock = init_pid, proc, sys, clock
        self.hz = os.sysconf("SC_CLK_TCK")
        self.loads = [0.0, 0.0, 0.0]
        self.tasks = None            # (running, total) at the last sample
        self.last = None             # clock() at the last sample

    def files(self):
        return {"meminfo": self.meminfo, "cpuinfo": self.cpuinfo, "stat": self.stat,
                "uptime": self.uptime, "loadavg": self.loadavg,
                "diskstats": self.diskstats, "swaps": self.swaps,
                "cpu_online": self.cpu_online, "cpu_present": self.cpu_online,
                "cpu_possible": self.cpu_online}

    # -- where things are

    def _host(self, name):
        """The host's own file for a view, as bytes (b"" if unreadable)."""
        target = TARGETS.get(name, "/proc/" + name)
        root, rel = (self.sys, target[5:]) if target.startswith("/sys/") else \
            (self.proc, target[6:])
        return (_read(os.path.join(root, rel)) or "").encode()

    def _dir(self, ctrl):
        """(1, dir) when the controller has a v1 hierarchy, else (2, the "unified"
        dir), or (0, None) without either."""
        for key, path in self.paths.items():
            if key != "unified" and ctrl in key.split(","):
                return 1, path
        unified = self.paths.get("unified")
        return (2, unified) if unified else (0, None)

    def _cg(self, ctrl, v1, v2):
        """The text of the controller's file: v1 ``v1`` or v2 ``v2`` (a name, or
        names to try in turn), as ``_dir`` picks; None when missing."""
        ver, path = self._dir(ctrl)
        names = {1: v1, 2: v2}.get(ver) or ()
        for name in (names,) if isinstance(names, str) else names:
            text = _read(os.path.join(path, name))
            if text is not None:
                return text
        return None

    # -- memory

    def _memory(self):
        """(the host's meminfo text, its {field: kB}, and the {field: kB} the cgroup
        decides: {} with no memory limit)."""
        text = _read(os.path.join(self.proc, "meminfo")) or ""
        host = {}
        for line in text.splitlines():
            name, _, rest = line.partition(":")
            if rest.endswith(" kB") and _num(rest) is not None:
                host[name] = _num(rest)
        limit = _num(self._cg("memory", "memory.limit_in_bytes", "memory.max"))
        if limit is None or limit >= UNLIMITED or "MemTotal" not in host:
            return text, host, {}
        total = min(max(0, limit) // 1024, host["MemTotal"])
        usage = _num(self._cg("memory", "memory.usage_in_bytes", "memory.current"))
        free = min(total, host.get("MemFree", total)) if usage is None else \
            max(0, total - usage // 1024)
        out = {"MemTotal": total, "MemFree": free, "Buffers": 0}
        v1 = self._dir("memory")[0] == 1
        stat = _kv(self._cg("memory", "memory.stat", "memory.stat"))

        def kb(*keys):
            vals = [stat.get(("total_" if v1 else "") + k) for k in keys]
            return None if None in vals else sum(vals) // 1024

        rows = {"Cached": kb("cache" if v1 else "file"), "SwapCached": kb("swapcached"),
                "Active": kb("active_anon", "active_file"),
                "Inactive": kb("inactive_anon", "inactive_file"),
                "Active(anon)": kb("active_anon"), "Inactive(anon)": kb("inactive_anon"),
                "Active(file)": kb("active_file"), "Inactive(file)": kb("inactive_file"),
                "Unevictable": kb("unevictable"), "Shmem": kb("shmem")}
        out.update((k, v) for k, v in rows.items() if v is not None)
        # the host's slab would count against the container's total in free(1)'s
        # buff/cache: the cgroup's own (v2 memory.stat), else none
        out["SReclaimable"] = kb("slab_reclaimable") or 0
        out["SUnreclaim"] = kb("slab_unreclaimable") or 0
        out["Slab"] = out["SReclaimable"] + out["SUnreclaim"]
        cache = kb("inactive_file", "active_file")
        out["MemAvailable"] = min(total, free + (cache if cache is not None else
                                                 rows["Cached"] or 0))
        swap = used = 0
        if v1:
            memsw = _num(self._cg("memory", "memory.memsw.limit_in_bytes", None))
            if memsw is not None and memsw < UNLIMITED:
                swap = memsw - limit
                musage = _num(self._cg("memory", "memory.memsw.usage_in_bytes", None))
                used = musage - usage if musage is not None and usage is not None else 0
        else:
            smax = _num(self._cg("memory", None, "memory.swap.max"))
            if smax is not None and smax < UNLIMITED:
                swap = smax
                used = _num(self._cg("memory", None, "memory.swap.current")) or 0
        swap = max(0, swap) // 1024
        if "SwapTotal" in host:
            swap = min(swap, host["SwapTotal"])
        out["SwapTotal"], out["SwapFree"] = swap, max(0, swap - max(0, used) // 1024)
        return text, host, out

    @_safe
    def meminfo(self):
        text, _, fields = self._memory()
        if not fields:
            return text.encode()
        lines = []
        for line in text.splitlines():
            name = line.partition(":")[0]
            if name in fields:
                line = f"{name + ':':<16}{fields[name]:>8} kB"
            lines.append(line + "\n")
        return "".join(lines).encode()

    @_safe
    def swaps(self):
        _, host, fields = self._memory()
        total = fields.get("SwapTotal", host.get("SwapTotal", 0))
        free = fields.get("SwapFree", host.get("SwapFree", total))
        line = f"none\tvirtual\t{total}\t{max(0, total - free)}\t0\n" if total > 0 else ""
        return (SWAPS_HEADER + line).encode()

    # -- CPUs

    def _cpuinfo(self):
        """[(host CPU number or None, block)] of the host's /proc/cpuinfo."""
        out = []
        for block in (_read(os.path.join(self.proc, "cpuinfo")) or "").split("\n\n"):
            block = block.strip("\n")
            if block:
                name, _, val = block.split("\n", 1)[0].partition(":")
                num = _num(val) if name.strip() == "processor" else None
                out.append((num, block))
        return out

    def cpus(self):
        """The host CPUs the container sees, in order: its cpuset's online CPUs,
        the first ceil(quota / period) of them when a CPU quota is set."""
        host = _cpulist(_read(os.path.join(self.sys, "devices/system/cpu/online"))) \
            or [n for n, _ in self._cpuinfo() if n is not None] or [0]
        mine = set(_cpulist(self._cg("cpuset", ("cpuset.effective_cpus", "cpuset.cpus"),
                                     "cpuset.cpus.effective")) or host)
        cpus = [c for c in host if c in mine] or host
        if self._dir("cpu")[0] == 1:
            quota = _num(self._cg("cpu", "cpu.cfs_quota_us", None))
            period = _num(self._cg("cpu", "cpu.cfs_period_us", None))
        else:
            fields = (self._cg("cpu", None, "cpu.max") or "").split()
            quota, period = (_num(fields[0]), _num(fields[1])) if len(fields) == 2 \
                else (None, None)
        if quota and period and quota > 0 and period > 0:
            cpus = cpus[:max(1, -(-quota // period))]
        return cpus

    @_safe
    def cpuinfo(self):
        visible, out, i = set(self.cpus()), [], 0
        for num, block in self._cpuinfo():
            if num is None:
                out.append(block)
            elif num in visible:
                first, nl, rest = block.partition("\n")
                out.append(f"{first.partition(':')[0]}: {i}{nl}{rest}")
                i += 1
        return "".join(b + "\n\n" for b in out).encode()

    @_safe
    def cpu_online(self):
        k = len(self.cpus())
        return ("0\n" if k == 1 else f"0-{k - 1}\n").encode()

    def _cpu_times(self, cpus):
        """[(user, system)] in USER_HZ ticks for each of ``cpus``; None when the
        cgroup has no CPU accounting to read."""
        ns = 1_000_000_000
        if self._dir("cpuacct")[0] == 1:
            user = _ints(self._cg("cpuacct", "cpuacct.usage_percpu_user", None))
            system = _ints(self._cg("cpuacct", "cpuacct.usage_percpu_sys", None))
            if user is None or system is None:
                total = _ints(self._cg("cpuacct", "cpuacct.usage_percpu", None))
                if total is None:
                    return None
                st = _kv(self._cg("cpuacct", "cpuacct.stat", None))
                u, s = st.get("user", 0), st.get("system", 0)
                user = [t * u // (u + s) if u + s else t for t in total]
                system = [t - x for t, x in zip(total, user)]
            return [(user[c] * self.hz // ns if c < len(user) else 0,
                     system[c] * self.hz // ns if c < len(system) else 0) for c in cpus]
        st = _kv(self._cg("cpuacct", None, "cpu.stat"))
        if "user_usec" not in st or "system_usec" not in st:
            return None
        k = len(cpus)
        return [(st["user_usec"] * self.hz // 1_000_000 // k,
                 st["system_usec"] * self.hz // 1_000_000 // k)] * k

    @_safe
    def stat(self):
        text = _read(os.path.join(self.proc, "stat")) or ""
        lines = text.splitlines()
        host = {ln.split()[0]: ln.split()[1:] for ln in lines if ln.startswith("cpu")}
        width = len(host.get("cpu", [0] * 10))
        cpus = self.cpus()
        times = self._cpu_times(cpus)
        if times is None:
            rows = [[_num(x) or 0 for x in host.get(f"cpu{c}", [])] for c in cpus]
        else:
            up = int(self._uptime() * self.hz)
            rows = [[u, 0, s, max(0, up - u - s)] for u, s in times]
        rows = [(r + [0] * width)[:width] for r in rows]
        ours = ["cpu  " + " ".join(str(sum(col)) for col in zip(*rows))]
        ours += [f"cpu{i} " + " ".join(map(str, r)) for i, r in enumerate(rows)]
        out, done = [], False
        for line in lines:
            if not line.startswith("cpu"):
                out.append(line)
            elif not done:
                out += ours
                done = True
        return "".join(line + "\n" for line in (out if done else ours + out)).encode()

    # -- time and load

    def _uptime(self):
        """Seconds since the container's init started (the host's uptime if unknown)."""
        try:
            host = float(_read(os.path.join(self.proc, "uptime")).split()[0])
        except (AttributeError, IndexError, ValueError):
            host = time.clock_gettime(time.CLOCK_BOOTTIME)
        st = _read(os.path.join(self.proc, str(self.init_pid), "stat"))
        fields = st.rpartition(")")[2].split() if st else []
        start = _num(fields[19]) if len(fields) > 19 else None
        return host if start is None else max(0.0, host - start / self.hz)

    @_safe
    def uptime(self):
        up, cpus = self._uptime(), self.cpus()
        busy = sum(u + s for u, s in self._cpu_times(cpus) or ()) / self.hz
        return f"{up:.2f} {max(0.0, up * len(cpus) - busy):.2f}\n".encode()

    def _task_files(self):
        """The files listing the cgroup's threads: the cpu (or pids, or any) v1
        hierarchy's ``tasks``, else v2 ``cgroup.threads``; in child cgroups too."""
        v1 = [k for k in self.paths if k != "unified"]
        v1.sort(key=lambda k: (0 if "cpu" in k.split(",") else
                               1 if "pids" in k.split(",") else 2))
        top, name = (self.paths[v1[0]], "tasks") if v1 else \
            (self.paths.get("unified"), "cgroup.threads")
        stack = [top] if top else []
        while stack:
            d = stack.pop()
            yield os.path.join(d, name)
            try:
                with os.scandir(d) as it:
                    stack += [e.path for e in it if e.is_dir(follow_symlinks=False)]
            except OSError:
                pass

    def _count(self):
        """(running, uninterruptible, total) threads in the cgroup."""
        tids = set()
        for path in self._task_files():
            tids.update(_ints(_read(path)) or ())
        states = [(_read(os.path.join(self.proc, str(t), "stat")) or "").rpartition(")")[2]
                  .split()[:1] for t in tids]
        return (sum(s == ["R"] for s in states), sum(s == ["D"] for s in states), len(tids))

    def sample(self):
        """Count the cgroup's R and D threads and damp them into the load averages
        (load = load * e + n * (1 - e), e = exp(-dt / period), dt ~ 5 s)."""
        try:
            now = self.clock()
            dt = INTERVAL if self.last is None else max(0.0, now - self.last)
            self.last = now
            running, blocked, total = self._count()
            for i, period in enumerate(PERIODS):
                e = math.exp(-dt / period)
                self.loads[i] = self.loads[i] * e + (running + blocked) * (1 - e)
            self.tasks = (running, total)
        except Exception:
            if STRICT:
                raise

    @_safe
    def loadavg(self):
        running, total = self.tasks or self._count()[::2]
        host = (_read(os.path.join(self.proc, "loadavg")) or "").split()
        last = host[4] if len(host) > 4 else "0"
        a, b, c = self.loads
        return f"{a:.2f} {b:.2f} {c:.2f} {running}/{total} {last}\n".encode()

    # -- block I/O

    def _io(self):
        """{(major, minor): (reads, sectors read, writes, sectors written)}."""
        out = {}
        if self._dir("blkio")[0] == 1:
            def rw(name):
                got = {}
                text = self._cg("blkio", (name + "_recursive", name), None)
                for f in (line.split() for line in (text or "").splitlines()):
                    dev, n = _dev(f[0] if f else ""), _num(f[2]) if len(f) == 3 else None
                    if dev and n is not None and f[1] in ("Read", "Write"):
                        got.setdefault(dev, [0, 0])[f[1] == "Write"] = n
                return got
            ios = rw("blkio.throttle.io_serviced")
            size = rw("blkio.throttle.io_service_bytes")
            for dev in set(ios) | set(size):
                (r, w), (rb, wb) = ios.get(dev, (0, 0)), size.get(dev, (0, 0))
                out[dev] = (r, rb // 512, w, wb // 512)
            return out
        for line in (self._cg("io", None, "io.stat") or "").splitlines():
            f = line.split()
            dev = _dev(f[0] if f else "")
            if dev:
                kv = dict(x.split("=", 1) for x in f[1:] if "=" in x)
                n = [_num(kv.get(k)) or 0 for k in ("rios", "rbytes", "wios", "wbytes")]
                out[dev] = (n[0], n[1] // 512, n[2], n[3] // 512)
        return out

    @_safe
    def diskstats(self):
        io, out = self._io(), []
        for line in (_read(os.path.join(self.proc, "diskstats")) or "").splitlines():
            f = line.split()
            dev = tuple(_num(x) for x in f[:2])
            if len(f) < 14 or not any(io.get(dev, ())):
                continue
            r, rs, w, ws = io[dev]
            vals = [r, 0, rs, 0, w, 0, ws] + [0] * (len(f) - 10)
            out.append(f"{dev[0]:4d} {dev[1]:7d} {f[2]} " + " ".join(map(str, vals)) + "\n")
        return "".join(out).encode()
