"""The keeper's /proc and /sys views (hutch.keeper.views) on fake host trees and
fake v1/v2 cgroup directories, plus one read-only pass over the real host."""

import math
import os

import pytest

from hutch import cgroups
from hutch.keeper import views as V

HZ = os.sysconf("SC_CLK_TCK")
MiB = 1 << 20
INIT = 4242


def kb_line(name, value, unit=" kB"):
    return f"{name + ':':<16}{value:>8}{unit}\n"


HOST_MEMINFO = "".join([
    kb_line("MemTotal", 8000000), kb_line("MemFree", 4000000),
    kb_line("MemAvailable", 6000000), kb_line("Buffers", 100000),
    kb_line("Cached", 1500000), kb_line("SwapCached", 1000),
    kb_line("Active", 2000000), kb_line("Inactive", 1000000),
    kb_line("Active(anon)", 1200000), kb_line("Inactive(anon)", 100000),
    kb_line("Active(file)", 800000), kb_line("Inactive(file)", 900000),
    kb_line("Unevictable", 0), kb_line("Mlocked", 0),
    kb_line("SwapTotal", 2097148), kb_line("SwapFree", 2000000),
    kb_line("Dirty", 100), kb_line("Shmem", 50000),
    kb_line("HugePages_Total", 0, ""), kb_line("Hugepagesize", 2048)])

CPUINFO = "".join(
    f"processor\t: {n}\nvendor_id\t: GenuineIntel\nmodel name\t: Test CPU\n"
    f"core id\t\t: {n}\napicid\t\t: {10 + n}\nflags\t\t: fpu sse\n"
    "power management:\n\n" for n in range(4))

HOST_STAT = (
    "cpu  4000 10 2000 90000 300 0 50 0 0 0\n"
    + "".join(f"cpu{n} 1000 {n} 500 22500 75 0 12 0 0 0\n" for n in range(4))
    + "intr 123 0 0\nctxt 456\nbtime 1700000000\nprocesses 789\n"
    "procs_running 3\nprocs_blocked 0\nsoftirq 1 2 3\n")

DISKSTATS = (
    "   7       0 loop0 13 0 104 3 0 0 0 0 0 8 3 0 0 0 0 0 0\n"
    "   8       0 sda 5000 100 80000 900 4000 50 64000 700 0 1200 1600 0 0 0 0 10 20\n"
    "   8       1 sda1 4000 90 70000 800 3000 40 50000 600 0 1000 1400 0 0 0 0 0 0\n")

STATES = {101: "S", 102: "R", 103: "D", 104: "R", 105: "S"}


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def pid_stat(pid, state, starttime=0):
    rest = [state, "1", str(pid), str(pid), "0", "-1", "4194560"] + ["0"] * 12 + \
        [str(starttime)] + ["0"] * 32
    return f"{pid} (odd) name) {' '.join(rest)}\n"


@pytest.fixture(autouse=True)
def strict(monkeypatch):
    """A surprise in a view fails the test instead of serving the host's file."""
    monkeypatch.setattr(V, "STRICT", True)


class Host:
    """A fake /proc and /sys, and fake cgroup directories, in tmp_path."""

    def __init__(self, root):
        self.root = root
        self.proc, self.sys = str(root / "proc"), str(root / "sys")
        self.cg = str(root / "cg")
        for name, text in (("meminfo", HOST_MEMINFO), ("cpuinfo", CPUINFO),
                           ("stat", HOST_STAT), ("uptime", "1000.00 3500.00\n"),
                           ("loadavg", "1.71 0.81 0.73 1/100 6602\n"),
                           ("diskstats", DISKSTATS),
                           (f"{INIT}/stat", pid_stat(INIT, "S", 400 * HZ))):
            write(os.path.join(self.proc, name), text)
        for tid, state in STATES.items():
            write(os.path.join(self.proc, str(tid), "stat"), pid_stat(tid, state))
        write(os.path.join(self.sys, "devices/system/cpu/online"), "0-3\n")

    def set(self, key, name, value):
        write(os.path.join(self.cg, key, name), value)

    def views(self, keys, clock=None):
        paths = {k: os.path.join(self.cg, k) for k in keys}
        for p in paths.values():
            os.makedirs(p, exist_ok=True)
        kw = {"clock": clock} if clock else {}
        return V.Views(paths, INIT, proc=self.proc, sys=self.sys, **kw)


V1 = ("memory", "cpu,cpuacct", "cpuset", "pids", "blkio", "name=systemd")


@pytest.fixture
def host(tmp_path):
    return Host(tmp_path)


def fields(data):
    out = {}
    for line in data.decode().splitlines():
        name, _, rest = line.partition(":")
        out[name] = int(rest.split()[0])
    return out


def v1_memory(host, limit=256 * MiB, usage=100 * MiB, stat=True):
    host.set("memory", "memory.limit_in_bytes", f"{limit}\n")
    host.set("memory", "memory.usage_in_bytes", f"{usage}\n")
    if stat:
        host.set("memory", "memory.stat", "cache 1\nrss 2\n" + "".join(
            f"total_{k} {v * MiB}\n" for k, v in (
                ("cache", 40), ("rss", 60), ("shmem", 2), ("swapcached", 0),
                ("active_anon", 50), ("inactive_anon", 10), ("active_file", 15),
                ("inactive_file", 25), ("unevictable", 1))))


# -- meminfo and swaps

def test_meminfo_v1_limit(host):
    v1_memory(host)
    out = host.views(V1).meminfo()
    lines = out.decode().splitlines()
    assert "MemTotal:         262144 kB" in lines
    assert len(lines) == len(HOST_MEMINFO.splitlines())
    f = fields(out)
    assert f["MemFree"] == 262144 - 102400
    assert f["Cached"] == 40 * 1024 and f["Buffers"] == 0
    assert f["MemAvailable"] == f["MemFree"] + 40 * 1024 <= f["MemTotal"]
    assert (f["Active"], f["Inactive"]) == (65 * 1024, 35 * 1024)
    assert (f["Active(anon)"], f["Inactive(file)"], f["Shmem"]) == (50 * 1024, 25 * 1024,
                                                                   2 * 1024)
    assert (f["Unevictable"], f["SwapCached"]) == (1024, 0)
    # no memsw file: a limited container sees no swap
    assert (f["SwapTotal"], f["SwapFree"]) == (0, 0)
    # the host's other lines, and the kernel's alignment
    assert "Dirty:               100 kB" in lines and "HugePages_Total:       0" in lines
    assert all(len(ln) == 27 for ln in lines if ln.endswith(" kB"))
    assert host.views(V1).swaps() == V.SWAPS_HEADER.encode()


def test_mem_available_never_above_total(host):
    v1_memory(host, usage=10 * MiB)
    host.set("memory", "memory.stat", f"total_cache {900 * MiB}\n")
    f = fields(host.views(V1).meminfo())
    assert f["MemAvailable"] == f["MemTotal"] == 262144
    v1_memory(host, usage=300 * MiB)                     # usage above the limit
    f = fields(host.views(V1).meminfo())
    assert f["MemFree"] == 0 and f["MemAvailable"] <= f["MemTotal"]


def test_meminfo_limit_above_host_is_capped(host):
    v1_memory(host, limit=64 << 30)
    f = fields(host.views(V1).meminfo())
    assert f["MemTotal"] == 8000000 and f["MemFree"] == 8000000 - 102400


@pytest.mark.parametrize("key,name,value", [
    ("memory", "memory.limit_in_bytes", "9223372036854771712\n"),
    ("unified", "memory.max", "max\n")])
def test_unlimited_memory_is_the_hosts_meminfo(host, key, name, value):
    host.set(key, name, value)
    host.set(key, "memory.usage_in_bytes" if key == "memory" else "memory.current", "5\n")
    views = host.views([key])
    assert views.meminfo() == HOST_MEMINFO.encode()
    assert views.swaps() == (V.SWAPS_HEADER + "none\tvirtual\t2097148\t97148\t0\n").encode()


def test_swap_v1_memsw(host):
    v1_memory(host)
    host.set("memory", "memory.memsw.limit_in_bytes", f"{512 * MiB}\n")
    host.set("memory", "memory.memsw.usage_in_bytes", f"{130 * MiB}\n")
    views = host.views(V1)
    f = fields(views.meminfo())
    assert (f["SwapTotal"], f["SwapFree"]) == (262144, 262144 - 30 * 1024)
    assert views.swaps().decode() == V.SWAPS_HEADER + "none\tvirtual\t262144\t30720\t0\n"
    # memsw unlimited: no swap visible
    host.set("memory", "memory.memsw.limit_in_bytes", "9223372036854771712\n")
    assert fields(views.meminfo())["SwapTotal"] == 0


def test_swap_capped_at_host(host):
    v1_memory(host)
    host.set("memory", "memory.memsw.limit_in_bytes", f"{(256 << 10) * MiB}\n")
    host.set("memory", "memory.memsw.usage_in_bytes", f"{100 * MiB}\n")
    f = fields(host.views(V1).meminfo())
    assert (f["SwapTotal"], f["SwapFree"]) == (2097148, 2097148)


def test_meminfo_v2(host):
    host.set("unified", "memory.max", f"{512 * MiB}\n")
    host.set("unified", "memory.current", f"{200 * MiB}\n")
    host.set("unified", "memory.stat", "".join(f"{k} {v * MiB}\n" for k, v in (
        ("anon", 120), ("file", 70), ("shmem", 3), ("active_anon", 100),
        ("inactive_anon", 20), ("active_file", 30), ("inactive_file", 40),
        ("unevictable", 0), ("swapcached", 1))))
    host.set("unified", "memory.swap.max", f"{64 * MiB}\n")
    host.set("unified", "memory.swap.current", f"{16 * MiB}\n")
    views = host.views(["unified"])
    f = fields(views.meminfo())
    assert f["MemTotal"] == 524288 and f["MemFree"] == 524288 - 204800
    assert f["Cached"] == 70 * 1024 and f["MemAvailable"] == f["MemFree"] + 70 * 1024
    assert (f["Active"], f["Inactive"], f["SwapCached"]) == (130 * 1024, 60 * 1024, 1024)
    assert (f["SwapTotal"], f["SwapFree"]) == (65536, 49152)
    assert views.swaps().decode().endswith("none\tvirtual\t65536\t16384\t0\n")
    host.set("unified", "memory.swap.max", "max\n")
    assert fields(views.meminfo())["SwapTotal"] == 0


def test_hybrid_prefers_v1_memory(host):
    v1_memory(host)
    host.set("unified", "memory.max", f"{512 * MiB}\n")
    assert fields(host.views(V1 + ("unified",)).meminfo())["MemTotal"] == 262144


# -- CPUs

def blocks(data):
    return [b for b in data.decode().split("\n\n") if b]


@pytest.mark.parametrize("key,name", [("cpuset", "cpuset.cpus"),
                                      ("cpuset", "cpuset.effective_cpus"),
                                      ("unified", "cpuset.cpus.effective")])
def test_one_cpu(host, key, name):
    host.set(key, name, "0\n")
    views = host.views([key])
    bs = blocks(views.cpuinfo())
    assert len(bs) == 1 and bs[0] + "\n\n" == CPUINFO.split("\n\n")[0] + "\n\n"
    assert views.cpu_online() == b"0\n"
    f = views.files()
    assert f["cpu_present"]() == f["cpu_possible"]() == b"0\n"


def test_cpuset_renumbered(host):
    host.set("cpuset", "cpuset.effective_cpus", "2-3\n")
    host.set("cpuset", "cpuset.cpus", "0-3\n")            # effective_cpus wins
    views = host.views(["cpuset"])
    bs = blocks(views.cpuinfo())
    assert [b.splitlines()[0] for b in bs] == ["processor\t: 0", "processor\t: 1"]
    assert ["apicid\t\t: 12" in bs[0], "apicid\t\t: 13" in bs[1]] == [True, True]
    assert "core id\t\t: 2" in bs[0]                      # only `processor` changes
    assert views.cpu_online() == b"0-1\n"


@pytest.mark.parametrize("keys,files,n", [
    (["cpu,cpuacct"], {"cpu.cfs_quota_us": "150000\n", "cpu.cfs_period_us": "100000\n"}, 2),
    (["cpu,cpuacct"], {"cpu.cfs_quota_us": "-1\n", "cpu.cfs_period_us": "100000\n"}, 4),
    (["unified"], {"cpu.max": "150000 100000\n"}, 2),
    (["unified"], {"cpu.max": "10000 100000\n"}, 1),
    (["unified"], {"cpu.max": "max 100000\n"}, 4)])
def test_quota_cuts_cpus(host, keys, files, n):
    for name, value in files.items():
        host.set(keys[0], name, value)
    views = host.views(keys)
    assert views.cpus() == list(range(n))
    assert len(blocks(views.cpuinfo())) == n
    assert views.cpu_online() == (f"0-{n - 1}\n" if n > 1 else "0\n").encode()


def test_cpuset_and_quota(host):
    host.set("cpuset", "cpuset.cpus", "1,3\n")
    host.set("cpu,cpuacct", "cpu.cfs_quota_us", "50000\n")
    host.set("cpu,cpuacct", "cpu.cfs_period_us", "100000\n")
    views = host.views(["cpuset", "cpu,cpuacct"])
    assert views.cpus() == [1]
    assert "apicid\t\t: 11" in views.cpuinfo().decode()


def test_cpuinfo_arm64_and_header_blocks(host):
    write(os.path.join(host.proc, "cpuinfo"), "".join(
        f"processor\t: {n}\nBogoMIPS\t: 50.00\nCPU part\t: 0xd0{n}\n\n" for n in range(4))
        + "Hardware\t: fake board\n\n")
    host.set("cpuset", "cpuset.cpus", "1-2\n")
    text = host.views(["cpuset"]).cpuinfo().decode()
    assert text == ("processor\t: 0\nBogoMIPS\t: 50.00\nCPU part\t: 0xd01\n\n"
                    "processor\t: 1\nBogoMIPS\t: 50.00\nCPU part\t: 0xd02\n\n"
                    "Hardware\t: fake board\n\n")


# -- stat and uptime

def cpu_lines(data):
    return {ln.split()[0]: [int(x) for x in ln.split()[1:]]
            for ln in data.decode().splitlines() if ln.startswith("cpu")}


def test_stat_v1_percpu(host):
    host.set("cpuset", "cpuset.cpus", "2-3\n")
    ns = 10**9
    host.set("cpu,cpuacct", "cpuacct.usage_percpu_user", f"0 0 {30 * ns} {10 * ns}\n")
    host.set("cpu,cpuacct", "cpuacct.usage_percpu_sys", f"0 0 {5 * ns} {2 * ns}\n")
    views = host.views(["cpuset", "cpu,cpuacct"])
    out = views.stat()
    rows = cpu_lines(out)
    up = 600 * HZ
    assert rows["cpu0"] == [30 * HZ, 0, 5 * HZ, up - 35 * HZ, 0, 0, 0, 0, 0, 0]
    assert rows["cpu1"] == [10 * HZ, 0, 2 * HZ, up - 12 * HZ, 0, 0, 0, 0, 0, 0]
    assert set(rows) == {"cpu", "cpu0", "cpu1"}
    assert rows["cpu"] == [a + b for a, b in zip(rows["cpu0"], rows["cpu1"])]
    text = out.decode()
    assert text.startswith("cpu  ")
    assert text.endswith("".join(HOST_STAT.splitlines(True)[5:]))
    assert views.uptime() == f"600.00 {1200 - 47:.2f}\n".encode()


def test_stat_v1_split_by_cpuacct_stat(host):
    ns = 10**9
    host.set("cpu,cpuacct", "cpuacct.usage_percpu", f"{40 * ns} {8 * ns} 0 0\n")
    host.set("cpu,cpuacct", "cpuacct.stat", "user 300\nsystem 100\n")
    rows = cpu_lines(host.views(["cpu,cpuacct"]).stat())
    assert rows["cpu0"][:4] == [30 * HZ, 0, 10 * HZ, 600 * HZ - 40 * HZ]
    assert rows["cpu1"][:3] == [6 * HZ, 0, 2 * HZ]
    assert len(rows) == 5


def test_stat_v2_spread(host):
    host.set("unified", "cpuset.cpus.effective", "0,2\n")
    host.set("unified", "cpu.stat", "usage_usec 30000000\nuser_usec 20000000\n"
             "system_usec 10000000\nnr_periods 0\n")
    views = host.views(["unified"])
    rows = cpu_lines(views.stat())
    assert rows["cpu0"] == rows["cpu1"] == [10 * HZ, 0, 5 * HZ, 585 * HZ, 0, 0, 0, 0, 0, 0]
    assert rows["cpu"][:4] == [20 * HZ, 0, 10 * HZ, 1170 * HZ]
    assert views.uptime() == b"600.00 1170.00\n"


def test_stat_without_cpu_accounting_uses_host_lines(host):
    host.set("cpuset", "cpuset.cpus", "3\n")
    rows = cpu_lines(host.views(["cpuset"]).stat())
    assert rows == {"cpu": [1000, 3, 500, 22500, 75, 0, 12, 0, 0, 0],
                    "cpu0": [1000, 3, 500, 22500, 75, 0, 12, 0, 0, 0]}


def test_uptime_from_starttime(host):
    views = host.views(["cpuset"])
    assert views.uptime() == b"600.00 2400.00\n"           # 4 CPUs, no CPU time known
    write(os.path.join(host.proc, f"{INIT}/stat"), pid_stat(INIT, "S", 999 * HZ + HZ // 2))
    assert views.uptime().split()[0] == b"0.50"
    os.unlink(os.path.join(host.proc, f"{INIT}/stat"))    # init gone: the host's
    assert views.uptime().split()[0] == b"1000.00"


# -- loadavg

class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        self.t += 5.0
        return self.t


def test_loadavg_v1_converges(host):
    host.set("cpu,cpuacct", "tasks", "101\n102\n103\n")
    host.set("cpu,cpuacct/child", "tasks", "104\n105\n")  # a nested cgroup counts too
    host.set("pids", "tasks", "101\n")
    views = host.views(["pids", "cpu,cpuacct"], clock=Clock())
    views.sample()
    one = float(views.loadavg().split()[0])
    assert one == pytest.approx(3 * (1 - math.exp(-5 / 60)), abs=0.01)
    for _ in range(2000):
        views.sample()
    a, b, c, rt, last = views.loadavg().decode().split()
    assert (float(a), float(b), float(c)) == (3.0, 3.0, 3.0)   # R, D, R of 5 threads
    assert (rt, last) == ("2/5", "6602")


def test_loadavg_v2_threads_and_before_sampling(host):
    host.set("unified", "cgroup.threads", "102\n105\n")
    views = host.views(["unified"], clock=Clock())
    assert views.loadavg() == b"0.00 0.00 0.00 1/2 6602\n"
    for _ in range(12):                                     # one minute
        views.sample()
    one, five, fifteen = (float(x) for x in views.loadavg().split()[:3])
    assert one == pytest.approx(0.63, abs=0.01) and one > five > fifteen > 0


def test_loadavg_uses_elapsed_time(host):
    host.set("unified", "cgroup.threads", "102\n")
    t = [0.0]
    views = host.views(["unified"], clock=lambda: t[0])
    views.sample()
    views.sample()                                          # no time passed: no change
    first = views.loads[:]
    t[0] = 10_000.0
    views.sample()
    assert first[0] < 0.1 and views.loads == pytest.approx([1.0, 1.0, 1.0], abs=1e-4)


# -- diskstats

def test_diskstats_v1(host):
    host.set("blkio", "blkio.throttle.io_serviced",
             "8:0 Read 10\n8:0 Write 4\n8:0 Sync 14\n8:0 Async 0\n8:0 Total 14\n"
             "7:0 Read 0\n7:0 Write 0\nTotal 14\n")
    host.set("blkio", "blkio.throttle.io_service_bytes",
             "8:0 Read 40960\n8:0 Write 8192\n8:0 Total 49152\nTotal 49152\n")
    out = host.views(["blkio"]).diskstats().decode()
    assert out == "   8       0 sda 10 0 80 0 4 0 16 0 0 0 0 0 0 0 0 0 0\n"
    # the _recursive files, when the kernel has them, count child cgroups too
    host.set("blkio", "blkio.throttle.io_serviced_recursive", "8:1 Read 2\n8:1 Write 0\n")
    host.set("blkio", "blkio.throttle.io_service_bytes_recursive", "8:1 Read 1024\n")
    out = host.views(["blkio"]).diskstats().decode()
    assert out == "   8       1 sda1 2 0 2 0 0 0 0 0 0 0 0 0 0 0 0 0 0\n"


def test_diskstats_v2_and_short_host_lines(host):
    write(os.path.join(host.proc, "diskstats"),
          "   8       0 sda 5 0 8 9 4 0 6 7 0 1 1\n 253       0 dm-0 1 0 2 3 4 0 6 7 0 1 1\n")
    host.set("unified", "io.stat", "8:0 rbytes=1024 wbytes=4096 rios=2 wios=1 dbytes=0 dios=0\n"
             "253:0 rbytes=0 wbytes=0 rios=0 wios=0\n")
    out = host.views(["unified"]).diskstats()
    assert out == b"   8       0 sda 2 0 2 0 1 0 8 0 0 0 0\n"


def test_diskstats_empty_without_io(host):
    assert host.views(["blkio"]).diskstats() == b""
    assert host.views(["unified"]).diskstats() == b""


# -- robustness

def test_targets_and_files(host):
    views = host.views(V1)
    assert set(views.files()) == set(V.TARGETS)
    assert V.TARGETS["meminfo"] == "/proc/meminfo"
    assert V.TARGETS["cpu_possible"] == "/sys/devices/system/cpu/possible"
    assert all(isinstance(fn(), bytes) for fn in views.files().values())


@pytest.mark.parametrize("keys", [(), V1, ("unified",), V1 + ("unified",)])
def test_missing_files_do_not_raise(host, keys):
    views = host.views(keys)
    views.sample()
    out = {name: fn() for name, fn in views.files().items()}
    assert out["meminfo"] == HOST_MEMINFO.encode()
    assert len(blocks(out["cpuinfo"])) == 4 and out["cpu_online"] == b"0-3\n"
    assert out["uptime"] == b"600.00 2400.00\n"
    assert out["loadavg"] == b"0.00 0.00 0.00 0/0 6602\n" and out["diskstats"] == b""


@pytest.mark.parametrize("keys", [V1, ("unified",)])
def test_odd_files_do_not_raise(host, keys):
    for key in keys:
        for name in ("memory.limit_in_bytes", "memory.usage_in_bytes", "memory.stat",
                     "memory.memsw.limit_in_bytes", "memory.max", "memory.current",
                     "memory.swap.max", "cpuset.cpus", "cpuset.cpus.effective",
                     "cpu.cfs_quota_us", "cpu.cfs_period_us", "cpu.max", "cpu.stat",
                     "cpuacct.usage_percpu", "cpuacct.stat", "tasks", "cgroup.threads",
                     "blkio.throttle.io_serviced", "io.stat"):
            host.set(key, name, "garbage x:y 1-\n\xff")
    views = host.views(keys)
    views.sample()
    for fn in views.files().values():
        assert isinstance(fn(), bytes)
    assert views.meminfo() == HOST_MEMINFO.encode()
    assert views.cpu_online() == b"0-3\n"


def test_empty_host_tree(tmp_path):
    views = V.Views({}, None, proc=str(tmp_path), sys=str(tmp_path))
    views.sample()
    for fn in views.files().values():
        assert isinstance(fn(), bytes)


def test_a_surprise_serves_the_hosts_file(host, monkeypatch):
    monkeypatch.setattr(V, "STRICT", False)
    views = host.views(V1)
    monkeypatch.setattr(views, "cpus", lambda: 1 / 0)
    assert views.cpuinfo() == CPUINFO.encode()
    assert views.cpu_online() == b"0-3\n"
    assert views.stat() == HOST_STAT.encode()
    monkeypatch.setattr(views, "_count", lambda: 1 / 0)
    views.sample()


# -- the real host, read only

def real_paths():
    """This process's cgroup directories, as hutch records a container's."""
    paths = {}
    for h in cgroups.hierarchies():
        rel = cgroups.own_cgroup(h.key)
        if h.root != "/" and rel.startswith(h.root):
            rel = rel[len(h.root):]
        path = os.path.join(h.mountpoint, rel.lstrip("/"))
        if os.path.isdir(path):
            paths[h.key] = path
    return paths


def test_real_host():
    paths = real_paths()
    if not paths:
        pytest.skip("no cgroup hierarchy mounted")
    views = V.Views(paths, os.getpid())
    views.sample()
    for name, fn in views.files().items():
        out = fn()
        assert isinstance(out, bytes) and (out or name == "diskstats"), name
    assert views.cpu_online().startswith(b"0")
    n = len(views.cpus())
    assert views.cpuinfo().count(b"processor") == n
    assert sum(ln.startswith(b"cpu") for ln in views.stat().splitlines()) == n + 1
    assert float(views.uptime().split()[0]) < float(open("/proc/uptime").read().split()[0])
    assert b"MemTotal:" in views.meminfo()
