"""The process's terminal and inherited sockets, --no-pivot, and the hooks that run
inside the container's namespaces."""

import json
import os
import select
import socket
import subprocess
import sys
import tempfile
import time

from conftest import RUNTIME, base_config


def _read_until(fd, needle, timeout=10.0):
    buf = b""
    end = time.monotonic() + timeout
    while needle not in buf and time.monotonic() < end:
        r, _, _ = select.select([fd], [], [], 0.2)
        if r:
            try:
                chunk = os.read(fd, 4096)
            except OSError:       # EIO: the pty's other side is gone
                break
            if not chunk:
                break
            buf += chunk
    return buf


def test_console_socket_sends_a_working_pty(bundle, tmp_path):
    """terminal: true with --console-socket: the runtime connects, sends the pty
    master with SCM_RIGHTS, and the container's stdio is the slave."""
    b = bundle
    cfg = base_config(["sh", "-c", "tty; test -t 0 && test -t 1 && echo stdio-is-a-tty; "
                       "read line; echo got:$line"])
    cfg["process"]["terminal"] = True
    b.write(cfg)
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    cid = b.new_id()
    try:
        p = b.rt("create", "--bundle", b.dir, "--console-socket", path, cid)
        assert p.returncode == 0, p.stderr
        conn, _ = srv.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        conn.close()
        assert len(fds) == 1
        master = fds[0]
        try:
            assert os.isatty(master)
            assert b.rt("start", cid).returncode == 0
            out = _read_until(master, b"stdio-is-a-tty")
            assert b"/dev/pts/" in out and b"stdio-is-a-tty" in out, out
            os.write(master, b"hello\n")
            out = _read_until(master, b"got:hello")
            assert b"got:hello" in out, out
        finally:
            os.close(master)
    finally:
        srv.close()


def test_no_pivot(bundle):
    """--no-pivot (MS_MOVE + chroot): the container still sees only its rootfs."""
    with open(os.path.join(bundle.rootfs, "marker-no-pivot"), "w") as f:
        f.write("inside\n")
    p = bundle.sh("cat /marker-no-pivot; ls /; test -e /usr/lib/os-release && echo HOST; true",
                  extra=("--no-pivot",))
    assert p.returncode == 0, p.stderr
    assert "inside" in p.stdout
    assert "HOST" not in p.stdout


def test_socket_activation_fds_pass_through(bundle):
    """LISTEN_FDS/LISTEN_PID for the runtime's pid: fd 3 reaches the container and
    the process sees LISTEN_FDS=1, LISTEN_PID=1."""
    b = bundle
    cfg = base_config(["sh", "-c", "echo fds=$LISTEN_FDS pid=$LISTEN_PID; "
                       "ls -l /proc/self/fd/3; echo ping >&3"])
    b.write(cfg)
    cid = b.new_id()
    a, c = socket.socketpair()
    os.set_inheritable(c.fileno(), True)
    cmd = RUNTIME + ["--root", b.root, "run", "--bundle", b.dir, cid]
    wrapper = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
               "os.environ.update(LISTEN_FDS='1', LISTEN_PID=str(os.getpid())); "
               "os.execvp(sys.argv[2], sys.argv[2:])")
    with tempfile.TemporaryFile() as out:
        p = subprocess.run([sys.executable, "-c", wrapper, str(c.fileno())] + cmd,
                           stdout=out, stderr=subprocess.STDOUT, pass_fds=(c.fileno(),),
                           stdin=subprocess.DEVNULL, timeout=30)
        out.seek(0)
        text = out.read().decode()
    c.close()
    assert p.returncode == 0, text
    assert "fds=1 pid=1" in text
    assert "socket:[" in text
    a.settimeout(5)
    assert a.recv(100) == b"ping\n"
    a.close()


def test_create_and_start_container_hooks(bundle, tmp_path):
    """createContainer runs in the container's mount namespace before pivot_root;
    startContainer runs inside the container, after start, before the process."""
    b = bundle
    cfg = base_config(["sh", "-c", "cat /started-by-hook"])
    # the path of a startContainer hook is resolved in the container
    cfg["hooks"] = {
        "createContainer": [{"path": "/bin/sh", "args": [
            "sh", "-c", f"cat > {tmp_path}/cc.json; grep -c . /proc/self/mountinfo "
                        f"> {tmp_path}/cc.mounts; readlink /proc/self/ns/mnt "
                        f"> {tmp_path}/cc.ns"]}],
        "startContainer": [{"path": "/bin/sh", "args": [
            "sh", "-c", "cat > /state.json; hostname > /started-by-hook"]}],
    }
    cfg["hostname"] = "hooked"
    b.write(cfg)
    cid = b.new_id()
    p = b.rt("create", "--bundle", b.dir, cid)
    assert p.returncode == 0, p.stderr
    st = json.loads((tmp_path / "cc.json").read_text())
    assert st["id"] == cid and st["pid"] > 0
    # (runc 1.1 gives these hooks the pid as seen inside; the spec says the host's)
    pid = json.loads(b.rt("state", cid).stdout)["pid"]
    init_ns = os.readlink(f"/proc/{pid}/ns/mnt")
    assert (tmp_path / "cc.ns").read_text().strip() == init_ns
    assert init_ns != os.readlink("/proc/self/ns/mnt")
    p = b.rt("start", cid)
    assert p.returncode == 0, p.stderr
    for _ in range(100):
        if b.rt("state", cid).stdout and json.loads(b.rt("state", cid).stdout)["status"] == "stopped":
            break
        time.sleep(0.05)
    with open(os.path.join(b.rootfs, "state.json")) as f:
        assert json.load(f)["id"] == cid
    with open(os.path.join(b.rootfs, "started-by-hook")) as f:
        assert f.read().strip() == "hooked"
