"""seccomp profile validation and compilation, without root (libseccomp only
compiles; nothing is loaded)."""

import struct

import pytest

from hutch import seccomp
from hutch.errors import ConfigError, HutchError


def _rule(**kw):
    r = {"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"}
    r.update(kw)
    return r


def test_actions_and_return_codes():
    default, arches, flags, listener, meta, rules, notify = seccomp.parse({
        "defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
        "flags": ["SECCOMP_FILTER_FLAG_LOG", "SECCOMP_FILTER_FLAG_SPEC_ALLOW"],
        "syscalls": [_rule(), _rule(errnoRet=5), _rule(action="SCMP_ACT_TRACE"),
                     _rule(action="SCMP_ACT_KILL_PROCESS"), _rule(action="SCMP_ACT_LOG"),
                     _rule(action="SCMP_ACT_TRAP"), _rule(action="SCMP_ACT_ALLOW")]})
    assert default == 0x00050000 | 38
    assert [r[0] for r in rules] == [0x00050001, 0x00050005, 0x7FF00001, 0x80000000,
                                     0x7FFC0000, 0x00030000, 0x7FFF0000]
    assert flags == 2 | 4 and not notify


@pytest.mark.parametrize("sec, where", [
    ({}, "defaultAction: is required"),
    ({"defaultAction": 3}, "defaultAction: expected a string"),
    ({"defaultAction": "SCMP_ACT_NOPE"}, "unknown action 'SCMP_ACT_NOPE'"),
    ({"defaultAction": "SCMP_ACT_NOTIFY", "listenerPath": "/x"}, "cannot be the default"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "flags": ["X"]}, "flags[0]: unknown flag"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": {}}, "syscalls: expected a list"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [{"action": "SCMP_ACT_ALLOW"}]},
     "syscalls[0].names: must name"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [_rule(errnoRet=-1)]},
     "syscalls[0].errnoRet: expected an integer"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [_rule(args=[{"op": "SCMP_CMP_EQ"}])]},
     "args[0].index: is required"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        _rule(args=[{"index": 6, "op": "SCMP_CMP_EQ"}])]}, "args[0].index: expected"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [
        _rule(args=[{"index": 0, "op": "SCMP_CMP_EQ", "value": 1 << 64}])]},
     "args[0].value: expected"),
    ({"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [_rule(action="SCMP_ACT_NOTIFY")]},
     "listenerPath: is required"),
])
def test_hostile_profiles_are_one_clear_error(sec, where):
    with pytest.raises(ConfigError) as e:
        seccomp.parse(sec)
    assert where in str(e.value) and str(e.value).startswith("config.json: linux.seccomp")
    assert "\n" not in str(e.value)


def test_compile_makes_a_bpf_program_with_notify_flags():
    prog = seccomp.compile({
        "defaultAction": "SCMP_ACT_ALLOW", "architectures": ["SCMP_ARCH_X86_64",
                                                            "SCMP_ARCH_X86"],
        "flags": ["SECCOMP_FILTER_FLAG_TSYNC"], "listenerPath": "/run/agent.sock",
        "listenerMetadata": "m",
        "syscalls": [_rule(action="SCMP_ACT_NOTIFY"),
                     _rule(names=["no_such_call", "kill"], args=[
                         {"index": 1, "value": 9, "op": "SCMP_CMP_EQ"},
                         {"index": 1, "value": 15, "op": "SCMP_CMP_EQ"}]),
                     {"names": ["getpid"], "action": "SCMP_ACT_ALLOW"}]})
    bpf = prog["bpf"]
    assert bpf and len(bpf) % 8 == 0
    # the program ends in return instructions: BPF_RET | BPF_K is 0x06
    assert struct.unpack_from("H", bpf, len(bpf) - 8)[0] == 0x06
    assert prog["flags"] == 1 | seccomp.FLAG_NEW_LISTENER | seccomp.FLAG_TSYNC_ESRCH
    assert prog["notify"] and prog["listener_path"] == "/run/agent.sock"
    back = seccomp.from_state(seccomp.to_state(prog))
    assert back == prog


def test_unknown_architecture():
    with pytest.raises(HutchError, match=r"architectures\[0\]: unknown architecture"):
        seccomp.compile({"defaultAction": "SCMP_ACT_ALLOW",
                         "architectures": ["SCMP_ARCH_PDP11"]})


def test_compiled_programs_are_cached_by_profile(tmp_path, monkeypatch):
    prof = {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": [_rule()]}
    first = seccomp.compile(prof, cache_dir=str(tmp_path))
    assert len(list(tmp_path.iterdir())) == 1

    def no_build(*a):
        raise AssertionError("compiled again")
    monkeypatch.setattr(seccomp, "_build", no_build)
    assert seccomp.compile(prof, cache_dir=str(tmp_path)) == first
    other = dict(prof, defaultErrnoRet=5, defaultAction="SCMP_ACT_ERRNO")
    with pytest.raises(AssertionError, match="compiled again"):
        seccomp.compile(other, cache_dir=str(tmp_path))
