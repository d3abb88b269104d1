"""cgroup resources without root: the v1/v2 translation, and the manager against a
fake cgroup2 tree laid out as the kernel lays it out (same behaviours as v1)."""

import pytest

from hutch.cgroups import resources as R
from hutch.cgroups.manager import Manager
from hutch.errors import HutchError

V1 = {"cpu", "cpuacct", "cpuset", "memory", "devices", "freezer", "blkio", "pids"}
V2 = {"cpu", "cpuset", "memory", "io", "pids", "hugetlb", "rdma"}

FULL = {
    "memory": {"limit": 512 << 20, "reservation": 256 << 20, "swap": 1 << 30},
    "cpu": {"shares": 1024, "quota": 50000, "period": 100000, "burst": 10000,
            "cpus": "0-1", "mems": "0", "idle": 1},
    "pids": {"limit": 100},
    "blockIO": {"weight": 500, "weightDevice": [{"major": 8, "minor": 0, "weight": 100}],
                "throttleReadBpsDevice": [{"major": 8, "minor": 0, "rate": 1048576}],
                "throttleWriteIOPSDevice": [{"major": 8, "minor": 0, "rate": 100}]},
    "hugepageLimits": [{"pageSize": "2MB", "limit": 4 << 20}],
    "rdma": {"mlx5_0": {"hcaHandles": 3, "hcaObjects": 1000}},
    "unified": {"memory.high": "400000000"},
}


def files(writes):
    return {(w.file, w.value) for w in writes}


def test_conversions_match_the_documented_formulas():
    assert R.shares_to_weight(2) == 1
    assert R.shares_to_weight(1024) == 39
    assert R.shares_to_weight(262144) == 10000
    assert R.blkio_weight_to_io(10) == 1
    assert R.blkio_weight_to_io(500) == 4950
    assert R.blkio_weight_to_io(1000) == 10000
    assert R.swap_v2(1 << 30, 512 << 20) == 512 << 20
    assert R.swap_v2(-1, 512 << 20) == "max"
    with pytest.raises(HutchError, match="below the memory limit"):
        R.swap_v2(100, 200)


def test_v2_plan_of_a_full_resources_block():
    got = files(R.plan(FULL, set(), V2))
    assert got == {
        ("memory.max", str(512 << 20)), ("memory.low", str(256 << 20)),
        ("memory.swap.max", str(512 << 20)),
        ("cpu.weight", "39"), ("cpu.max", "50000 100000"), ("cpu.max.burst", "10000"),
        ("cpu.idle", "1"), ("cpuset.cpus", "0-1"), ("cpuset.mems", "0"),
        ("pids.max", "100"),
        ("io.weight", "default 4950"), ("io.weight", "8:0 910"),
        ("io.max", "8:0 rbps=1048576"), ("io.max", "8:0 wiops=100"),
        ("hugetlb.2MB.max", str(4 << 20)),
        ("rdma.max", "mlx5_0 hca_handle=3 hca_object=1000"),
        ("memory.high", "400000000"),
    }


def test_v1_plan_of_the_same_block():
    r = {k: v for k, v in FULL.items() if k not in ("hugepageLimits", "rdma", "unified")}
    got = files(R.plan(r, V1, None))
    assert ("memory.limit_in_bytes", str(512 << 20)) in got
    assert ("memory.memsw.limit_in_bytes", str(1 << 30)) in got
    assert ("memory.soft_limit_in_bytes", str(256 << 20)) in got
    assert ("cpu.shares", "1024") in got and ("cpu.cfs_quota_us", "50000") in got
    assert ("cpu.cfs_period_us", "100000") in got and ("cpu.cfs_burst_us", "10000") in got
    assert ("blkio.weight", "500") in got
    assert ("blkio.weight_device", "8:0 100") in got
    assert ("blkio.throttle.read_bps_device", "8:0 1048576") in got
    assert ("blkio.throttle.write_iops_device", "8:0 100") in got
    assert ("pids.max", "100") in got


def test_unlimited_values():
    got = files(R.plan({"memory": {"limit": -1}, "pids": {"limit": -1},
                        "cpu": {"quota": -1, "period": 100000}}, set(), V2))
    assert got == {("memory.max", "max"), ("pids.max", "max"), ("cpu.max", "max 100000")}


@pytest.mark.parametrize("res, msg", [
    ({"network": {"classID": 5}}, "net_cls controller is not available"),
    ({"hugepageLimits": [{"pageSize": "2MB", "limit": 1 << 21}]}, "hugetlb controller"),
    ({"memory": {"kernel": 1 << 20}}, "kernel memory limits were removed"),
    ({"unified": {"memory.high": "1"}}, "^invalid configuration: .*hybrid"),
    ({"bogus": {}}, "unknown resource"),
])
def test_missing_controllers_and_bad_values_are_refused(res, msg):
    with pytest.raises(HutchError, match=msg):
        R.plan(res, V1, None)


@pytest.mark.parametrize("res, msg", [
    ({"unified": {"memory.high": "1"}}, "no cgroup v2 hierarchy"),
    ({"unified": {"../x": "1"}}, "not a cgroup file name"),
])
def test_unified_refusals_without_v1(res, msg):
    with pytest.raises(HutchError, match=msg):
        R.plan(res, set(), None)


def test_resources_are_read_as_runc_reads_them():
    """Keys in any case, a repeated section merged, unknown keys ignored."""
    got = R.normalise({"CPU": {"Cpus": "0", "Mems": "0"}, "cpu": {"shares": 2},
                       "Memory": {"LIMIT": 1 << 20, "whatever": 1}, "bogus": {},
                       "unified": {"Memory.High": "1"},
                       "BlockIO": {"WeightDevice": [{"Major": 8, "minor": 0,
                                                     "Weight": 10}]}})
    assert got == {"cpu": {"cpus": "0", "mems": "0", "shares": 2},
                   "memory": {"limit": 1 << 20}, "unified": {"Memory.High": "1"},
                   "blockIO": {"weightDevice": [{"major": 8, "minor": 0,
                                                 "weight": 10}]}}


def test_zero_or_default_values_need_no_controller():
    assert R.plan({"network": {"classID": 0, "priorities": []},
                   "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
                   "memory": {"limit": 0, "useHierarchy": True}}, set(), None) == []


def test_v2_only_settings_refused_on_v2():
    for res in ({"memory": {"disableOOMKiller": True}}, {"memory": {"swappiness": 10}},
                {"cpu": {"realtimeRuntime": 1000}}, {"blockIO": {"leafWeight": 20}}):
        with pytest.raises(HutchError, match="v2"):
            R.plan(res, set(), V2)


# --- a fake cgroup2 tree -----------------------------------------------------------
def make_tree(tmp_path, root_delegates):
    """A cgroup2 mount at tmp/cg whose root delegates ``root_delegates``; the
    container's cgroup /hutch/c1 with the interface files the kernel would make."""
    root = tmp_path / "cg"
    cont = root / "hutch" / "c1"
    cont.mkdir(parents=True)
    (root / "cgroup.subtree_control").write_text(" ".join(root_delegates) + "\n")
    (root / "hutch" / "cgroup.subtree_control").write_text("\n")
    (root / "hutch" / "cgroup.controllers").write_text(" ".join(root_delegates) + "\n")
    for name in ("cgroup.procs", "cgroup.freeze", "memory.max", "memory.low",
                 "memory.swap.max", "cpu.weight", "cpu.max", "pids.max", "io.weight",
                 "io.max", "cgroup.controllers"):
        (cont / name).write_text("")
    (cont / "cgroup.events").write_text("populated 0\nfrozen 0\n")
    return str(root), str(cont)


def test_manager_applies_v2_and_enables_controllers_below_the_root(tmp_path):
    root, cont = make_tree(tmp_path, ["cpu", "memory", "pids", "io"])
    m = Manager({"unified": cont}, (), "v2", {"unified": root})
    loaded = []
    m.v2_devices = lambda path, rules: loaded.append((path, rules))
    m.apply({"memory": {"limit": 1 << 30}, "cpu": {"shares": 2048, "quota": 20000,
                                                      "period": 100000},
             "pids": {"limit": 64}})
    assert open(f"{cont}/memory.max").read() == str(1 << 30)
    assert open(f"{cont}/cpu.weight").read() == "79"
    assert open(f"{cont}/cpu.max").read() == "20000 100000"
    assert open(f"{cont}/pids.max").read() == "64"
    # the intermediate /hutch cgroup delegates what was needed; the root is untouched
    assert open(f"{root}/hutch/cgroup.subtree_control").read() == "+cpu +memory +pids"
    assert open(f"{root}/cgroup.subtree_control").read() == "cpu memory pids io\n"
    # and the device list starts from deny-all through the eBPF filter
    assert loaded == [(cont, [])]


def test_manager_refuses_a_controller_the_root_does_not_delegate(tmp_path):
    root, cont = make_tree(tmp_path, ["cpu"])
    m = Manager({"unified": cont}, (), "v2", {"unified": root})
    with pytest.raises(HutchError, match="memory controller is not available"):
        m.apply({"memory": {"limit": 1 << 20}})


def test_v2_freeze_waits_for_cgroup_events(tmp_path):
    from hutch.cgroups import v2
    root, cont = make_tree(tmp_path, [])
    # the kernel flips "frozen" in cgroup.events; the fake does it up front
    with open(f"{cont}/cgroup.events", "w") as f:
        f.write("populated 1\nfrozen 1\n")
    v2.set_frozen(cont, True, 1.0)
    assert open(f"{cont}/cgroup.freeze").read() == "1"
    with pytest.raises(HutchError, match="did not become thawed"):
        v2.set_frozen(cont, False, 0.05)


def test_device_program_assembles_one_block_per_rule():
    from hutch.cgroups import devices_bpf as D
    rules = D.full_rules([{"allow": True, "type": "c", "major": 10, "minor": 200,
                           "access": "rwm"}])
    prog = D.assemble(rules)
    assert len(prog) % 8 == 0
    # ends with "r0 = 0; exit" (deny when nothing matched)
    assert prog[-16:] == D.ins(D.MOV64_K, D.R0, imm=0) + D.ins(D.EXIT)
    with pytest.raises(HutchError, match="may only use"):
        D.assemble([{"allow": True, "type": "c", "access": "rwx"}])
