#!/usr/bin/env python3
"""The keeper's /proc views against LXCFS, side by side in one run.

* a read of /proc/meminfo (open, read, close) from inside a sandbox with a
  256 MiB limit: through hutch's views, and through LXCFS (Debian's lxcfs,
  started privately here on a temporary mount and stopped after), p50 and p90;
* 32 concurrent readers: the CPU time the keeper and LXCFS spent serving them;
* a sandbox's start with the views (its keeper) and without;
* the keeper's RSS.

Not a timed test: it reports.  Usage: bench/keeper.py [READS]   (root, after
./setup.sh; wrapped by bench/keeper.sh)
"""

import functools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "src"))
import hutch  # noqa: E402

READS = int(sys.argv[1]) if len(sys.argv) > 1 else 2000

READER = r"""
import os, sys, time
n, path = int(sys.argv[1]), sys.argv[2]
ts = []
for _ in range(n):
    t = time.perf_counter_ns()
    fd = os.open(path, os.O_RDONLY)
    while os.read(fd, 65536):
        pass
    os.close(fd)
    ts.append(time.perf_counter_ns() - t)
ts.sort()
print(ts[len(ts) // 2] / 1000, ts[int(len(ts) * 0.9)] / 1000)
"""


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def reads(sb, n):
    r = sb.run(["python3", "-c", READER, str(n), "/proc/meminfo"], timeout=300)
    assert r.returncode == 0, r.stderr
    p50, p90 = map(float, r.stdout.split())
    return p50, p90


def concurrent(sb, server_pid, readers=32, n=200):
    before = cpu_seconds(server_pid)
    t = time.monotonic()
    procs = [sb.spawn(["python3", "-c", READER, str(n), "/proc/meminfo"],
                      stdout=hutch.PIPE) for _ in range(readers)]
    for p in procs:
        p.communicate(timeout=300)
    return cpu_seconds(server_pid) - before, time.monotonic() - t


def main():
    work = tempfile.mkdtemp(prefix="hutch-bench-keeper-")
    os.chmod(work, 0o755)
    lx = None
    try:
        mnt = os.path.join(work, "lxcfs")
        os.mkdir(mnt)
        lx = subprocess.Popen(["lxcfs", "-f", mnt], stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
        for _ in range(200):
            if os.path.exists(os.path.join(mnt, "proc", "meminfo")):
                break
            time.sleep(0.02)
        else:
            print("lxcfs did not come up; left out")
            lx.kill()
            lx = None
        rows = []
        with hutch.Sandbox(memory="256m") as sb:
            keeper = int(open(os.path.join(sb.root, sb.name, "keeper", "pid")).read()
                         .split()[0])
            head = sb.run(["head", "-1", "/proc/meminfo"]).stdout.decode().strip()
            rows.append(("hutch views", reads(sb, READS), concurrent(sb, keeper), head))
            rss = int([x for x in open(f"/proc/{keeper}/status")
                       if x.startswith("VmRSS")][0].split()[1])
        if lx is not None:
            sb = hutch.Sandbox(memory="256m", proc="host")
            sb.settings.config = functools.partial(sb.settings.config, extra_mounts=[
                {"destination": "/proc/meminfo", "type": "bind",
                 "source": os.path.join(mnt, "proc", "meminfo"),
                 "options": ["bind", "ro"]}])
            with sb:
                head = sb.run(["head", "-1", "/proc/meminfo"]).stdout.decode().strip()
                rows.append(("LXCFS 5.0.3", reads(sb, READS),
                             concurrent(sb, lx.pid), head))
        print(f"\n### /proc/meminfo in a sandbox with a 256 MiB limit ({READS} reads)\n")
        print("| server | what it shows | p50 read (us) | p90 (us) | "
              "CPU for 32x200 reads (s) | wall (s) |")
        print("|---|---|---:|---:|---:|---:|")
        for name, (p50, p90), (cpu, wall), head in rows:
            print(f"| {name} | `{head}` | {p50:.0f} | {p90:.0f} | {cpu:.2f} | "
                  f"{wall:.2f} |")
        if len(rows) == 2:
            print(f"\np50 ratio hutch/LXCFS: {rows[0][1][0] / rows[1][1][0]:.2f}; "
                  f"CPU ratio: {rows[0][2][0] / max(rows[1][2][0], 0.01):.2f}")
        print(f"\nkeeper RSS: {rss / 1024:.1f} MiB")

        def start(proc):
            t = time.perf_counter()
            with hutch.Sandbox(memory="256m", proc=proc):
                return (time.perf_counter() - t) * 1000
        for proc in ("virtual", "host"):
            start(proc)
        starts = {p: statistics.median([start(p) for _ in range(20)])
                  for p in ("virtual", "host")}
        print(f"\nsandbox start+close, median of 20: with views "
              f"{starts['virtual']:.1f} ms, without {starts['host']:.1f} ms "
              f"(+{starts['virtual'] - starts['host']:.1f} ms)")
    finally:
        if lx is not None:
            lx.terminate()
            lx.wait()
            subprocess.run(["umount", "-l", os.path.join(work, "lxcfs")],
                           capture_output=True)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
