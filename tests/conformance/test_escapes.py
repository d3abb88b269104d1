"""Escape resistance: each runtime CVE class reproduced, and shown to fail.

The CVE-2019-5736 class (the runtime's binary through /proc/self/exe) is in
test_container.py (through the init) and test_exec.py (through exec)."""

import json
import os
import threading
import time

from conftest import base_config


def _detached(b, cfg):
    b.write(cfg)
    cid = b.new_id()
    p = b.rt("run", "-d", "--bundle", b.dir, cid)
    return cid, p


def _pid(b, cid):
    return json.loads(b.rt("state", cid, check=True).stdout)["pid"]


# --- CVE-2024-21626: leaked fds and a working directory outside the rootfs ----------
def _inside(b, path):
    root = os.path.realpath(b.rootfs)
    return path == root or path.startswith(root + "/")


def test_cwd_through_a_leaked_fd_stays_inside(bundle):
    """process.cwd /proc/self/fd/N: had the runtime leaked a host directory fd N
    into the container, the process would start in the host's filesystem."""
    b = bundle
    for n in range(3, 10):
        cfg = base_config(["sleep", "100"])
        cfg["process"]["cwd"] = f"/proc/self/fd/{n}"
        cid, p = _detached(b, cfg)
        try:
            if p.returncode != 0:
                continue         # refused: fine, as long as nothing else happened
            cwd = os.readlink(f"/proc/{_pid(b, cid)}/cwd")
            assert _inside(b, cwd), f"fd {n}: the container starts in {cwd}"
        finally:
            b.rt("delete", "--force", cid)


def test_exec_cwd_through_a_leaked_fd_stays_inside(bundle):
    b = bundle
    cid, p = _detached(b, base_config(["sleep", "100"]))
    assert p.returncode == 0, p.stderr
    try:
        for n in range(3, 10):
            pidfile = os.path.join(b.dir, f"e{n}.pid")
            p = b.rt("exec", "--detach", "--pid-file", pidfile, "--cwd",
                     f"/proc/self/fd/{n}", cid, "sleep", "100")
            if p.returncode != 0:
                continue
            with open(pidfile) as f:
                cwd = os.readlink(f"/proc/{int(f.read())}/cwd")
            assert _inside(b, cwd), f"fd {n}: exec starts in {cwd}"
        # and the exec'd process holds nothing but its stdio
        p = b.rt("exec", cid, "sh", "-c", "ls /proc/self/fd")
        assert sorted(int(x) for x in p.stdout.split()) == [0, 1, 2, 3]
    finally:
        b.rt("delete", "--force", cid)


def test_no_host_fd_reaches_the_init_or_its_children(bundle):
    b = bundle
    cid, p = _detached(b, base_config(["sleep", "100"]))
    assert p.returncode == 0, p.stderr
    try:
        pid = _pid(b, cid)
        fds = {int(x): os.readlink(f"/proc/{pid}/fd/{x}")
               for x in os.listdir(f"/proc/{pid}/fd")}
        assert set(fds) <= {0, 1, 2}, fds
    finally:
        b.rt("delete", "--force", cid)


# --- CVE-2021-30465: mount destinations that are, or become, symlinks ---------------
def test_mount_target_swapped_for_a_symlink_during_setup(bundle, tmp_path):
    """While containers are being created, a racer keeps replacing the mount
    destination with a symlink to a host directory.  No mount may land there."""
    b = bundle
    victim = tmp_path / "victim"
    victim.mkdir()
    mnt = os.path.join(b.rootfs, "mnt")
    os.makedirs(mnt, exist_ok=True)
    stop = threading.Event()

    def racer():
        link, d = mnt + ".link", mnt + ".dir"
        os.makedirs(d, exist_ok=True)
        while not stop.is_set():
            try:
                if not os.path.lexists(link):
                    os.symlink(str(victim), link)
                os.rename(link, mnt) if os.path.isdir(mnt) and not \
                    os.path.islink(mnt) else None
                os.rename(mnt, link) if os.path.islink(mnt) else None
                if not os.path.exists(mnt):
                    os.makedirs(mnt, exist_ok=True)
            except OSError:
                pass
    cfg = base_config(["sh", "-c", "touch /mnt/inside 2>/dev/null; true"])
    cfg["mounts"].append({"destination": "/mnt", "type": "tmpfs", "source": "tmpfs"})
    t = threading.Thread(target=racer, daemon=True)
    t.start()
    try:
        for _ in range(15):
            b.run(cfg)
            with open("/proc/self/mountinfo") as f:
                assert str(victim) not in f.read(), "a mount landed on the host"
            assert not os.listdir(victim), "the container wrote to the host"
    finally:
        stop.set()
        t.join()


# --- CVE-2025-31133: masked paths and a /dev/null that is not /dev/null -------------
def test_dev_null_swapped_for_a_procfs_file(bundle):
    """The image's /dev/null is a symlink to a writable procfs file (and a racer
    keeps putting it back): masking must not bind that file over masked paths."""
    b = bundle
    dev = os.path.join(b.rootfs, "dev")
    os.makedirs(dev, exist_ok=True)
    null = os.path.join(dev, "null")
    if os.path.lexists(null):
        os.unlink(null)
    os.symlink("/proc/sys/kernel/core_pattern", null)
    with open("/proc/sys/kernel/core_pattern") as f:
        before = f.read()
    stop = threading.Event()

    def racer():
        while not stop.is_set():
            try:
                tmp = null + ".swap"
                os.symlink("/proc/sys/kernel/core_pattern", tmp)
                os.rename(tmp, null)
            except OSError:
                pass
            time.sleep(0.0005)
    t = threading.Thread(target=racer, daemon=True)
    t.start()
    try:
        for _ in range(8):
            cfg = base_config(["sh", "-c",
                               "for f in /proc/kcore /proc/timer_list /proc/keys; do "
                               "[ -e $f ] && stat -c '%t:%T' $f; done; "
                               "echo '|/bin/evil' > /proc/kcore 2>/dev/null; "
                               "echo '|/bin/evil' > /proc/timer_list 2>/dev/null; true"])
            p = b.run(cfg)
            assert p.returncode == 0, p.stderr
            for line in p.stdout.split():
                assert line == "1:3", p.stdout   # masked files are the real null
            with open("/proc/sys/kernel/core_pattern") as f:
                assert f.read() == before, "the host's core_pattern was written"
    finally:
        stop.set()
        t.join()
        with open("/proc/sys/kernel/core_pattern") as f:
            now = f.read()
        if now != before:
            with open("/proc/sys/kernel/core_pattern", "w") as f:
                f.write(before)


# --- /proc and /sys writes ------------------------------------------------------------
def test_proc_and_sys_writes_fail(bundle):
    script = "; ".join(
        f"(echo 1 > {path}) 2>/dev/null && echo {name}:written || echo {name}:denied"
        for name, path in (("sysrq", "/proc/sysrq-trigger"),
                           ("core_pattern", "/proc/sys/kernel/core_pattern"),
                           ("kcore", "/proc/kcore"),
                           ("sys_kernel", "/sys/kernel/profiling"),
                           ("uevent", "/sys/kernel/uevent_helper"),
                           ("irq", "/proc/irq/default_smp_affinity"),
                           ("bus", "/proc/bus/pci/devices")))
    script += "; head -c 16 /proc/kcore | wc -c; ls /sys/firmware | wc -l"
    p = bundle.sh(script)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split()
    assert all(x.endswith(":denied") for x in lines[:7]), p.stdout
    assert lines[7:] == ["0", "0"], p.stdout       # kcore and firmware are masked


# --- the keyring ------------------------------------------------------------------------
KEYRING_WRAPPER = """
import ctypes, os, platform, sys
nr = {"x86_64": 250, "aarch64": 219}[platform.machine()]
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
serial = libc.syscall(nr, 1, sys.argv[1].encode())      # KEYCTL_JOIN_SESSION_KEYRING
assert serial > 0, os.strerror(ctypes.get_errno())
assert libc.syscall(nr, 5, serial, 0x3f000000) == 0      # KEYCTL_SETPERM: possessor only
os.execvp(sys.argv[2], sys.argv[2:])
"""


def test_new_session_keyring_unless_no_new_keyring(bundle):
    """The runtime runs in a session keyring that only its possessors can see.
    The container must not see it (it has a session keyring of its own), unless
    --no-new-keyring keeps the caller's."""
    import subprocess
    import sys
    import uuid
    from conftest import RUNTIME
    b = bundle
    name = "hutch-test-" + uuid.uuid4().hex[:8]
    cfg = base_config(["cat", "/proc/keys"])
    cfg["linux"]["maskedPaths"] = [m for m in cfg["linux"]["maskedPaths"]
                                   if m != "/proc/keys"]
    b.write(cfg)
    seen = {}
    for flags in ((), ("--no-new-keyring",)):
        cid = b.new_id()
        p = subprocess.run([sys.executable, "-c", KEYRING_WRAPPER, name] + RUNTIME +
                           ["--root", b.root, "run", *flags, "--bundle", b.dir, cid],
                           capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        seen[flags] = name in p.stdout
    assert seen == {(): False, ("--no-new-keyring",): True}, seen
