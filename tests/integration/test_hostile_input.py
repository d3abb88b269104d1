"""Hostile and malformed input through the command line: each case is one clear
error line and a non-zero exit, and leaves nothing on the host (state, cgroups,
mounts)."""

import glob
import json
import os

import pytest

from conftest import IS_ROOT, RUNTIME_NAME, base_config

pytestmark = [pytest.mark.skipif(not IS_ROOT, reason="needs root"),
              pytest.mark.skipif(RUNTIME_NAME != "hutch", reason="hutch's messages")]


def _set(path, value):
    def m(c):
        node = c
        for k in path[:-1]:
            node = node[k]
        node[path[-1]] = value
    return m


def _append(path, value):
    def m(c):
        node = c
        for k in path:
            node = node[k]
        node.append(value)
    return m


CASES = [
    ("args a string", _set(("process", "args"), "sh"), "process.args"),
    ("root a list", _set(("root",), []), "root"),
    ("namespaces an object", _set(("linux", "namespaces"), {}), "linux.namespaces"),
    ("huge uid", _set(("process", "user"), {"uid": 1 << 70, "gid": 0}), "uid"),
    ("huge rlimit", _set(("process", "rlimits"), [
        {"type": "RLIMIT_NOFILE", "soft": 1 << 80, "hard": 1 << 80}]), "rlimits"),
    ("absurd rlimit", _set(("process", "rlimits"), [
        {"type": "RLIMIT_NOFILE", "soft": 1 << 40, "hard": 1 << 40}]), "RLIMIT_NOFILE"),
    ("soft above hard", _set(("process", "rlimits"), [
        {"type": "RLIMIT_NOFILE", "soft": 10, "hard": 5}]), "soft"),
    ("huge memory", _set(("linux", "resources"), {"memory": {"limit": 1 << 100}}),
     "memory.limit"),
    ("unknown namespace", _append(("linux", "namespaces"), {"type": "dreams"}),
     "dreams"),
    ("unknown propagation", _set(("linux", "rootfsPropagation"), "sideways"),
     "rootfsPropagation"),
    ("unknown rlimit", _set(("process", "rlimits"), [
        {"type": "RLIMIT_WISHES", "soft": 1, "hard": 1}]), "RLIMIT_WISHES"),
    ("unknown seccomp action", _set(("linux", "seccomp"), {"defaultAction": "MAYBE"}),
     "MAYBE"),
    ("relative mount", _append(("mounts",), {"destination": "etc/x", "type": "tmpfs",
                                             "source": "tmpfs"}), "destination"),
    ("dotdot mount", _append(("mounts",), {"destination": "/../../etc", "type": "tmpfs",
                                           "source": "tmpfs"}), "destination"),
    ("missing root", lambda c: c.pop("root"), "root"),
    ("root not there", _set(("root",), {"path": "/no/such/rootfs"}), "root.path"),
    ("apparmor absent", _set(("process", "apparmorProfile"), "strict"), "AppArmor"),
    ("selinux absent", _set(("process", "selinuxLabel"), "system_u:r:t:s0"), "SELinux"),
    ("mount label absent", _set(("linux", "mountLabel"), "system_u:r:t:s0"), "SELinux"),
    ("unknown capability", _append(("process", "capabilities", "bounding"),
                                   "CAP_NOTHING"), "CAP_NOTHING"),
]


def _nothing_left(b, cid):
    assert not os.path.exists(os.path.join(b.root, cid))
    assert not glob.glob(f"/sys/fs/cgroup/*/hutch/{cid}")
    with open("/proc/self/mountinfo") as f:
        assert b.dir not in f.read()


@pytest.mark.parametrize("name, mutate, words", CASES, ids=[c[0] for c in CASES])
def test_hostile_config(bundle, name, mutate, words):
    b = bundle
    cfg = base_config(["true"])
    mutate(cfg)
    b.write(cfg)
    cid = b.new_id()
    p = b.rt("run", "--bundle", b.dir, cid)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in p.stderr, p.stderr
    assert words in lines[0], lines[0]
    _nothing_left(b, cid)


@pytest.mark.parametrize("content, words", [
    (b"{", "config.json"), (b"[]", "expected an object"), (b"\xff\xfe", "config.json"),
    (b"[" * 100000 + b"]" * 100000, "config.json"), (b"", "config.json"),
])
def test_broken_config_json(bundle, content, words):
    b = bundle
    with open(os.path.join(b.dir, "config.json"), "wb") as f:
        f.write(content)
    cid = b.new_id()
    p = b.rt("run", "--bundle", b.dir, cid)
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and words in lines[0], p.stderr
    _nothing_left(b, cid)


@pytest.mark.parametrize("cid", ["../x", "a/b", ".", "..", "x" * 2000, "a b", "a\nb"])
def test_hostile_ids(bundle, cid):
    b = bundle
    b.write(base_config(["true"]))
    p = b.rt("run", "--bundle", b.dir, "--", cid)
    assert p.returncode != 0
    assert len(p.stderr.strip().splitlines()) == 1, p.stderr
    assert not os.path.exists(os.path.join(os.path.dirname(b.root), "x"))
    assert os.listdir(b.root) == [] if os.path.isdir(b.root) else True


def test_hostile_exec_process_json(bundle):
    b = bundle
    b.write(base_config(["sleep", "100"]))
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    try:
        for proc, words in (({"args": "sh"}, "process.json: args"),
                            ({"args": ["true"], "user": {"uid": -1}}, "user.uid"),
                            ({"args": ["true"], "cwd": "rel"}, "cwd"),
                            ({"args": ["true"], "capabilities": {"bounding": ["X"]}},
                             "unknown capability"),
                            ([], "expected an object")):
            path = os.path.join(b.dir, "p.json")
            with open(path, "w") as f:
                json.dump(proc, f)
            p = b.rt("exec", "--process", path, cid)
            assert p.returncode == 255
            lines = p.stderr.strip().splitlines()
            assert len(lines) == 1 and words in lines[0], p.stderr
        assert json.loads(b.rt("state", cid).stdout)["status"] == "running"
    finally:
        b.rt("delete", "--force", cid)
