"""cgroups: limits with real effects, pause/resume, update, events, ps, cgroup
namespaces and clean-up.  Each container gets a top-level cgroup of its own
(/hutch-t-<id>), so that what remains afterwards can be checked exactly."""

import contextlib
import glob
import json
import os
import select
import subprocess
import time

import pytest

from conftest import RUNTIME, base_config

CG = "/sys/fs/cgroup"


def _cfg(args, cid, resources=None, cgroupns=False):
    cfg = base_config(args)
    cfg["linux"]["cgroupsPath"] = f"/hutch-t-{cid}"
    if resources:
        cfg["linux"]["resources"] = resources
    ns = [n for n in cfg["linux"]["namespaces"] if n["type"] != "cgroup"]
    if cgroupns:
        ns.append({"type": "cgroup"})
    cfg["linux"]["namespaces"] = ns
    return cfg


def _leftovers(cid):
    return glob.glob(f"{CG}/*/hutch-t-{cid}")


def _v1(ctrl, cid, name):
    with open(f"{CG}/{ctrl}/hutch-t-{cid}/{name}") as f:
        return f.read().strip()


def _detached(b, cfg, cid):
    b.write(cfg)
    p = b.rt("run", "-d", "--bundle", b.dir, cid)
    assert p.returncode == 0, p.stderr
    return p


@contextlib.contextmanager
def _running(b, cfg, cid):
    """A detached container, force-deleted afterwards; then nothing may remain."""
    _detached(b, cfg, cid)
    try:
        yield
    finally:
        b.rt("delete", "--force", cid)
    assert not _leftovers(cid)


def _wait_stopped(b, cid, timeout=20):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        p = b.rt("state", cid)
        if p.returncode != 0 or json.loads(p.stdout)["status"] == "stopped":
            return
        time.sleep(0.1)
    raise AssertionError(f"{cid} did not stop")


def test_memory_limit_oom_kills_with_137_and_events_report_it(bundle):
    b = bundle
    mem = {"memory": {"limit": 32 << 20, "swap": 32 << 20}}
    # the init itself allocates past the limit: the foreground run exits 137
    cid = b.new_id()
    cfg = _cfg(["dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1"], cid, mem)
    b.write(cfg)
    p = b.rt("run", "--bundle", b.dir, cid)
    assert p.returncode == 137, (p.returncode, p.stderr)
    assert not _leftovers(cid)
    # a child allocates past the limit while `events` watches: an oom event arrives
    cid = b.new_id()
    cfg = _cfg(["sh", "-c", "sleep 1; dd if=/dev/zero of=/dev/null bs=64M count=1; "
                "sleep 2"], cid, mem)
    _detached(b, cfg, cid)
    ev = subprocess.Popen(RUNTIME + ["--root", b.root, "events", "--interval", "30s", cid],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    types, buf = [], b""
    try:
        end = time.monotonic() + 20
        while "oom" not in types and time.monotonic() < end:
            r, _, _ = select.select([ev.stdout], [], [], 0.2)
            if not r:
                continue
            chunk = os.read(ev.stdout.fileno(), 65536)
            if not chunk:
                break
            buf += chunk
            *lines, buf = buf.split(b"\n")
            types += [json.loads(x)["type"] for x in lines if x.strip()]
    finally:
        ev.kill()
        ev.wait()
        ev.stdout.close()
    assert "oom" in types, types
    assert b.rt("delete", "--force", cid).returncode == 0
    assert not _leftovers(cid)


def test_pids_limit_bounds_a_fork_bomb(bundle):
    b = bundle
    cid = b.new_id()
    # only shell builtins after the bomb: forks are what the limit refuses
    # (a failed fork ends the busybox shell that tried it: bomb from a subshell)
    script = ("(i=0; while [ $i -lt 200 ]; do sleep 30 & i=$((i+1)); done) 2>/dev/null; "
              "set -- /proc/[0-9]*; echo procs=$#")
    cfg = _cfg(["sh", "-c", script], cid, {"pids": {"limit": 20}})
    p = b.run(cfg)
    procs = int(p.stdout.split("procs=")[1].split()[0])
    assert procs <= 20, p.stdout
    assert procs >= 10
    assert not _leftovers(cid)


def test_cpu_quota_limits_a_busy_loop(bundle):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(["sh", "-c", "while :; do :; done"], cid,
               {"cpu": {"quota": 20000, "period": 100000}})
    with _running(b, cfg, cid):
        time.sleep(0.5)
        u0, t0 = int(_v1("cpuacct", cid, "cpuacct.usage")), time.monotonic()
        time.sleep(2)
        u1, t1 = int(_v1("cpuacct", cid, "cpuacct.usage")), time.monotonic()
        share = (u1 - u0) / 1e9 / (t1 - t0)
        assert 0.1 <= share <= 0.3, share


def test_pause_stops_a_counter_and_resume_continues_it(bundle):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /count; "
                "sleep 0.02; done"], cid)
    count = os.path.join(b.rootfs, "count")

    def read():
        for _ in range(50):
            try:
                with open(count) as f:
                    v = f.read().strip()
                if v:
                    return int(v)
            except FileNotFoundError:
                pass
            time.sleep(0.02)
        raise AssertionError("no counter")
    with _running(b, cfg, cid):
        read()
        assert b.rt("pause", cid).returncode == 0
        assert json.loads(b.rt("state", cid).stdout)["status"] == "paused"
        a = read()
        time.sleep(0.4)
        assert read() == a
        assert b.rt("resume", cid).returncode == 0
        assert json.loads(b.rt("state", cid).stdout)["status"] == "running"
        time.sleep(0.4)
        assert read() > a


def test_update_raises_memory_limit_live(bundle):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(["sleep", "30"], cid, {"memory": {"limit": 64 << 20}})
    with _running(b, cfg, cid):
        assert int(_v1("memory", cid, "memory.limit_in_bytes")) == 64 << 20
        p = b.rt("update", "--memory", "100m", "--pids-limit", "33", cid)
        assert p.returncode == 0, p.stderr
        assert int(_v1("memory", cid, "memory.limit_in_bytes")) == 100 << 20
        assert _v1("pids", cid, "pids.max") == "33"
        p = b.rt("update", "-r", "-", cid, input=json.dumps({"cpu": {"shares": 256}}))
        assert p.returncode == 0, p.stderr
        assert _v1("cpu", cid, "cpu.shares") == "256"


def test_ps_and_stats(bundle):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(["sh", "-c", "sleep 30 & sleep 30 & wait"], cid, {"pids": {"limit": 10}})
    with _running(b, cfg, cid):
        time.sleep(0.3)
        p = b.rt("ps", "--format", "json", cid)
        assert p.returncode == 0, p.stderr
        pids = json.loads(p.stdout)
        assert len(pids) == 3
        for pid in pids:
            with open(f"/proc/{pid}/cgroup") as f:
                assert f"/hutch-t-{cid}" in f.read()
        st = json.loads(b.rt("events", "--stats", cid).stdout)
        assert st["type"] == "stats" and st["id"] == cid
        assert st["data"]["pids"] == {"current": 3, "limit": 10}
        assert st["data"]["memory"]["usage"]["usage"] > 0


@pytest.mark.parametrize("cgroupns", [False, True])
def test_cgroup_namespace_hides_host_paths(bundle, cgroupns):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(["cat", "/proc/self/cgroup"], cid, cgroupns=cgroupns)
    p = b.run(cfg)
    assert p.returncode == 0, p.stderr
    lines = [x for x in p.stdout.splitlines() if x]
    paths = {x.split(":", 2)[2] for x in lines}
    if cgroupns:
        assert paths == {"/"}, p.stdout
    else:
        assert f"/hutch-t-{cid}" in paths


def test_kill_all_reaches_every_process(bundle):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(["sh", "-c", "sleep 30 & sleep 30 & sleep 30"], cid)
    _detached(b, cfg, cid)
    time.sleep(0.3)
    pids = json.loads(b.rt("ps", "--format", "json", cid).stdout)
    assert len(pids) == 3
    assert b.rt("kill", "--all", cid, "KILL").returncode == 0
    _wait_stopped(b, cid)
    time.sleep(0.2)
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                assert f.read().split()[2] == "Z"
        except FileNotFoundError:
            pass
    assert b.rt("delete", cid).returncode == 0
    assert not _leftovers(cid)
