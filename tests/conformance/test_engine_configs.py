"""The configs the engines really send (../shared/notes/engines.md), built from
`runc spec`'s output the way Podman and containerd shape it, through the calls
they make: create with a pid file, start, exec --detach with a process file,
ps, pause/resume, kill, delete --force (twice, as containerd's shim does)."""

import json
import os
import subprocess
import time
import uuid

import pytest

from conftest import base_config
from test_seccomp import PODMAN_PROFILE, podman_default


@pytest.fixture(autouse=True)
def engine_parents():
    """The engines' parent cgroups (/libpod_parent, /default): runc leaves them
    behind; those this test made go afterwards."""
    import glob
    names = ("libpod_parent", "default")
    before = {d for n in names for d in glob.glob(f"/sys/fs/cgroup/*/{n}")}
    yield
    for d in {d for n in names for d in glob.glob(f"/sys/fs/cgroup/*/{n}")} - before:
        for sub, _dirs, _files in sorted(os.walk(d, topdown=False)):
            try:
                os.rmdir(sub)
            except OSError:
                pass


@pytest.fixture
def netns():
    name = f"hutch-eng-{uuid.uuid4().hex[:8]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    yield f"/run/netns/{name}"
    subprocess.run(["ip", "netns", "del", name])


def podman_config(cid, netns_path):
    """Podman 4.3's shape: its seccomp profile, a cgroup mount, the network
    namespace by path, /libpod_parent/libpod-ID, rlimits as containers.conf
    gives them on a host without CAP_SYS_RESOURCE."""
    cfg = base_config(["sleep", "100"])
    caps = cfg["process"]["capabilities"]["bounding"]
    cfg["linux"]["seccomp"] = podman_default(caps)
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                  if n["type"] != "network"] + \
        [{"type": "network", "path": netns_path}]
    cfg["linux"]["cgroupsPath"] = f"/libpod_parent/libpod-{cid}"
    cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] != "cgroup"] + [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"]}]
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000},
                                 {"type": "RLIMIT_NPROC", "hard": 32768, "soft": 32768}]
    cfg["process"]["noNewPrivileges"] = False
    cfg["annotations"] = {"io.podman.annotations.autoremove": "FALSE"}
    return cfg


def containerd_config(cid):
    """containerd 1.6's shape (ctr run): no seccomp, a new network namespace,
    /default/ID, RLIMIT_NOFILE 1024."""
    cfg = base_config(["sleep", "100"])
    cfg["linux"]["cgroupsPath"] = f"/default/{cid}"
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    return cfg


def _drive(b, cfg, cid, log_json=False, check=None):
    b.write(cfg)
    pidfile = os.path.join(b.dir, "init.pid")
    log = os.path.join(b.dir, "log.json")
    glob = ("--log", log, "--log-format", "json") if log_json else ()
    p = b.rt("create", "--bundle", b.dir, "--pid-file", pidfile, cid, glob=glob)
    assert p.returncode == 0, (p.stderr, open(log).read() if os.path.exists(log) else "")
    try:
        assert b.rt("start", cid, glob=glob).returncode == 0
        with open(pidfile) as f:
            pid = int(f.read())
        assert json.loads(b.rt("state", cid).stdout)["pid"] == pid
        if check is not None:
            check(pid)
        proc = os.path.join(b.dir, "exec-process.json")
        with open(proc, "w") as f:
            json.dump(dict(cfg["process"], args=["sh", "-c", "echo $$ > /tmp/exec.pid; "
                                                          "sleep 30"]), f)
        epid = os.path.join(b.dir, "exec.pid")
        p = b.rt("exec", "--process", proc, "--detach", "--pid-file", epid, cid,
                 glob=glob)
        assert p.returncode == 0, p.stderr
        with open(epid) as f:
            exec_pid = int(f.read())
        pids = json.loads(b.rt("ps", "--format", "json", cid).stdout)
        assert pid in pids and exec_pid in pids, (pid, exec_pid, pids)
        assert b.rt("pause", cid).returncode == 0
        assert json.loads(b.rt("state", cid).stdout)["status"] == "paused"
        assert b.rt("resume", cid).returncode == 0
        assert b.rt("kill", cid, "9").returncode == 0
        for _ in range(100):
            if json.loads(b.rt("state", cid).stdout)["status"] == "stopped":
                break
            time.sleep(0.05)
        return pid
    finally:
        assert b.rt("delete", "--force", cid).returncode == 0
        assert b.rt("delete", "--force", cid).returncode == 0    # the shim's second


@pytest.mark.skipif(not os.path.exists(PODMAN_PROFILE), reason="containers-common")
def test_podman_shaped_config(bundle, netns):
    cid = uuid.uuid4().hex
    bundle.ids.append(cid)

    def check(pid):
        with open(f"/proc/{pid}/status") as f:
            assert "Seccomp:\t2" in f.read()
        assert os.stat(f"/proc/{pid}/ns/net").st_ino == os.stat(netns).st_ino
        with open(f"/proc/{pid}/limits") as f:
            assert any(line.startswith("Max open files") and "20000" in line
                       for line in f)
    _drive(bundle, podman_config(cid, netns), cid, log_json=True, check=check)
    assert not os.path.exists(f"/sys/fs/cgroup/memory/libpod_parent/libpod-{cid}")


def test_containerd_shaped_config(bundle):
    cid = f"ctd-{uuid.uuid4().hex[:12]}"
    bundle.ids.append(cid)

    def check(pid):
        assert os.readlink(f"/proc/{pid}/ns/net") != os.readlink("/proc/self/ns/net")
        with open(f"/proc/{pid}/cgroup") as f:
            assert f":/default/{cid}\n" in f.read()
    _drive(bundle, containerd_config(cid), cid, log_json=True, check=check)
    assert not os.path.exists(f"/sys/fs/cgroup/memory/default/{cid}")
