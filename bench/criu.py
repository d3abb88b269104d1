#!/usr/bin/env python3
"""Checkpoint and restore times, side by side: hutch, runc (same CRIU, --criu), and
bare CRIU (the criu command line with the options hutch sends, on a hutch
container), for a small container and one holding 512 MiB; and, with --migrate,
hutch's migration downtime for 256 MiB between two network namespaces.

Usage: bench/criu.py [RUNS] [--migrate | --migrate-only]   (root; after ./setup.sh)
Prints markdown tables.  Not a timed test: it reports ratios.  --migrate raises
fs.pipe-max-size to 4 MiB for the lazy-pages runs and puts it back afterwards.
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "tests"))
sys.path.insert(0, os.path.join(HERE, "src"))
from conftest import base_config, build_busybox, build_memhog  # noqa: E402
from hutch.cgroups import hierarchies  # noqa: E402
from hutch.criu.host import cgroup_yard, network_lock, remove_yard  # noqa: E402

CRIU = "/opt/criu4/sbin/criu"
HUTCH = [os.path.join(HERE, ".venv", "bin", "hutch-fast")]
RUNC = ["runc", "--criu", CRIU]


def sh(cmd, **kw):
    """stderr through a file: a detached container would hold a pipe open."""
    with tempfile.TemporaryFile() as err:
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=err, **kw)
        err.seek(0)
        p.stderr = err.read().decode(errors="replace")
    return p


class Box:
    def __init__(self, work, rt, name, mib):
        self.work, self.rt, self.name, self.mib = work, rt, name, mib
        self.root = os.path.join(work, f"state-{name}")
        self.bundle = os.path.join(work, f"bundle-{name}")
        self.cg = f"/hutch-bench-criu-{name}"
        os.makedirs(self.bundle, exist_ok=True)
        rootfs = os.path.join(self.bundle, "rootfs")
        if not os.path.exists(rootfs):
            build_busybox(rootfs)
            build_memhog(os.path.join(rootfs, "memhog"))
        cfg = base_config(["/memhog", str(mib)] if mib else ["sleep", "100000"])
        cfg["linux"]["cgroupsPath"] = self.cg
        with open(os.path.join(self.bundle, "config.json"), "w") as f:
            json.dump(cfg, f)

    def cmd(self, *args):
        return self.rt + ["--root", self.root] + list(args)

    def start(self, cid):
        # stdio /dev/null (a host file cannot be checkpointed); errors to --log
        log = os.path.join(self.work, "run.log")
        p = subprocess.run(self.rt + ["--root", self.root, "--log", log, "run", "-d",
                                      "--bundle", self.bundle, cid],
                           stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
        assert p.returncode == 0, open(log).read()
        if self.mib:
            path = os.path.join(self.bundle, "rootfs", "mem.sum")
            while not os.path.exists(path):
                time.sleep(0.01)
            os.unlink(path)

    def pid(self, cid):
        return json.loads(subprocess.run(self.cmd("state", cid), capture_output=True,
                                         text=True).stdout)["pid"]


def timed(cmd):
    t = time.monotonic()
    p = sh(cmd)
    dt = (time.monotonic() - t) * 1000
    assert p.returncode == 0, (cmd, p.stderr)
    return dt


def bare_dump_cmd(box, cid, img, yard):
    """The criu command line equivalent to what hutch sends over RPC."""
    st = json.load(open(os.path.join(box.root, cid, "state.json")))
    info = st["criu"]
    cmd = [CRIU, "dump", "-t", str(st["pid"]), "-D", img, "-o", "dump.log", "-v4",
           "--root", os.path.realpath(st["rootfs"]), "--manage-cgroups",
           "--freeze-cgroup", st["cgroup"]["paths"]["freezer"], "--cgroup-yard", yard]
    if network_lock(st["pid"], info.get("join", {})) == "skip":
        cmd += ["--network-lock", "skip"]
    for p in info["masked"]:
        full = f"/proc/{st['pid']}/root{p}"
        if os.path.exists(full) and not os.path.isdir(full):
            cmd += ["--ext-mount-map", f"{p}:/dev/null"]
    return cmd


def bare_restore_cmd(box, img, root_mnt, yard):
    cmd = [CRIU, "restore", "-D", img, "-o", "restore.log", "-v4", "--root", root_mnt,
           "--manage-cgroups", "--restore-detached", "--ext-mount-map",
           "/dev/null:/dev/null", "--evasive-devices", "--cgroup-yard", yard]
    for h in hierarchies():     # as hutch's cg_root: every hierarchy, "" for v2
        cmd += ["--cgroup-root", box.cg if h.version == 2 else f"{h.key}:{box.cg}"]
    return cmd


def one(tool, box, i):
    """One checkpoint and restore of a fresh container: (dump ms, restore ms)."""
    cid = f"b{i}-{uuid.uuid4().hex[:4]}"
    img = os.path.join(box.work, f"img-{box.name}-{i}")
    box.start(cid)
    try:
        if tool != "bare":
            d = timed(box.cmd("checkpoint", "--image-path", img, cid))
            r = timed(box.cmd("restore", "-d", "--image-path", img, "--bundle",
                              box.bundle, cid))
            sh(box.cmd("delete", "-f", cid))
            return d, r
        os.makedirs(img)
        # hutch's cgroup yard (made untimed, as hutch makes it alongside CRIU)
        yard = cgroup_yard(os.path.join(box.work, "yard"))
        assert yard, "no cgroup yard on this host"
        try:
            d = timed(bare_dump_cmd(box, cid, img, yard))
        finally:
            remove_yard(yard)
        # the processes are gone; the container's state goes the usual way
        sh(box.cmd("delete", "-f", cid))
        # CRIU makes the container's cgroups (with their properties), as hutch
        # does in its restore; the root's bind and the yard are made untimed
        mounts = [h.mountpoint for h in hierarchies()]
        mnt = tempfile.mkdtemp(dir=box.work)
        yard = None
        try:
            subprocess.run(["mount", "--rbind", os.path.join(box.bundle, "rootfs"),
                            mnt], check=True)
            yard = cgroup_yard(os.path.join(box.work, "yard"))
            assert yard, "no cgroup yard on this host"
            r = timed(bare_restore_cmd(box, img, mnt, yard))
        finally:
            if yard:
                remove_yard(yard)
            subprocess.run(["umount", "-l", mnt], stderr=subprocess.DEVNULL)
            os.rmdir(mnt)
            for m in mounts:
                try:
                    for p in open(f"{m}{box.cg}/cgroup.procs").read().split():
                        os.kill(int(p), 9)
                except OSError:
                    pass
            for m in mounts:
                for _ in range(500):        # until the killed tasks have exited
                    try:
                        os.rmdir(m + box.cg)
                        break
                    except FileNotFoundError:
                        break
                    except OSError:
                        time.sleep(0.01)
        return d, r
    finally:
        shutil.rmtree(img, ignore_errors=True)



def migration(runs, mib=256):
    """`hutch migrate` of a container holding ``mib`` MiB between two network
    namespaces joined by a veth pair, each with its own hutch root, in both
    modes: {mode: [report, ...]}."""
    tag = uuid.uuid4().hex[:6]
    a, b, ip_a, ip_b = f"hb-a-{tag}", f"hb-b-{tag}", "10.199.9.1", "10.199.9.2"
    work = tempfile.mkdtemp(prefix="hutch-bench-migrate-")
    pipe = "/proc/sys/fs/pipe-max-size"
    pipe_before = open(pipe).read().strip()
    out = {"page server": [], "lazy pages": []}
    roots = (os.path.join(work, "root-a"), os.path.join(work, "root-b"))
    cg_b = f"/hutch-bench-mig-{tag}"
    try:
        for n in (a, b):
            subprocess.run(["ip", "netns", "add", n], check=True)
            subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        subprocess.run(["ip", "link", "add", "va" + tag, "netns", a, "type", "veth",
                        "peer", "name", "vb" + tag, "netns", b], check=True)
        for n, dev, ip in ((a, "va" + tag, ip_a), (b, "vb" + tag, ip_b)):
            subprocess.run(["ip", "-n", n, "addr", "add", ip + "/24", "dev", dev],
                           check=True)
            subprocess.run(["ip", "-n", n, "link", "set", dev, "up"], check=True)
        if int(pipe_before) < 4 << 20:
            with open(pipe, "w") as f:
                f.write(str(4 << 20))
        box = Box(work, HUTCH, "mig", mib)
        box.root = roots[0]
        port = 7300
        for i in range(runs):
            for mode in out:
                cid = f"m{i}-{uuid.uuid4().hex[:4]}"
                box.start(cid)
                port += 1
                log = open(os.path.join(work, "receiver.log"), "a")
                recv = subprocess.Popen(
                    ["nsenter", f"--net=/run/netns/{b}"] + HUTCH +
                    ["--root", roots[1], "receive", "--listen", f"{ip_b}:{port}",
                     "--bundle-dir", os.path.join(work, "bundles-b"),
                     "--cgroup-parent", cg_b], stdout=log, stderr=log,
                    stdin=subprocess.DEVNULL)
                for _ in range(200):
                    p = subprocess.run(["nsenter", f"--net=/run/netns/{b}", "cat",
                                        "/proc/net/tcp"], capture_output=True, text=True)
                    if f":{port:04X} " in p.stdout:
                        break
                    time.sleep(0.02)
                lazy = ["--lazy-pages"] if mode == "lazy pages" else []
                p = subprocess.run(["nsenter", f"--net=/run/netns/{a}"] + HUTCH +
                                   ["--root", roots[0], "migrate", "--json", *lazy, cid,
                                    f"{ip_b}:{port}"], capture_output=True, text=True,
                                   stdin=subprocess.DEVNULL, timeout=120)
                assert p.returncode == 0, p.stderr
                assert recv.wait(60) == 0, open(log.name).read()
                out[mode].append(json.loads(p.stdout.strip().splitlines()[-1]))
                subprocess.run(HUTCH + ["--root", roots[1], "delete", "-f", cid])
                shutil.rmtree(os.path.join(work, "bundles-b", cid), ignore_errors=True)
    finally:
        with open(pipe, "w") as f:
            f.write(pipe_before)
        for root in roots:
            for cid in (os.listdir(root) if os.path.isdir(root) else ()):
                if not cid.startswith("."):
                    sh(HUTCH + ["--root", root, "delete", "-f", cid])
        for n in (a, b):
            subprocess.run(["ip", "netns", "del", n], stderr=subprocess.DEVNULL)
        subprocess.run(["sh", "-c", f"grep -o '{work}[^ ]*' /proc/self/mountinfo | "
                        "sort -r | xargs -r -n1 umount -l"])
        shutil.rmtree(work, ignore_errors=True)
    return out


def print_migration(res, mib=256):
    print(f"\nMigration of {mib} MiB, downtime (freeze at the source to running "
          "at the destination):\n")
    print("| Mode | Downtime [ms] | Phases while frozen [ms] | All pages there [ms] |")
    print("|:---|---:|:---|---:|")
    for mode, reports in res.items():
        down = [r["downtime_ms"] for r in reports]
        phases = {}
        for r in reports:
            for k, v in r.get("frozen_phases_ms", {}).items():
                phases.setdefault(k, []).append(v)
        ph = ", ".join(f"{k} {statistics.mean(v):.0f}" for k, v in phases.items())
        pulled = [r["pages_pulled_ms"] for r in reports if "pages_pulled_ms" in r]
        print(f"| {mode} | {fmt(down)} (min {min(down):.0f}, max {max(down):.0f}) | "
              f"{ph} | {fmt(pulled) if pulled else 'at restore'} |")


def fmt(xs):
    return f"{statistics.mean(xs):.0f} ± {statistics.pstdev(xs):.0f}"


def main():
    runs = int(sys.argv[1]) if len(sys.argv) > 1 and sys.argv[1].isdigit() else 5
    if "--migrate-only" in sys.argv:
        print_migration(migration(runs))
        return
    work = tempfile.mkdtemp(prefix="hutch-bench-criu-")
    rows = []
    boxes = []
    try:
        tools = (("hutch", HUTCH), ("runc", RUNC), ("bare CRIU", HUTCH))
        for mib in (0, 512):
            mine = {tool: Box(work, rt, f"{tool.split()[0]}-{mib}", mib)
                    for tool, rt in tools}
            boxes += mine.values()
            res = {tool: ([], []) for tool, _ in tools}
            # interleaved, so that drift hits all alike; a first round is not
            # counted (the VM's first touch of that much memory and page cache)
            for i in range(runs + 1):
                for tool, _ in tools:
                    d, r = one("bare" if tool == "bare CRIU" else tool, mine[tool], i)
                    if i:
                        res[tool][0].append(d)
                        res[tool][1].append(r)
            base_d = statistics.mean(res["bare CRIU"][0])
            base_r = statistics.mean(res["bare CRIU"][1])
            for tool, (d, r) in res.items():
                rows.append(f"| {tool} | {mib or 'small'} | {fmt(d)} | "
                            f"{statistics.mean(d) / base_d:.2f} | {fmt(r)} | "
                            f"{statistics.mean(r) / base_r:.2f} |")
    finally:
        for box in boxes:        # whatever a failed run left running
            for cid in (os.listdir(box.root) if os.path.isdir(box.root) else ()):
                if not cid.startswith("."):
                    sh(box.cmd("delete", "-f", cid))
        subprocess.run(["sh", "-c", f"grep -o '{work}[^ ]*' /proc/self/mountinfo | "
                        "sort -r | xargs -r -n1 umount -l"])
        shutil.rmtree(work, ignore_errors=True)
    print("| Tool | Memory (MiB) | Checkpoint [ms] | vs bare | Restore [ms] | vs bare |")
    print("|:---|---:|---:|---:|---:|---:|")
    print("\n".join(rows))
    if "--migrate" in sys.argv:
        print_migration(migration(runs))


if __name__ == "__main__":
    main()
