"""The sandbox's settings, the config built from them and the default profile,
without a container."""

import errno
import os

import pytest

from hutch import seccomp
from hutch.errors import HutchError
from hutch.sandbox import config as C
from hutch.sandbox import profile as P


@pytest.fixture
def rootfs():
    """A rootfs the sandbox's unprivileged root could reach (pytest's own
    directories are private)."""
    import shutil
    import tempfile
    top = tempfile.mkdtemp(prefix="hutch-unit-")
    os.chmod(top, 0o755)
    d = os.path.join(top, "rootfs")
    for sub in ("bin", "tmp", "proc", "dev", "sys", "run"):
        os.makedirs(os.path.join(d, sub))
    yield d
    shutil.rmtree(top)


@pytest.mark.parametrize("text,n", [("256m", 256 << 20), ("1g", 1 << 30),
                                    ("512k", 512 << 10), ("1048576", 1 << 20),
                                    (4096, 4096), ("1.5g", 3 << 29), ("64MiB", 64 << 20),
                                    ("64mb", 64 << 20)])
def test_sizes(text, n):
    assert C.parse_size(text, "memory") == n


@pytest.mark.parametrize("bad", ["lots", "", "-1", "0", "12q"])
def test_bad_sizes(bad):
    with pytest.raises(HutchError) as e:
        C.parse_size(bad, "memory")
    assert e.value.errno == errno.EINVAL and "memory" in str(e.value)


def test_limits_become_resources(rootfs):
    s = C.Settings(rootfs=rootfs, memory="256m", cpus=0.5, cpuset_cpus="0", pids=32)
    assert s.resources() == {"memory": {"limit": 256 << 20, "swap": 256 << 20},
                             "cpu": {"period": 100000, "quota": 50000, "cpus": "0"},
                             "pids": {"limit": 32}}
    s = C.Settings(rootfs=rootfs, memory="1g", memory_swap="-1")
    assert s.resources()["memory"]["swap"] == -1
    assert C.Settings(rootfs=rootfs).resources() == {}


@pytest.mark.parametrize("kw,word", [
    ({"memory_swap": "1g"}, "needs memory"),
    ({"memory": "1g", "memory_swap": "512m"}, "at least"),
    ({"cpus": 0}, "cpus"), ({"cpus": "x"}, "cpus"), ({"pids": 0}, "pids"),
    ({"network": "host,x"}, "stands alone"), ({"publish": ["8080:80"]}, "need a network"),
    ({"network": "host", "publish": ["8080:80"]}, "the host's"),
    ({"network": "x", "rootless": True}, "slirp4netns or pasta"),
    ({"network": "pasta", "ip": "10.0.0.2"}, "hutch networks"),
    ({"network": "cni:x", "bandwidth": "1mbit"}, "conflist"),
    ({"network": "x", "publish": ["80"]}, "HOSTPORT:CTRPORT"),
    ({"user": "bob"}, "UID[:GID]"), ({"user": "70000"}, "maps ids"),
    ({"workdir": "rel"}, "absolute"), ({"env": ["NOEQ"]}, "KEY=VALUE"),
    ({"volumes": [("/nonexistent-hutch", "/x")]}, "no such file"),
    ({"volumes": [("/tmp", "rel")]}, "absolute"),
    ({"cap_add": ["CAP_FLY"]}, "unknown capability"),
])
def test_refused_settings_say_why(rootfs, kw, word):
    with pytest.raises(HutchError) as e:
        C.Settings(rootfs=rootfs, **kw)
    assert word in str(e.value)
    assert "\n" not in str(e.value)


def test_config_confines_by_default(rootfs):
    s = C.Settings(rootfs=rootfs, env={"K": "V"}, memory="64m")
    cfg = s.config([C.INIT_PATH, "-P"], "/unused")
    lin = cfg["linux"]
    types = [n["type"] for n in lin["namespaces"]]
    assert {"pid", "ipc", "uts", "mount", "network", "cgroup", "user"} <= set(types)
    if os.geteuid() == 0:
        assert lin["uidMappings"] == [{"containerID": 0, "hostID": C.ID_BASE,
                                       "size": C.ID_SIZE}]
    assert lin["seccomp"]["defaultAction"] == "SCMP_ACT_ALLOW"
    assert lin["rootfsPropagation"] == "rprivate"
    proc = cfg["process"]
    assert proc["noNewPrivileges"] is True
    assert "CAP_SYS_ADMIN" not in proc["capabilities"]["bounding"]
    assert "CAP_NET_RAW" not in proc["capabilities"]["bounding"]
    assert "K=V" in proc["env"]
    assert cfg["root"] == {"path": rootfs, "readonly": True}
    init = [m for m in cfg["mounts"] if m["destination"] == C.INIT_PATH]
    assert init and init[0]["source"] == s.init and "ro" in init[0]["options"]
    assert lin["resources"]["memory"]["limit"] == 64 << 20


def test_root_host_and_host_network(rootfs):
    if os.geteuid() != 0:
        pytest.skip("root-host needs root")
    s = C.Settings(rootfs=rootfs, user="root-host", network="host",
                   seccomp="unconfined", cap_drop=["ALL"])
    cfg = s.config(["x"], "/unused")
    types = [n["type"] for n in cfg["linux"]["namespaces"]]
    assert "user" not in types and "network" not in types
    assert "seccomp" not in cfg["linux"]
    assert cfg["process"]["capabilities"]["bounding"] == []


def test_host_view_skeleton(tmp_path):
    path, mounts = C.host_view(str(tmp_path))
    names = set(os.listdir(path))
    assert set(C.OWN_DIRS) <= names
    for m in mounts:
        assert m["type"] == "bind" and "ro" in m["options"] and "rbind" in m["options"]
        assert m["destination"] == m["source"]
        assert m["destination"].lstrip("/") not in C.OWN_DIRS
    for name in os.listdir("/"):
        if os.path.islink("/" + name):
            assert os.readlink(os.path.join(path, name)) == os.readlink("/" + name)
    # the same host, the same skeleton
    again, _ = C.host_view(str(tmp_path))
    assert again == path


def test_volume_mountpoints_made_host_side(rootfs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (tmp_path / "file").write_text("x")
    s = C.Settings(rootfs=rootfs, volumes=[(str(src), "/work/deep"),
                                           (str(tmp_path / "file"), "/etc/f", "ro")])
    s.config(["x"], "/unused")
    assert os.path.isdir(os.path.join(rootfs, "work", "deep"))
    assert os.path.isfile(os.path.join(rootfs, "etc", "f"))


def test_unreachable_rootfs_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("the unprivileged mapping is root's")
    d = tmp_path / "private"
    (d / "rootfs").mkdir(parents=True)
    os.chmod(tmp_path, 0o755)
    os.chmod(d, 0o700)
    s = C.Settings(rootfs=str(d / "rootfs"))
    with pytest.raises(HutchError) as e:
        s.config(["x"], "/unused")
    assert "cannot reach it" in str(e.value) and str(d) in str(e.value)


def test_capabilities_add_and_drop():
    assert P.capabilities() == list(P.DEFAULT_CAPS)
    caps = P.capabilities(add=["net_raw"], drop=["CAP_CHOWN", "kill"])
    assert "CAP_NET_RAW" in caps and "CAP_CHOWN" not in caps and "CAP_KILL" not in caps
    assert P.capabilities(drop=["ALL"]) == []
    assert P.capabilities(drop=["ALL"], add=["SETUID"]) == ["CAP_SETUID"]
    assert "CAP_SYS_ADMIN" in P.capabilities(add=["ALL"])


def test_default_profile_compiles_and_denies():
    prof = P.default_seccomp()
    names = {n for rule in prof["syscalls"] for n in rule["names"]}
    for sc in ("keyctl", "bpf", "mount", "unshare", "clone", "clone3", "ptrace",
               "perf_event_open", "kexec_load", "open_by_handle_at"):
        assert sc in names
    unshare = [r for r in prof["syscalls"] if r["names"] == ["unshare"]][0]
    assert unshare["args"][0]["value"] == P.CLONE_NEWUSER
    prog = seccomp.compile(prof, "sandbox")
    assert prog is not None
    # a fresh copy each time: a caller's edit does not leak into the next
    prof["syscalls"].clear()
    assert P.default_seccomp()["syscalls"]
