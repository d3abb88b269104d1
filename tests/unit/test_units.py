"""Unit tests: no root, no kernel changes."""

import json
import os

import pytest
from hypothesis import given, settings, strategies as st

from hutch import jsonlite
from hutch.cli import args
from hutch.cli.kill import parse_signal
from hutch.errors import ConfigError, HutchError
from hutch.linux import kernel as K
from hutch.linux.fake import FakeKernel
from hutch.rootfs import mounts as M
from hutch.rootfs.setup import Rootfs
from hutch.spec.config import parse_config
from hutch.spec.defaults import spec
from hutch.container.record import validate_id


def test_jsonlite_roundtrip():
    obj = {"a": [1, 2.5, True, None, "é\n"], "b": {"c": -3}}
    assert jsonlite.loads(jsonlite.dumps(obj)) == obj
    assert json.loads(jsonlite.dumps_pretty(obj)) == obj
    with pytest.raises(ValueError):
        jsonlite.loads('{"a": }')
    with pytest.raises(ValueError):
        jsonlite.loads('{} extra')


def test_args_both_spellings():
    spec_ = {"--bundle": ("bundle", "str"), "-b": ("bundle", "str"),
             "--detach": ("detach", "bool"), "--preserve-fds": ("n", "int")}
    for argv in (["--bundle=/x", "id"], ["--bundle", "/x", "id"], ["-b", "/x", "id"],
                 ["-bundle", "/x", "id"]):
        o, pos = args.parse(argv, spec_, "t")
        assert o["bundle"] == "/x" and pos == ["id"]
    o, _ = args.parse(["--preserve-fds=2", "--detach", "id"], spec_, "t")
    assert o["n"] == 2 and o["detach"]
    with pytest.raises(HutchError):
        args.parse(["--nope", "id"], spec_, "t")


def test_signals():
    assert parse_signal("9") == 9
    assert parse_signal("KILL") == parse_signal("SIGKILL") == parse_signal("kill") == 9
    assert parse_signal("RTMIN+2") == 36
    assert parse_signal("0") == 0       # runc: does the init exist?
    for bad in ("65", "SIGNOPE", "-1"):
        with pytest.raises(HutchError):
            parse_signal(bad)


def test_ids():
    validate_id("abc-1.2_x+y")
    for bad in ("", ".", "..", "../x", "a/b", "a b", "x" * 2000):
        with pytest.raises(HutchError):
            validate_id(bad)


def test_spec_parses():
    cfg = parse_config(spec(), bundle="/b")
    assert cfg.root_path == "/b/rootfs" and cfg.new_ns("mount")
    cfg = parse_config(spec(rootless=True, uid=1000, gid=1000), bundle="/b")
    assert cfg.uid_mappings == [(0, 1000, 1)]


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c["process"].update(args="sh"), "process.args"),
    (lambda c: c["process"].update(args=[1]), "process.args[0]"),
    (lambda c: c["process"].update(cwd="rel"), "process.cwd"),
    (lambda c: c["process"]["user"].update(uid=1 << 40), "process.user.uid"),
    (lambda c: c["process"]["rlimits"].append({"type": "RLIMIT_BOGUS", "hard": 1,
                                               "soft": 1}), "type"),
    (lambda c: c["process"]["capabilities"]["bounding"].append("CAP_NOPE"), "bounding"),
    (lambda c: c["mounts"].append({"destination": "../x"}), "destination"),
    (lambda c: c["mounts"].append({"destination": "/a/../../x"}), "destination"),
    (lambda c: c.pop("root"), "root"),
    (lambda c: c["linux"]["namespaces"].append({"type": "bogus"}), "type"),
    (lambda c: c["linux"].update(rootfsPropagation="sideways"), "rootfsPropagation"),
    (lambda c: c["linux"].update(sysctl={"a": 1}), "sysctl.a"),
])
def test_config_rejects(mutate, field):
    c = spec()
    mutate(c)
    with pytest.raises(ConfigError) as e:
        parse_config(c)
    assert field in str(e.value)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70) |
    st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12),
                                                                inner, max_size=4),
    max_leaves=20)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_config_never_crashes(data):
    """Any JSON, or the default spec with any field replaced, gives a Config or a
    ConfigError, never another exception."""
    c = spec()
    path_keys = data.draw(st.lists(st.sampled_from(
        ["process", "root", "linux", "mounts", "hooks", "user", "args", "env",
         "namespaces", "capabilities", "rlimits", "uidMappings", "devices", "sysctl",
         "timeOffsets", "maskedPaths", "path", "cwd"]), max_size=3))
    node = c
    for k in path_keys[:-1]:
        if isinstance(node, dict) and isinstance(node.get(k), dict):
            node = node[k]
    if path_keys and isinstance(node, dict):
        node[path_keys[-1]] = data.draw(json_values)
    else:
        c = data.draw(json_values)
    try:
        parse_config(c)
    except ConfigError:
        pass


def test_mount_options():
    o = M.parse_options(["rbind", "ro", "nosuid", "rslave", "mode=755", "newinstance"])
    assert o.bind and o.recursive and o.readonly
    assert o.attr_set == K.MOUNT_ATTR_RDONLY | K.MOUNT_ATTR_NOSUID
    assert o.propagation == K.MS_SLAVE and o.rec_propagation
    assert o.data == [("mode", "755"), ("newinstance", None)]
    o = M.parse_options(["rro", "noatime"])
    assert o.rec_attr_set == K.MOUNT_ATTR_RDONLY and o.atime == K.MOUNT_ATTR_NOATIME


def _rootfs(tmp_path, mounts, **extra):
    plan = {"root": str(tmp_path), "rootfs_propagation": "", "userns": False,
            "mounts": mounts, "devices": [], "masked_paths": [], "readonly_paths": [],
            "bundle": str(tmp_path), "cgroup_paths": {}, "new_cgroupns": False,
            "root_readonly": False}
    plan.update(extra)
    k = FakeKernel()
    rf = Rootfs(k, plan)
    rf.rootfd = os.open(str(tmp_path), os.O_PATH | os.O_DIRECTORY)
    rf.devnull = os.open("/dev/null", os.O_PATH)
    return k, rf


def test_fs_mount_is_built_detached_then_attached(tmp_path):
    k, rf = _rootfs(tmp_path, [{"destination": "/dev/shm", "type": "tmpfs",
                                "source": "shm",
                                "options": ["nosuid", "nodev", "mode=1777", "ro"]}])
    rf.do_mounts()
    assert (tmp_path / "dev" / "shm").is_dir()
    assert ("fsopen", "tmpfs") in k.calls
    assert ("fsconfig", 1, "mode", "1777") in k.calls
    fsm = [c for c in k.calls if c[0] == "fsmount"][0]
    assert fsm[1] == K.MOUNT_ATTR_RDONLY | K.MOUNT_ATTR_NOSUID | K.MOUNT_ATTR_NODEV
    assert k.names()[-1] == "move_mount"
    # lookups never leave the rootfs
    assert all(c[2] & K.RESOLVE_IN_ROOT for c in k.calls if c[0] == "openat2")


def test_bind_ro_flags_set_before_attach(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    root = tmp_path / "root"
    root.mkdir()
    k, rf = _rootfs(root, [{"destination": "/data", "type": "bind", "source": str(src),
                            "options": ["rbind", "ro"]}])
    rf.do_mounts()
    names = k.names()
    assert names.index("mount_setattr") < names.index("move_mount")
    ot = [c for c in k.calls if c[0] == "open_tree"][0]
    assert ot[2] & K.AT_RECURSIVE and ot[2] & K.OPEN_TREE_CLONE


def test_mask_paths_use_tmpfs_for_dirs_and_null_for_files(tmp_path):
    (tmp_path / "proc").mkdir()
    (tmp_path / "proc" / "kcore").write_text("")
    (tmp_path / "sys").mkdir()
    (tmp_path / "sys" / "firmware").mkdir()
    k, rf = _rootfs(tmp_path, [], masked_paths=["/proc/kcore", "/sys/firmware",
                                                "/proc/absent"])
    rf.mask_paths()
    assert [c for c in k.calls if c[0] == "fsopen"] == [("fsopen", "tmpfs")]
    ot = [c for c in k.calls if c[0] == "open_tree"]
    assert len(ot) == 1 and ot[0][2] & K.AT_EMPTY_PATH   # bound from the /dev/null fd
