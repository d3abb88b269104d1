"""A container made by an older hutch is managed by this one: its record
(tests/fixtures/state-format0.json, written by hutch before the container core
became a package, record format 0) is put in place of a live container's, and
state, exec, kill and delete work on it, with what it recorded."""

import json
import os

import pytest

from conftest import RUNTIME_NAME, base_config

pytestmark = pytest.mark.skipif(RUNTIME_NAME != "hutch", reason="hutch's own records")

FIXTURE = os.path.join(os.path.dirname(__file__), "..", "fixtures",
                       "state-format0.json")


@pytest.mark.parametrize("with_exec", [True, False], ids=["format0", "before-exec-info"])
def test_an_old_record_is_stated_execed_killed_and_deleted(bundle, tmp_path, with_exec):
    cid = bundle.new_id()
    marker = tmp_path / "poststop-ran"
    cfg = base_config(["sleep", "100"])
    cfg["linux"]["cgroupsPath"] = f"/hutch-upgrade-{cid}"
    bundle.write(cfg)
    bundle.rt("create", "--bundle", bundle.dir, cid, check=True)
    bundle.rt("start", cid, check=True)
    path = os.path.join(bundle.root, cid, "state.json")
    with open(path) as f:
        live = json.load(f)
    with open(FIXTURE) as f:
        text = f.read().replace("hutch-upgrade-fixture", f"hutch-upgrade-{cid}")
    old = json.loads(text)
    assert "hutchFormat" not in old and "attachments" not in old
    for k in ("id", "pid", "starttime", "bundle", "rootfs", "created"):
        old[k] = live[k]
    old["hooks"]["poststop"] = [{"path": "/bin/sh", "args": [
        "sh", "-c", f"echo stopped > {marker}"], "env": None, "timeout": None}]
    if not with_exec:
        del old["exec"]     # a record from before exec's confinement was kept
    with open(path, "w") as f:
        json.dump(old, f)
    cgroups = list(old["cgroup"]["paths"].values())
    assert all(os.path.isdir(p) for p in cgroups)

    st = json.loads(bundle.rt("state", cid, check=True).stdout)
    assert (st["status"], st["pid"]) == ("running", live["pid"])
    assert bundle.rt("exec", cid, "echo", "inside", check=True).stdout == "inside\n"
    # the old record's exec confinement is what exec uses: its filter refuses
    # mkdir (the bundle's config has no filter, and rebuilds none)
    p = bundle.rt("exec", cid, "mkdir", "/tmp/made")
    if with_exec:
        assert p.returncode != 0 and "Operation not permitted" in p.stderr
    else:
        assert p.returncode == 0, p.stderr
    bundle.rt("kill", cid, "KILL", check=True)
    for _ in range(100):
        if json.loads(bundle.rt("state", cid, check=True).stdout)["status"] == "stopped":
            break
    else:
        pytest.fail("the container did not stop")
    bundle.rt("delete", cid, check=True)
    assert not os.path.exists(os.path.join(bundle.root, cid))
    assert not [p for p in cgroups if os.path.exists(p)]
    assert marker.read_text() == "stopped\n"
