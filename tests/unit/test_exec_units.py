"""exec's process building, user and cgroup resolution, and LSM label writes,
without root."""

import json
import os

import pytest

from hutch import lsm
from hutch.container import exec as tenant
from hutch.container.plan import ProcessPlan
from hutch.errors import HutchError
from hutch.process import finalize


def _base():
    info = {"process": {"env": ["PATH=/bin", "A=1"], "cwd": "/srv", "uid": 5, "gid": 6,
                        "additional_gids": [7], "umask": None,
                        "capabilities": {"bounding": ["CAP_KILL"],
                                         "effective": ["CAP_KILL"]},
                        "no_new_privileges": True, "rlimits": [[7, 10, 20, "RLIMIT_NOFILE"]],
                        "oom_score_adj": 3, "seccomp": None, "apparmor": None,
                        "selinux": None}}
    return ProcessPlan.from_record(info["process"])


def test_parse_user_forms():
    assert tenant.parse_user("1000") == (1000, None, None, None)
    assert tenant.parse_user("1000:5") == (1000, 5, None, None)
    assert tenant.parse_user("app:tty") == (None, None, "app", "tty")
    assert tenant.parse_user("app:5") == (None, 5, "app", None)
    for bad in ("", ":5", "1000:", "99999999999"):
        with pytest.raises(HutchError):
            tenant.parse_user(bad)


def test_overrides_over_the_init_process():
    p = tenant.apply_overrides(_base(), args=["sh"], env=["A=2", "B=3"], cwd="/tmp",
                               user="1:2", additional_gids=["9"], caps=["sys_admin"],
                               no_new_privs=True, tty=True)
    assert p.env == ["PATH=/bin", "A=2", "B=3"]
    assert (p.cwd, p.uid, p.gid, p.additional_gids) == ("/tmp", 1, 2, [7, 9])
    for k in tenant.CAP_SETS:
        assert "CAP_SYS_ADMIN" in p.capabilities[k]
    assert p.capabilities["bounding"] == ["CAP_KILL", "CAP_SYS_ADMIN"]
    assert p.terminal and p.rlimits == [(7, 10, 20, "RLIMIT_NOFILE")]
    for kw, msg in (({"caps": ["CAP_NOPE"]}, "unknown capability"),
                    ({"cwd": "rel"}, "absolute"), ({"env": ["=x"]}, "KEY=value"),
                    ({"additional_gids": ["x"]}, "not a number")):
        with pytest.raises(HutchError, match=msg):
            tenant.apply_overrides(_base(), args=["sh"], **kw)
    with pytest.raises(HutchError, match="no command"):
        tenant.apply_overrides(_base())


def test_process_json_replaces_given_fields_and_keeps_the_init_confinement(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps({"args": ["ls"], "env": ["X=1"], "cwd": "/",
                                "user": {"uid": 3, "gid": 4}}))
    p = tenant.from_process_json(str(path), _base())
    assert (p.args, p.env, p.uid, p.gid) == (["ls"], ["X=1"], 3, 4)
    # left out: the init's capabilities, no_new_privs and rlimits stay
    assert p.capabilities["bounding"] == ["CAP_KILL"]
    assert p.no_new_privileges and p.rlimits == [(7, 10, 20, "RLIMIT_NOFILE")]
    path.write_text(json.dumps({"args": ["ls"], "noNewPrivileges": False,
                                "capabilities": {"bounding": []}}))
    p = tenant.from_process_json(str(path), _base())
    assert not p.no_new_privileges and p.capabilities["bounding"] == []
    path.write_text(json.dumps({"args": "ls"}))
    with pytest.raises(HutchError, match=r"process.json: args: expected"):
        tenant.from_process_json(str(path), _base())
    path.write_text("{")
    with pytest.raises(HutchError, match="not valid JSON"):
        tenant.from_process_json(str(path), _base())


def test_names_resolve_in_the_containers_etc(tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0::/root:/bin/sh\napp:x:1000:1001::/:/bin/sh\n")
    (tmp_path / "group").write_text("root:x:0:\nwheel:x:10:app\n")
    p = {"uid": 0, "gid": 0, "user_name": "app", "group_name": None}
    finalize.resolve_user(p, str(tmp_path))
    assert (p["uid"], p["gid"]) == (1000, 1001)
    p = {"uid": 0, "gid": 0, "user_name": "app", "group_name": "wheel"}
    finalize.resolve_user(p, str(tmp_path))
    assert (p["uid"], p["gid"]) == (1000, 10)
    with pytest.raises(HutchError, match="unable to find user bob: no matching entries"):
        finalize.resolve_user({"user_name": "bob", "group_name": None}, str(tmp_path))
    with pytest.raises(HutchError, match="unable to find group staff"):
        finalize.resolve_user({"user_name": None, "group_name": "staff"}, str(tmp_path))
    os.mkfifo(tmp_path / "fifo-etc-passwd")
    d = tmp_path / "fifoetc"
    d.mkdir()
    os.rename(tmp_path / "fifo-etc-passwd", d / "passwd")
    with pytest.raises(HutchError, match="unable to find user app"):   # never blocks
        finalize.resolve_user({"user_name": "app", "group_name": None}, str(d))


def test_sub_cgroups(tmp_path):
    paths = {}
    for key in ("cpu,cpuacct", "memory", "unified"):
        d = tmp_path / key / "ctr"
        (d / "sub").mkdir(parents=True)
        paths[key] = str(d)
    out = tenant.sub_cgroup_paths(paths, ["sub"])
    assert all(v.endswith("/ctr/sub") for v in out.values())
    out = tenant.sub_cgroup_paths(paths, ["memory:sub"])
    assert out["memory"].endswith("/sub") and out["cpu,cpuacct"] == paths["cpu,cpuacct"]
    out = tenant.sub_cgroup_paths(paths, ["cpu:sub"])
    assert out["cpu,cpuacct"].endswith("/sub") and out["memory"] == paths["memory"]
    assert tenant.sub_cgroup_paths(paths, ["/"]) == paths     # the container's own
    assert tenant.sub_cgroup_paths(paths, ["memory:nope"])["memory"].endswith("/nope")
    for bad, msg in (("../x", r"\.\./x is not a sub cgroup path"),
                     ("rdma:sub", "unknown controller 'rdma'")):
        with pytest.raises(HutchError, match=msg):
            tenant.sub_cgroup_paths(paths, [bad])


def test_lsm_labels_are_written_to_the_exec_attr(tmp_path):
    attr = tmp_path / "thread-self" / "attr"
    (attr / "apparmor").mkdir(parents=True)
    (attr / "apparmor" / "exec").write_text("")
    (attr / "exec").write_text("")
    fd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        lsm.apply_exec_labels(fd, "my-profile", None)
        assert (attr / "apparmor" / "exec").read_text() == "exec my-profile"
        lsm.apply_exec_labels(fd, None, "system_u:system_r:container_t:s0")
        assert (attr / "exec").read_text() == "system_u:system_r:container_t:s0"
        # kernels without the per-LSM directory: the shared file
        (attr / "apparmor" / "exec").unlink()
        (attr / "apparmor").rmdir()
        (attr / "exec").write_text("")
        lsm.apply_exec_labels(fd, "older", None)
        assert (attr / "exec").read_text() == "exec older"
    finally:
        os.close(fd)


def test_lsm_refuses_labels_for_an_inactive_lsm(tmp_path, monkeypatch):
    enabled = tmp_path / "enabled"
    assert not lsm.apparmor_active(str(enabled))
    enabled.write_text("Y\n")
    assert lsm.apparmor_active(str(enabled))
    assert not lsm.selinux_active(str(tmp_path))
    monkeypatch.setattr(lsm, "apparmor_active", lambda: False)
    monkeypatch.setattr(lsm, "selinux_active", lambda: False)
    with pytest.raises(HutchError, match="AppArmor is not enabled on this host"):
        lsm.check("p", None, "exec")
    with pytest.raises(HutchError, match="SELinux is not enabled on this host"):
        lsm.check(None, "label", "config.json: process")
    lsm.check(None, None, "x")
