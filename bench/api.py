#!/usr/bin/env python3
"""The Python library against CLI runtimes, side by side in one run.

* one-shot: ``hutch.run(["true"])`` from a warm interpreter (the host's view, and
  a busybox rootfs), against ``runc run`` of the same busybox rootfs, ``bwrap
  --ro-bind / / --unshare-all --die-with-parent true`` and ``podman run --rm``;
* into a running container: ``sb.run(["true"])`` against ``runc exec``.

Each is started from this Python process, as a program using it would (the CLI
tools through subprocess), p50 and p90 over RUNS.  Not a timed test: it
reports ratios.

Usage: bench/api.py [RUNS]   (root; after ./setup.sh)
"""

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(HERE, "tests"))
sys.path.insert(0, os.path.join(HERE, "src"))
from conftest import base_config, build_busybox  # noqa: E402

import hutch  # noqa: E402

RUNS = int(sys.argv[1]) if len(sys.argv) > 1 else 50


def measure(fn, runs=RUNS, warmup=3):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    times.sort()
    return statistics.median(times), times[int(len(times) * 0.9) - 1]


def quiet(cmd):
    def run():
        p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE)
        if p.returncode != 0:
            raise RuntimeError(f"{cmd}: {p.stderr.decode(errors='replace')[-300:]}")
    return run


def table(title, rows, base):
    print(f"\n### {title}\n")
    print("| | p50 (ms) | p90 (ms) | p50 / " + base + " |")
    print("|---|---:|---:|---:|")
    ref = dict((n, v) for n, v in rows)[base][0]
    for name, (p50, p90) in rows:
        print(f"| {name} | {p50:.1f} | {p90:.1f} | {p50 / ref:.2f} |")


def main():
    work = tempfile.mkdtemp(prefix="hutch-bench-api-")
    os.chmod(work, 0o755)
    try:
        rootfs = os.path.join(work, "bundle", "rootfs")
        build_busybox(rootfs)
        cfg = base_config(["true"])
        cfg["linux"]["cgroupsPath"] = "/hutch-bench-api-runc"
        with open(os.path.join(work, "bundle", "config.json"), "w") as f:
            json.dump(cfg, f)
        state = os.path.join(work, "state")
        runc_root = os.path.join(work, "runc")
        one_shot = [
            ("hutch.run, host view", lambda: hutch.run(["true"], root=state)),
            ("hutch.run, busybox rootfs",
             lambda: hutch.run(["true"], rootfs=rootfs, root=state)),
            ("runc run, busybox rootfs",
             quiet(["runc", "--root", runc_root, "run", "-b",
                    os.path.join(work, "bundle"), "bench-api"])),
        ]
        if shutil.which("bwrap"):
            one_shot.append(("bwrap --ro-bind / / --unshare-all", quiet(
                ["bwrap", "--ro-bind", "/", "/", "--unshare-all", "--die-with-parent",
                 "true"])))
        # Podman raises RLIMIT_NOFILE past what a root without CAP_SYS_RESOURCE
        # may (this VM): the host's own limits are passed instead
        import resource
        nf = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        podman_cmd = ["podman", "run", "--rm", "--network", "none", "--ulimit",
                      f"nofile={nf}:{nf}", "--ulimit", "nproc=32768:32768",
                      "--rootfs", rootfs, "true"]
        podman = shutil.which("podman") and subprocess.run(
            podman_cmd, capture_output=True).returncode == 0
        if podman:
            one_shot.append(("podman run --rm --rootfs", quiet(podman_cmd)))
        else:
            print("podman: cannot run here, left out")
        rows = [(n, measure(fn, RUNS if "podman" not in n else max(10, RUNS // 5)))
                for n, fn in one_shot]
        table(f"One command in a new container ({RUNS} runs)", rows,
              "runc run, busybox rootfs")

        # into a running container
        cfg = base_config(["sleep", "100000"])
        cfg["linux"]["cgroupsPath"] = "/hutch-bench-api-runc-exec"
        with open(os.path.join(work, "bundle", "config.json"), "w") as f:
            json.dump(cfg, f)
        subprocess.run(["runc", "--root", runc_root, "run", "-d", "-b",
                        os.path.join(work, "bundle"), "bench-exec"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True)
        try:
            with hutch.Sandbox(root=state) as sb, \
                    hutch.Sandbox(rootfs=rootfs, root=state) as sb2:
                rows = [("sb.run, host view", measure(lambda: sb.run(["true"]))),
                        ("sb.run, busybox rootfs", measure(lambda: sb2.run(["true"]))),
                        ("runc exec", measure(quiet(["runc", "--root", runc_root,
                                                     "exec", "bench-exec", "true"])))]
        finally:
            subprocess.run(["runc", "--root", runc_root, "delete", "-f", "bench-exec"],
                           capture_output=True)
        table(f"One command in a running container ({RUNS} runs)", rows, "runc exec")
    finally:
        subprocess.run(["rm", "-rf", work])


if __name__ == "__main__":
    main()
