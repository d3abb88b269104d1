"""hutch's own cgroup choices on this host (not runc conformance): refusals for
controllers the host lacks, with nothing left behind, and clean-up after a
create that was SIGKILLed half-way."""

import glob
import os
import signal
import subprocess
import time

import pytest

from conftest import RUNTIME, RUNTIME_NAME, base_config

pytestmark = pytest.mark.skipif(RUNTIME_NAME != "hutch", reason="hutch's own behaviour")


@pytest.mark.parametrize("res, msg", [
    ({"network": {"classID": 1048577}}, "the net_cls controller is not available"),
    ({"memory": {"kernel": 1 << 26}}, "kernel memory limits were removed"),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 22}]}, "hugetlb controller"),
])
def test_missing_controller_is_a_clear_error_and_leaves_nothing(bundle, res, msg):
    cid = bundle.new_id()
    cfg = base_config(["true"])
    cfg["linux"]["cgroupsPath"] = f"/hutch-t-{cid}"
    cfg["linux"]["resources"] = res
    bundle.write(cfg)
    p = bundle.rt("create", "--bundle", bundle.dir, cid)
    assert p.returncode == 1
    assert msg in p.stderr and "(errno 95)" in p.stderr, p.stderr
    assert len(p.stderr.strip().splitlines()) == 1
    assert not glob.glob(f"/sys/fs/cgroup/*/hutch-t-{cid}")
    assert not os.path.exists(os.path.join(bundle.root, cid))


def test_delete_cleans_up_after_a_killed_create(bundle):
    """SIGKILL `hutch create` while a createRuntime hook runs: the cgroups and the
    init exist, the state says creating; `delete` must still remove everything."""
    cid = bundle.new_id()
    cfg = base_config(["true"])
    cfg["linux"]["cgroupsPath"] = f"/hutch-t-{cid}"
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/sleep", "args": ["sleep", "30"]}]}
    bundle.write(cfg)
    p = subprocess.Popen(RUNTIME + ["--root", bundle.root, "create", "--bundle", bundle.dir,
                                    cid], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
    end = time.monotonic() + 10
    while time.monotonic() < end and not glob.glob(f"/sys/fs/cgroup/pids/hutch-t-{cid}"):
        time.sleep(0.05)
    time.sleep(0.5)     # into the hook
    os.killpg(p.pid, signal.SIGKILL)
    p.wait()
    assert glob.glob(f"/sys/fs/cgroup/*/hutch-t-{cid}")
    st = bundle.rt("state", cid)
    assert st.returncode == 0 and '"stopped"' in st.stdout, st.stdout + st.stderr
    d = bundle.rt("delete", cid)
    assert d.returncode == 0, d.stderr
    assert not glob.glob(f"/sys/fs/cgroup/*/hutch-t-{cid}")
    assert not os.path.exists(os.path.join(bundle.root, cid))
