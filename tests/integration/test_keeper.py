"""Detached sandboxes and their keeper: `hutch sandbox -d`, `hutch logs`, `hutch
wait`, the keeper's syslog and log rotation, and its end with `delete`."""

import gzip
import json
import os
import signal
import subprocess
import time
import uuid

import pytest

from conftest import IS_ROOT, REPO

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="containers need root")
HUTCH = os.path.join(REPO, ".venv", "bin", "hutch-fast")


@pytest.fixture
def root(tmp_path):
    d = str(tmp_path / "state")
    yield d
    if os.path.isdir(d):
        for n in os.listdir(d):
            if not n.startswith("."):
                subprocess.run([HUTCH, "--root", d, "delete", "-f", n],
                               capture_output=True)


def hutch(root, *args, check=True, timeout=30):
    p = subprocess.run([HUTCH, "--root", root] + [str(a) for a in args],
                       capture_output=True, timeout=timeout, stdin=subprocess.DEVNULL)
    if check:
        assert p.returncode == 0, (args, p.stderr.decode())
    return p


def detach(root, *cmd, opts=()):
    name = "k-" + uuid.uuid4().hex[:6]
    p = hutch(root, "sandbox", "-d", "--name", name, *opts, "--", *cmd)
    assert p.stdout.decode().strip() == name
    return name


def state(root, name):
    return json.loads(hutch(root, "state", name).stdout)


def keeper_pid(root, name):
    with open(os.path.join(root, name, "keeper", "pid")) as f:
        return int(f.read().split()[0])


def test_detached_output_order_partials_and_exit_code(root):
    name = detach(root, "sh", "-c", "echo one; echo two >&2; printf 'part'; sleep 0.4; "
                  "echo ial; exit 7")
    st = state(root, name)
    assert st["status"] == "running"
    assert st["annotations"]["org.hutch.keeper"] == "running"
    p = hutch(root, "wait", name, check=False, timeout=20)
    assert p.returncode == 7, p.stderr
    assert state(root, name)["annotations"]["org.hutch.exit-code"] == "7"
    raw = open(os.path.join(root, name, "keeper", "container.log"), "rb").read()
    recs = [line.split(b" ", 3) for line in raw.splitlines()]
    assert [(r[1], r[2], r[3]) for r in recs] == [
        (b"stdout", b"F", b"one"), (b"stderr", b"F", b"two"),
        (b"stdout", b"P", b"part"), (b"stdout", b"F", b"ial")]
    ts = [r[0] for r in recs]
    assert ts == sorted(ts) and all(t.endswith(b"Z") and len(t) == 30 for t in ts)
    assert hutch(root, "logs", name).stdout == b"one\ntwo\npartial\n"
    assert hutch(root, "logs", "--stream", "stderr", name).stdout == b"two\n"
    assert hutch(root, "logs", "--tail", "1", name).stdout == b"partial\n"
    lines = [json.loads(x) for x in hutch(root, "logs", "--format", "json",
                                          name).stdout.splitlines()]
    assert [(x["stream"], x["log"]) for x in lines] == [
        ("stdout", "one"), ("stderr", "two"), ("stdout", "partial")]


def test_syslog_lands_in_the_log(root):
    name = detach(root, "sh", "-c", "logger -t app hello; logger -p daemon.err -t d "
                  "oops; sleep 0.3")
    hutch(root, "wait", name, timeout=20)
    out = hutch(root, "logs", "--stream", "syslog", name).stdout.decode().splitlines()
    assert out == ["user.notice app: hello", "daemon.err d: oops"], out


def test_logs_follow_ends_with_the_container(root):
    name = detach(root, "sh", "-c", "for i in 1 2 3; do echo $i; sleep 0.3; done")
    t = time.monotonic()
    p = hutch(root, "logs", "-f", name, timeout=20)
    assert p.stdout == b"1\n2\n3\n"
    assert time.monotonic() - t < 10


def test_rotation_keeps_the_count(root):
    name = detach(root, "sh", "-c", "i=0; while [ $i -lt 400 ]; do echo line-$i; "
                  "i=$((i+1)); done",
                  opts=("--log-max-size", "2k", "--log-max-files", "3"))
    hutch(root, "wait", name, timeout=20)
    d = os.path.join(root, name, "keeper")
    files = sorted(n for n in os.listdir(d) if n.startswith("container.log"))
    assert files == ["container.log", "container.log.1.gz", "container.log.2.gz"]
    assert os.path.getsize(os.path.join(d, "container.log")) <= 2048
    older = gzip.open(os.path.join(d, "container.log.2.gz")).read()
    assert b"line-" in older
    out = hutch(root, "logs", name).stdout.split()
    assert out[-1] == b"line-399"          # the newest kept; the oldest rotated away
    assert out == [b"line-%d" % i for i in range(400 - len(out), 400)]


def test_an_ordinary_container_for_the_other_verbs(root):
    name = detach(root, "sleep", "100")
    p = hutch(root, "exec", name, "cat", "/proc/1/cmdline")
    assert p.stdout.split(b"\0")[0] == b"/run/hutch-init"
    ids = [c["id"] for c in json.loads(hutch(root, "list", "--format", "json").stdout)]
    assert name in ids
    hutch(root, "pause", name)
    assert state(root, name)["status"] == "paused"
    hutch(root, "resume", name)
    hutch(root, "kill", name, "KILL")
    assert hutch(root, "wait", name, check=False).returncode == 137


def test_keeper_killed_container_runs_on(root):
    # the keeper held the reading end of the container's stdout: a write there
    # now fails (EPIPE, as when Podman's conmon dies); the container itself runs on
    name = detach(root, "sh", "-c", "trap '' PIPE; while :; do echo tick 2>/dev/null "
                  "|| echo epipe > /tmp/seen; sleep 0.1; done")
    kp = keeper_pid(root, name)
    os.kill(kp, signal.SIGKILL)
    time.sleep(0.6)
    st = state(root, name)
    assert st["status"] == "running"
    assert st["annotations"]["org.hutch.keeper"] == "gone"
    assert hutch(root, "exec", name, "cat", "/tmp/seen").stdout == b"epipe\n"
    hutch(root, "delete", "-f", name)
    assert not os.path.exists(os.path.join(root, name))


def test_delete_leaves_nothing(root):
    name = detach(root, "sleep", "100")
    kp = keeper_pid(root, name)
    init = state(root, name)["pid"]
    hutch(root, "delete", "-f", name)
    time.sleep(0.2)
    for pid in (kp, init):
        try:
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().rsplit(")", 1)[1].split()[0] == "Z"
        except FileNotFoundError:
            pass
    assert not os.path.exists(os.path.join(root, name))


def test_wait_and_logs_refuse_a_container_without_keeper(root):
    import hutch
    with hutch.Sandbox(root=root) as sb:
        for verb in ("wait", "logs"):
            p = hutch_run(root, verb, sb.name)
            assert p.returncode != 0 and b"has no keeper" in p.stderr, p.stderr


def hutch_run(root, *args):
    return subprocess.run([HUTCH, "--root", root] + list(args), capture_output=True,
                          timeout=30, stdin=subprocess.DEVNULL)


def _attach(root, name, keys):
    """`hutch attach` on a pseudo-terminal: writes ``keys``, returns (output, rc)."""
    import select
    master, slave = os.openpty()
    p = subprocess.Popen([HUTCH, "--root", root, "attach", name], stdin=slave,
                         stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    time.sleep(0.4)
    os.write(master, keys)
    out = b""
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r, _, _ = select.select([master], [], [], 0.2)
        if r:
            try:
                data = os.read(master, 4096)
            except OSError:
                break
            if not data:
                break
            out += data
        elif p.poll() is not None:
            break
    os.close(master)
    return out, p.wait(timeout=10)


def test_tty_attach_input_and_exit_code(root):
    name = detach(root, "sh", "-c", "tty; read x; echo got $x; exit 3", opts=("-t",))
    out, rc = _attach(root, name, b"world\r")
    assert b"got world" in out and rc == 3
    logs = hutch(root, "logs", name).stdout
    assert logs.startswith(b"/dev/pts/0") and b"got world" in logs


def test_detach_keys_leave_it_running(root):
    name = detach(root, "sh", "-c", "while :; do sleep 1; done", opts=("-t",))
    out, rc = _attach(root, name, b"\x10\x11")
    assert rc == 0 and b"detached" in out
    assert state(root, name)["status"] == "running"
    out, rc = _attach(root, name, b"\x03")      # Ctrl-C goes to the container
    assert rc == 130 and state(root, name)["annotations"]["org.hutch.exit-code"] == "130"
