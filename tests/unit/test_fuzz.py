"""Property tests: no input to the parsers and validators makes hutch fail with
anything but its own one-line error (never a traceback)."""

import json

from hypothesis import given, settings, strategies as st

from hutch import jsonlite, seccomp
from hutch.container import exec as tenant
from hutch.container.plan import ProcessPlan
from hutch.cgroups import resources
from hutch.errors import HutchError

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(1 << 70), max_value=1 << 70) |
    st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12),
                                                                inner, max_size=4),
    max_leaves=20)


def _mutate(data, base, keys):
    """``base`` with a value somewhere replaced by arbitrary JSON."""
    path = data.draw(st.lists(st.sampled_from(keys), max_size=3))
    node = base
    for k in path[:-1]:
        if isinstance(node, dict) and isinstance(node.get(k), (dict, list)):
            node = node[k] if isinstance(node[k], dict) else (node[k][0] if node[k]
                                                               and isinstance(node[k][0], dict) else node)
    if path and isinstance(node, dict):
        node[path[-1]] = data.draw(json_values)
        return base
    return data.draw(json_values)


def _one_line(e):
    assert "\n" not in str(e), str(e)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_process_json_never_crashes(tmp_path_factory, data):
    base = {"args": ["sh"], "env": ["A=1"], "cwd": "/", "user": {"uid": 1, "gid": 2,
            "additionalGids": [3]}, "capabilities": {"bounding": ["CAP_KILL"]},
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 1, "hard": 2}],
            "consoleSize": {"height": 1, "width": 2}, "noNewPrivileges": True}
    doc = _mutate(data, base, ["args", "env", "cwd", "user", "uid", "additionalGids",
                               "capabilities", "bounding", "rlimits", "soft", "type",
                               "consoleSize", "height", "noNewPrivileges",
                               "oomScoreAdj", "terminal", "apparmorProfile"])
    path = tmp_path_factory.mktemp("p") / "process.json"
    path.write_text(json.dumps(doc))
    init = {"process": {"env": [], "cwd": "/", "uid": 0, "gid": 0, "additional_gids": [],
                        "umask": None, "capabilities": None, "no_new_privileges": False,
                        "rlimits": [], "oom_score_adj": None, "seccomp": None,
                        "apparmor": None, "selinux": None}}
    try:
        proc = tenant.from_process_json(str(path), ProcessPlan.from_record(init["process"]))
        tenant.apply_overrides(proc)
    except HutchError as e:
        _one_line(e)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_seccomp_profiles_never_crash(data):
    base = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 1,
            "architectures": ["SCMP_ARCH_X86_64"], "flags": ["SECCOMP_FILTER_FLAG_LOG"],
            "syscalls": [{"names": ["mkdir"], "action": "SCMP_ACT_ALLOW", "args": [
                {"index": 0, "value": 1, "valueTwo": 0, "op": "SCMP_CMP_EQ"}]}]}
    doc = _mutate(data, base, ["defaultAction", "defaultErrnoRet", "architectures",
                               "flags", "syscalls", "names", "action", "args", "index",
                               "value", "op", "errnoRet", "listenerPath"])
    try:
        seccomp.compile(doc)
    except HutchError as e:
        _one_line(e)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_resources_never_crash(data):
    base = {"memory": {"limit": 1 << 20, "swap": 1 << 21, "swappiness": 10},
            "cpu": {"shares": 512, "quota": 1000, "period": 100000, "cpus": "0"},
            "pids": {"limit": 10}, "blockIO": {"weight": 100, "throttleReadBpsDevice": [
                {"major": 8, "minor": 0, "rate": 10}]},
            "hugepageLimits": [{"pageSize": "2MB", "limit": 0}],
            "network": {"classID": 1}, "unified": {"memory.high": "max"}}
    doc = _mutate(data, base, list(base) + ["limit", "swap", "shares", "quota",
                                            "weight", "rate", "major", "pageSize"])
    v1 = {"memory", "cpu", "cpuacct", "cpuset", "pids", "blkio", "net_cls", "hugetlb"}
    for ctrls in ((v1, set()), (set(), v1 - {"cpuacct", "net_cls", "blkio"} | {"io"})):
        try:
            resources.plan(doc, *ctrls)
        except HutchError as e:
            _one_line(e)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64) | st.text(max_size=64).map(str.encode))
def test_json_loader_never_crashes(blob):
    try:
        jsonlite.loads(blob)
    except (ValueError, UnicodeDecodeError, RecursionError):
        pass
