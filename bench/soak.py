"""Long runs: N back-to-back create/start/delete cycles and N `run` cycles, for
hutch and runc side by side, on `runc spec`'s default config (busybox, /bin/true).

Prints, per runtime and loop: failures (with the first error), p50/p99/max
latency of a cycle, and whether anything grew between the start and the end:
system-wide open files (fs.file-nr), mounts, live processes, state entries and
cgroup directories.  Every hutch verb is a process of its own, so its fds can
only outlive it through a process it leaves: the machine-wide counts are the
measure.  Run it on a quiet machine: anything else running shows as growth.  Usage: bench/soak.sh N   (root; ./setup.sh first)
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def bundle(work):
    b = os.path.join(work, "bundle")
    os.makedirs(os.path.join(b, "rootfs", "bin"))
    shutil.copy2("/bin/busybox", os.path.join(b, "rootfs", "bin", "busybox"))
    os.symlink("busybox", os.path.join(b, "rootfs", "bin", "true"))
    subprocess.run(["runc", "spec"], cwd=b, check=True)
    path = os.path.join(b, "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["true"]
    cfg["linux"]["cgroupsPath"] = f"/hutch-soak-{os.getpid()}"
    with open(path, "w") as f:
        json.dump(cfg, f)
    return b


def counts(root, cg):
    with open("/proc/sys/fs/file-nr") as f:
        files = int(f.read().split()[0])
    with open("/proc/self/mountinfo") as f:
        mounts = sum(1 for _ in f)
    procs = 0       # live user processes (zombies are PID 1's to reap, not ours;
    for n in os.listdir("/proc"):       # kernel threads come and go on their own)
        if n.isdigit() and n != "2":
            try:
                with open(f"/proc/{n}/stat", "rb") as f:
                    fields = f.read().rsplit(b")", 1)[1].split()
                if fields[0] not in (b"Z", b"X") and fields[1] != b"2":
                    procs += 1
            except OSError:
                pass
    entries = len([e for e in os.listdir(root) if not e.startswith(".")]) \
        if os.path.isdir(root) else 0
    cgroups = sum(1 for h in os.listdir("/sys/fs/cgroup")
                  if os.path.isdir(f"/sys/fs/cgroup/{h}/{cg}"))
    return {"open files": files, "mounts": mounts, "processes": procs,
            "state entries": entries, "cgroup dirs": cgroups}


def pct(xs, p):
    xs = sorted(xs)
    return xs[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def loop(name, cmds, n, cleanup):
    lat, fails, first = [], 0, ""
    # stderr to a file, not a pipe: a created container keeps its stdio open
    err = tempfile.TemporaryFile()
    for _ in range(n):
        t = time.perf_counter()
        for cmd in cmds:
            err.seek(0)
            err.truncate()
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                               stderr=err)
            if p.returncode:
                fails += 1
                err.seek(0)
                first = first or err.read().decode(errors="replace").strip()
                subprocess.run(cleanup, stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                break
        else:
            lat.append((time.perf_counter() - t) * 1000)
    err.close()
    return name, lat, fails, first


def main():
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 200
    work = tempfile.mkdtemp(prefix="hutch-soak.")
    try:
        b = bundle(work)
        cg = f"hutch-soak-{os.getpid()}"
        runtimes = [("hutch", [os.path.join(HERE, ".venv", "bin", "hutch-fast")]),
                    ("runc", [shutil.which("runc") or "/usr/sbin/runc"])]
        print(f"soak: {n} cycles per loop, runc spec's default config running /bin/true")
        print(f"{'runtime':6} {'loop':22} {'fails':>5} {'p50 ms':>7} {'p99 ms':>7} "
              f"{'max ms':>7} {'p99/p50':>7}  grew")
        for rt, exe in runtimes:
            root = os.path.join(work, "root-" + rt)
            R = exe + ["--root", root]
            cid = "soak"
            loops = [
                ("create/start/delete", [R + ["create", "--bundle", b, cid],
                                         R + ["start", cid], R + ["delete", "-f", cid]]),
                ("run", [R + ["run", "--bundle", b, cid]]),
            ]
            for name, cmds in loops:
                # one uncounted cycle (caches, first cgroup creation)
                for cmd in cmds:
                    subprocess.run(cmd, stdin=subprocess.DEVNULL,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                before = counts(root, cg)
                _, lat, fails, first = loop(name, cmds, n, R + ["delete", "-f", cid])
                time.sleep(0.2)     # let the last init's zombie be reaped
                after = counts(root, cg)
                grew = ", ".join(f"{k} +{after[k] - before[k]}" for k in after
                                 if after[k] > before[k]) or "nothing"
                p50, p99 = pct(lat, 50), pct(lat, 99)
                print(f"{rt:6} {name:22} {fails:5d} {p50:7.1f} {p99:7.1f} "
                      f"{max(lat):7.1f} {p99 / p50:7.2f}  {grew}")
                if first:
                    print(f"       first failure: {first[:200]}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
