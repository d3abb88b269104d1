"""Rootless: a real unprivileged user, created for the test and removed after it,
runs containers with a user namespace (its own uid, or its subordinate ids through
newuidmap/newgidmap), with state under $XDG_RUNTIME_DIR and no cgroups."""

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid

import pytest

from conftest import IS_ROOT, REPO

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="creates a user: needs root")
HUTCH = os.path.join(REPO, ".venv", "bin", "hutch-fast")


@pytest.fixture
def user(busybox_rootfs):
    name = "hutch-t-" + uuid.uuid4().hex[:6]
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    work = tempfile.mkdtemp(prefix="hutch-rootless-")
    try:
        pw = pwd.getpwnam(name)
        os.chmod(work, 0o755)
        xdg = os.path.join(work, "xdg")
        bundle = os.path.join(work, "bundle")
        os.mkdir(xdg, 0o700)
        os.mkdir(bundle)
        shutil.copytree(busybox_rootfs, os.path.join(bundle, "rootfs"), symlinks=True)
        for d in (xdg, bundle):
            subprocess.run(["chown", "-R", f"{pw.pw_uid}:{pw.pw_gid}", d], check=True)
        sub = [line.split(":") for line in open("/etc/subuid")
               if line.startswith(name + ":")]
        yield {"name": name, "uid": pw.pw_uid, "gid": pw.pw_gid, "xdg": xdg,
               "bundle": bundle, "subuid": (int(sub[0][1]), int(sub[0][2])) if sub
               else None}
    finally:
        subprocess.run(["pkill", "-9", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], check=True)
        shutil.rmtree(work)
    for f in ("/etc/passwd", "/etc/subuid", "/etc/subgid"):
        assert name not in open(f).read()


def as_user(u, *args, check=False):
    env = {"PATH": "/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin",
           "XDG_RUNTIME_DIR": u["xdg"], "HOME": u["bundle"]}
    # files, not pipes: a detached container keeps its stdio open
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run([HUTCH] + [str(a) for a in args], cwd=u["bundle"], env=env,
                           user=u["uid"], group=u["gid"], extra_groups=[],
                           stdout=out, stderr=err, timeout=60, stdin=subprocess.DEVNULL)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read().decode(), err.read().decode()
    if check:
        assert p.returncode == 0, (args, p.stderr)
    return p


def _config(u, args, **linux):
    path = os.path.join(u["bundle"], "config.json")
    with open(path) as f:
        cfg = json.load(f)
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = args
    cfg["linux"].update(linux)
    with open(path, "w") as f:
        json.dump(cfg, f)


def test_spec_rootless_and_run(user):
    u = user
    as_user(u, "spec", "--rootless", check=True)
    with open(os.path.join(u["bundle"], "config.json")) as f:
        cfg = json.load(f)
    assert {"type": "user"} in cfg["linux"]["namespaces"]
    assert cfg["linux"]["uidMappings"] == [{"containerID": 0, "hostID": u["uid"],
                                            "size": 1}]
    assert "resources" not in cfg["linux"]
    _config(u, ["sh", "-c", "id -u; cat /proc/self/uid_map; hostname; echo $$"])
    p = as_user(u, "run", "r1")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.split("\n")
    assert lines[0] == "0" and lines[1].split() == ["0", str(u["uid"]), "1"]
    assert lines[3] == "1"
    assert "rootless: running without cgroups" in p.stderr     # the note says which
    assert os.listdir(os.path.join(u["xdg"], "hutch")) == []   # state lived here


def test_subordinate_ids_through_newuidmap(user):
    u = user
    if u["subuid"] is None:
        pytest.fail("useradd gave the user no subordinate ids (/etc/login.defs "
                    "SUB_UID_COUNT is 0?)")
    start, count = u["subuid"]
    as_user(u, "spec", "--rootless", check=True)
    maps = [{"containerID": 0, "hostID": u["uid"], "size": 1},
            {"containerID": 1, "hostID": start, "size": count}]
    _config(u, ["sh", "-c", "cat /proc/self/uid_map /proc/self/gid_map | wc -l; "
                "id -u nobody 2>/dev/null; true"], uidMappings=maps, gidMappings=maps)
    p = as_user(u, "run", "r2")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[0] == "4"
    # a range the user was not granted: newuidmap refuses, and the error says why
    bad = [{"containerID": 0, "hostID": u["uid"], "size": 1},
           {"containerID": 1, "hostID": 1, "size": 1000}]
    _config(u, ["true"], uidMappings=bad, gidMappings=maps)
    p = as_user(u, "run", "r3")
    assert p.returncode != 0
    assert "newuidmap" in p.stderr and "/etc/subuid" in p.stderr, p.stderr
    errors = [x for x in p.stderr.splitlines() if not x.startswith("warning:")]
    assert len(errors) == 1, p.stderr
    assert os.listdir(os.path.join(u["xdg"], "hutch")) == []


def test_limits_without_cgroups_are_refused(user):
    u = user
    as_user(u, "spec", "--rootless", check=True)
    _config(u, ["true"], resources={"memory": {"limit": 64 << 20}})
    p = as_user(u, "run", "r4")
    assert p.returncode != 0
    assert "rootless: linux.resources needs cgroups" in p.stderr, p.stderr
    assert os.listdir(os.path.join(u["xdg"], "hutch")) == []


def test_exec_ps_and_sandbox_rootless(user):
    u = user
    as_user(u, "spec", "--rootless", check=True)
    _config(u, ["sleep", "1000"])
    assert as_user(u, "run", "-d", "r5").returncode == 0
    try:
        p = as_user(u, "exec", "r5", "sh", "-c", "id -u; cat /proc/1/cmdline")
        assert p.returncode == 0, p.stderr
        assert p.stdout.startswith("0\nsleep")
        pids = json.loads(as_user(u, "ps", "--format", "json", "r5", check=True).stdout)
        assert len(pids) == 1
        p = as_user(u, "pause", "r5")
        assert p.returncode != 0 and "no cgroups" in p.stderr
    finally:
        as_user(u, "delete", "--force", "r5")
    p = as_user(u, "sandbox", "--", "sh", "-c", "id -u; cat /proc/self/uid_map")
    assert p.returncode == 0, p.stderr
    assert p.stdout.split()[:4] == ["0", "0", str(u["uid"]), "1"]
    # the sandbox's seccomp filter and the skeleton of its view of the host are
    # made once and kept (caches); nothing else stays
    left = os.listdir(os.path.join(u["xdg"], "hutch"))
    assert [n for n in left if n != ".seccomp-cache" and
            not n.startswith(".sandbox-root-")] == []
