"""hutch's own checkpoint behaviour: which CRIU it uses and how it says what is
missing on this kernel."""

import json
import os
import subprocess

import pytest

from conftest import IS_ROOT, RUNTIME, RUNTIME_NAME, base_config

pytestmark = [pytest.mark.skipif(not IS_ROOT, reason="needs root"),
              pytest.mark.skipif(RUNTIME_NAME != "hutch", reason="hutch only")]


def _run(b, *args, glob=()):
    log = os.path.join(b.dir, "rt.log")
    if os.path.exists(log):
        os.unlink(log)
    p = subprocess.run(RUNTIME + ["--root", b.root, "--log", log, *glob] +
                       [str(a) for a in args], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, text=True,
                       timeout=60, cwd=b.dir)
    p.stderr = open(log).read() if os.path.exists(log) else ""
    return p


def test_help_says_whether_checkpoint_can_work(bundle):
    b = bundle
    p = b.rt("checkpoint", "--help")
    assert p.returncode == 0 and "uses CRIU 4." in p.stdout, (p.stdout, p.stderr)
    p = b.rt("checkpoint", "--help", glob=("--criu", "/no/such/criu"))
    assert p.returncode != 0 and "unavailable" in p.stderr and "/no/such/criu" in p.stderr
    if os.path.exists("/usr/sbin/criu"):      # Debian 12's 3.17
        p = b.rt("checkpoint", "--help", glob=("--criu", "/usr/sbin/criu"))
        assert p.returncode != 0 and "needs 4.1 or newer" in p.stderr, p.stderr
    feats = json.loads(b.rt("features").stdout)
    assert feats["annotations"]["org.hutch.criu"].startswith("4.")


def test_pre_dump_and_lazy_pages_say_what_is_missing(bundle, tmp_path):
    b = bundle
    b.write(base_config(["sleep", "100"]))
    cid = b.new_id()
    assert _run(b, "run", "-d", "--bundle", b.dir, cid).returncode == 0
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            pipe_max = int(f.read())
        p = _run(b, "checkpoint", "--pre-dump", "--image-path", tmp_path / "p", cid)
        assert p.returncode != 0 and "CONFIG_MEM_SOFT_DIRTY" in p.stderr, p.stderr
        p = _run(b, "checkpoint", "--lazy-pages", "--image-path", tmp_path / "l", cid)
        if pipe_max < 4 << 20:
            assert p.returncode != 0 and "fs.pipe-max-size" in p.stderr, p.stderr
        assert json.loads(b.rt("state", cid).stdout)["status"] == "running"
    finally:
        b.rt("delete", "--force", cid)


def test_a_terminal_comes_back_through_the_console_socket(bundle, tmp_path):
    """A container with a terminal: after checkpoint and restore (--shell-job), the
    restored pty's master arrives on the new --console-socket and the program
    keeps writing to it."""
    import socket
    import time
    b = bundle
    cfg = base_config(["sh", "-c", "i=0; while :; do i=$((i+1)); echo n$i; sleep 0.1; "
                       "done"])
    cfg["process"]["terminal"] = True
    b.write(cfg)
    cid = b.new_id()

    def console(path):
        srv = socket.socket(socket.AF_UNIX)
        srv.bind(path)
        srv.listen(1)
        srv.settimeout(20)
        return srv

    def master(srv):
        conn, _ = srv.accept()
        _, fds, _, _ = socket.recv_fds(conn, 100, 1)
        conn.close()
        srv.close()
        return fds[0]

    def read(fd, n=6):
        out = b""
        while out.count(b"\n") < n:
            out += os.read(fd, 100)
        return [int(x[1:]) for x in out.split() if x.startswith(b"n")]

    srv = console(str(tmp_path / "c1"))
    p = subprocess.Popen(RUNTIME + ["--root", b.root, "run", "-d", "--console-socket",
                                    str(tmp_path / "c1"), "--bundle", b.dir, cid],
                         stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                         stderr=subprocess.DEVNULL)
    m1 = master(srv)
    assert p.wait() == 0
    before = read(m1)
    assert _run(b, "checkpoint", "--shell-job", "--image-path", tmp_path / "img",
                cid).returncode == 0
    os.close(m1)
    srv = console(str(tmp_path / "c2"))
    p = subprocess.Popen(RUNTIME + ["--root", b.root, "restore", "-d", "--shell-job",
                                    "--console-socket", str(tmp_path / "c2"),
                                    "--image-path", str(tmp_path / "img"), "--bundle",
                                    b.dir, cid], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    m2 = master(srv)
    assert p.wait() == 0
    after = read(m2)
    os.close(m2)
    assert after[0] > before[-1] and after == sorted(after), (before, after)
    time.sleep(0.1)
    b.rt("delete", "--force", cid)


def _pid(b, cid):
    return json.loads(b.rt("state", cid).stdout)["pid"]


def _mountinfo():
    with open("/proc/self/mountinfo") as f:
        return f.read()


def test_the_network_is_locked_only_when_something_can_reach_it(bundle, tmp_path):
    """A namespace with only loopback is dumped without CRIU's firewall lock (no
    packet can arrive); one with a link is locked, and the lock is gone again from
    the running and from the restored container.  CRIU mounts no cgroup hierarchy
    itself (hutch's yard), and nothing of the yard stays mounted."""
    b = bundle
    b.write(base_config(["sleep", "1000"]))
    cid = b.new_id()
    assert _run(b, "run", "-d", "--bundle", b.dir, cid).returncode == 0
    try:
        img = tmp_path / "alone"
        assert _run(b, "checkpoint", "--leave-running", "--image-path", img,
                    cid).returncode == 0
        nft = "".join(p.read_text(errors="replace") for p in img.glob("nftables-*.img"))
        assert "CRIU" not in nft, nft
        tag = os.urandom(3).hex()
        pid = _pid(b, cid)
        subprocess.run(["ip", "link", "add", f"hv{tag}a", "netns", str(pid), "type",
                        "veth", "peer", "name", f"hv{tag}b", "netns", str(pid)],
                       check=True)
        img = tmp_path / "linked"
        assert _run(b, "checkpoint", "--image-path", img, cid).returncode == 0
        nft = "".join(p.read_text(errors="replace") for p in img.glob("nftables-*.img"))
        assert "CRIU" in nft, nft                       # locked while dumped
        p = _run(b, "restore", "-d", "--image-path", img, "--bundle", b.dir, cid)
        assert p.returncode == 0, p.stderr
        log = (img / "restore.log").read_text()
        assert "criu-cgyard as cg yard" in log and "Making controller dir" not in log
        pid = _pid(b, cid)
        rules = subprocess.run(["nsenter", "-t", str(pid), "-n", "iptables-save"],
                               capture_output=True, text=True).stdout
        assert "CRIU" not in rules, rules              # and unlocked after
        links = subprocess.run(["nsenter", "-t", str(pid), "-n", "ip", "-o", "link"],
                               capture_output=True, text=True).stdout
        assert f"hv{tag}a" in links and f"hv{tag}b" in links
        assert "criu-cgyard" not in _mountinfo() and "hutch-cgyard" not in _mountinfo()
    finally:
        b.rt("delete", "--force", cid)


def test_criu_keeps_its_kernel_probe_cache(bundle, tmp_path):
    """CRIU (with hutch's patch 0002) keeps what it learnt of the kernel in
    /run/criu-<boot id>.kdat, /run being a tmpfs or not, and loads it instead of
    probing the kernel again (~25 ms a start)."""
    with open("/proc/sys/kernel/random/boot_id") as f:
        cache = f"/run/criu-{f.read().strip()}.kdat"
    b = bundle
    b.write(base_config(["sleep", "1000"]))
    cid = b.new_id()
    assert _run(b, "run", "-d", "--bundle", b.dir, cid).returncode == 0
    try:
        for img in (tmp_path / "1", tmp_path / "2"):
            assert _run(b, "checkpoint", "--leave-running", "--image-path", img,
                        cid).returncode == 0
        assert os.path.isfile(cache)
        assert f"Loaded kdat cache from {cache}" in (tmp_path / "2" / "dump.log").read_text()
        assert not os.path.exists(cache + ".tmp")
    finally:
        b.rt("delete", "--force", cid)


def test_removing_a_state_directory_never_reaches_into_a_mount(bundle, tmp_path):
    """What a killed restore can leave under a container's directory (the rootfs
    bound for CRIU, a cgroup yard) is detached, not emptied, by delete."""
    b = bundle
    b.write(base_config(["sleep", "1000"]))
    cid = b.new_id()
    assert _run(b, "run", "-d", "--bundle", b.dir, cid).returncode == 0
    keep = tmp_path / "precious"
    keep.mkdir()
    (keep / "file").write_text("still here")
    inside = os.path.join(b.root, cid, "criu-root")
    os.mkdir(inside)
    subprocess.run(["mount", "--bind", str(keep), inside], check=True)
    try:
        assert b.rt("delete", "--force", cid).returncode == 0
    finally:
        if str(inside) in _mountinfo():
            subprocess.run(["umount", "-l", inside])
    assert (keep / "file").read_text() == "still here"
    assert inside not in _mountinfo() and not os.path.exists(os.path.join(b.root, cid))
