"""Lifecycle: create -> created -> start -> running -> stopped -> delete."""

import json
import os
import time

from conftest import base_config


def _state(b, cid):
    p = b.rt("state", cid)
    assert p.returncode == 0, p.stderr
    return json.loads(p.stdout)


def _wait_status(b, cid, want, timeout=10):
    deadline = time.time() + timeout
    st = None
    while time.time() < deadline:
        p = b.rt("state", cid)
        if p.returncode != 0:       # not created yet
            time.sleep(0.05)
            continue
        st = json.loads(p.stdout)
        if st["status"] == want:
            return st
        time.sleep(0.05)
    raise AssertionError(f"{cid} never reached {want}: {st}")


def test_create_start_kill_delete(bundle):
    b = bundle
    b.write(base_config(["sleep", "100"]))
    cid = b.new_id()
    pidfile = os.path.join(b.dir, "pid")
    p = b.rt("create", "--bundle", b.dir, "--pid-file", pidfile, cid)
    assert p.returncode == 0, p.stderr
    st = _state(b, cid)
    assert st["status"] == "created"
    assert st["id"] == cid and st["bundle"] == b.dir
    assert set(st) >= {"ociVersion", "id", "status", "pid", "bundle"}
    with open(pidfile) as f:
        pid = int(f.read())
    assert pid == st["pid"]
    # the init waits: it has not exec'd sleep yet
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert b"sleep" not in f.read()
    assert b.rt("start", cid).returncode == 0
    st = _wait_status(b, cid, "running")
    with open(f"/proc/{pid}/cmdline", "rb") as f:
        assert f.read().split(b"\0")[0] == b"sleep"
    # a running container cannot be deleted without --force
    p = b.rt("delete", cid)
    assert p.returncode != 0
    assert f"cannot delete container {cid} that is not stopped: running" in p.stderr, \
        p.stderr
    assert _state(b, cid)["status"] == "running"
    assert b.rt("kill", cid, "KILL").returncode == 0
    _wait_status(b, cid, "stopped")
    p = b.rt("kill", cid, "9")
    assert p.returncode != 0 and "container not running" in p.stderr
    assert b.rt("delete", cid).returncode == 0
    p = b.rt("state", cid)
    assert p.returncode != 0 and "does not exist" in p.stderr
    # gone, or a zombie waiting for its reaper: never running
    try:
        with open(f"/proc/{pid}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except FileNotFoundError:
        pass
    # engines delete twice: the second --force of a gone container succeeds
    assert b.rt("delete", "--force", cid).returncode == 0


def test_signal_by_number_and_name(bundle):
    b = bundle
    b.write(base_config(["sh", "-c", "trap 'exit 42' USR1; while :; do sleep 0.05; done"]))
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    _wait_status(b, cid, "running")
    time.sleep(0.3)
    assert b.rt("kill", cid, "SIGUSR1").returncode == 0
    _wait_status(b, cid, "stopped")
    assert b.rt("delete", cid).returncode == 0


def test_kill_all(bundle):
    b = bundle
    b.write(base_config(["sh", "-c", "sleep 100 & sleep 100 & wait"]))
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    time.sleep(0.3)
    assert b.rt("kill", "--all", cid, "9").returncode == 0
    _wait_status(b, cid, "stopped")
    assert b.rt("delete", cid).returncode == 0


def test_duplicate_and_invalid_ids(bundle):
    b = bundle
    b.write(base_config(["sleep", "100"]))
    cid = b.new_id()
    assert b.rt("create", "--bundle", b.dir, cid).returncode == 0
    p = b.rt("create", "--bundle", b.dir, cid)
    assert p.returncode != 0 and "exists" in p.stderr
    p = b.rt("create", "--bundle", b.dir, "../evil")
    assert p.returncode != 0
    assert not os.path.exists(os.path.join(os.path.dirname(b.root), "evil"))
    assert b.rt("delete", "--force", cid).returncode == 0


def test_list(bundle):
    b = bundle
    b.write(base_config(["sleep", "100"]))
    cid = b.new_id()
    assert b.rt("create", "--bundle", b.dir, cid).returncode == 0
    p = b.rt("list", "-q")
    assert p.stdout.split() == [cid]
    p = b.rt("list", "--format", "json")
    items = json.loads(p.stdout)
    assert items[0]["id"] == cid and items[0]["status"] == "created"
    p = b.rt("list")
    assert p.stdout.splitlines()[0].split()[:3] == ["ID", "PID", "STATUS"]
    assert b.rt("delete", "--force", cid).returncode == 0


def test_exit_status_passes_through(bundle):
    assert bundle.sh("exit 7").returncode == 7


def test_foreground_run_reports_signal_death(bundle):
    import subprocess
    from conftest import RUNTIME
    b = bundle
    b.write(base_config(["sleep", "100"]))
    cid = b.new_id()
    fg = subprocess.Popen(RUNTIME + ["--root", b.root, "run", "--bundle", b.dir, cid],
                          stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL)
    try:
        _wait_status(b, cid, "running")
        assert b.rt("kill", cid, "KILL").returncode == 0
        assert fg.wait(timeout=20) == 137
    finally:
        if fg.poll() is None:
            fg.kill()


def test_stopped_is_detected_after_exit(bundle):
    b = bundle
    b.write(base_config(["true"]))
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    _wait_status(b, cid, "stopped")
    assert b.rt("delete", cid).returncode == 0
