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
