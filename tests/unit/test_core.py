"""The container core without root: plans built from the configs that matter
(`runc spec`'s default, Podman's and containerd's shapes, see
../shared/notes/engines.md) to exact values; the record's format and status
transitions; the attachments' order and undo."""

import copy
import json
import os

import pytest

from conftest import base_config
from hutch.container import attach
from hutch.container import plan as P
from hutch.container.record import FORMAT, Record, check
from hutch.errors import HutchError, NotRunning
from hutch.spec.config import parse_config

CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
NEWNS, NEWCGROUP, NEWUTS, NEWIPC, NEWPID, NEWNET = (0x20000, 0x02000000, 0x04000000,
                                                   0x08000000, 0x20000000, 0x40000000)


def _parse(cfg, tmp_path):
    cfg = copy.deepcopy(cfg)
    cfg["root"]["path"] = str(tmp_path)
    return parse_config(cfg, bundle=str(tmp_path))


def _podman(tmp_path):
    """Podman 4.3's shape (as tests/conformance/test_engine_configs.py sends it,
    with a small filter instead of its whole profile)."""
    cfg = base_config(["sleep", "100"])
    cfg["linux"]["namespaces"] = [n for n in cfg["linux"]["namespaces"]
                                  if n["type"] != "network"] + \
        [{"type": "network", "path": "/run/netns/podman-x"}]
    cfg["linux"]["cgroupsPath"] = "/libpod_parent/libpod-x"
    cfg["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ERRNO", "syscalls": [
        {"names": ["read", "write", "exit_group"], "action": "SCMP_ACT_ALLOW"}]}
    cfg["mounts"] = [m for m in cfg["mounts"] if m["type"] != "cgroup"] + [
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["rprivate", "nosuid", "noexec", "nodev", "relatime", "ro"]},
        {"destination": "/etc/hosts", "type": "bind", "source": "hosts",
         "options": ["bind", "rprivate"]}]
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 20000, "soft": 20000},
                                 {"type": "RLIMIT_NPROC", "hard": 32768, "soft": 32768}]
    cfg["process"]["noNewPrivileges"] = False
    cfg["annotations"] = {"io.podman.annotations.autoremove": "FALSE"}
    return _parse(cfg, tmp_path)


def _containerd(tmp_path):
    cfg = base_config(["sleep", "100"])
    cfg["linux"]["cgroupsPath"] = "/default/x"
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    return _parse(cfg, tmp_path)


def _init(cfg, proc, **kw):
    args = dict(cgroup_paths={}, rootless=False, join=[], console_fd=-1, fifo_fd=-1,
                keep_fds=3, no_pivot=False, no_new_keyring=False, state_dir="/s")
    args.update(kw)
    return P.init_plan(cfg, "x", "/b", proc, **args)


# --- plans ----------------------------------------------------------------------
def test_runc_spec_default_to_exact_plans(tmp_path):
    cfg = _parse(base_config(["true"]), tmp_path)
    proc = P.ProcessPlan.from_config(cfg.process)
    assert proc.wire() == {
        "args": ["true"],
        "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "TERM=xterm"],
        "cwd": "/", "uid": 0, "gid": 0, "additional_gids": [], "umask": None,
        "capabilities": {"bounding": CAPS, "effective": CAPS, "inheritable": [],
                         "permitted": CAPS, "ambient": CAPS},
        "no_new_privileges": True, "rlimits": [(7, 1024, 1024, "RLIMIT_NOFILE")],
        "oom_score_adj": None, "terminal": False, "console_size": None,
        "seccomp": None, "apparmor": None, "selinux": None, "user_name": None,
        "group_name": None}
    init = _init(cfg, proc, cgroup_paths={"memory": "/sys/fs/cgroup/memory/x"})
    assert init["new_flags"] == NEWNS | NEWUTS | NEWIPC | NEWPID | NEWNET
    assert (init["join"], init["join_paths"]) == ([], {})
    assert (init["new_mountns"], init["userns"], init["new_cgroupns"]) == (True, False,
                                                                          False)
    assert init["hostname"] == "runc" and init["loopback"] is True
    assert [m["destination"] for m in init["mounts"]] == [
        "/proc", "/dev", "/dev/pts", "/dev/shm", "/dev/mqueue", "/sys",
        "/sys/fs/cgroup"]
    assert init["masked_paths"][:2] == ["/proc/acpi", "/proc/asound"]
    assert init["readonly_paths"] == ["/proc/bus", "/proc/fs", "/proc/irq",
                                      "/proc/sys", "/proc/sysrq-trigger"]
    assert init["cgroup_paths"] == {"memory": "/sys/fs/cgroup/memory/x"}
    assert init["process"] == proc.wire() and init["keep_fds"] == 3
    assert P.criu_record(cfg, "/b") == {
        "binds": [], "masked": cfg.masked_paths, "devices": [], "join": {},
        "userns": False, "cgroup_mounts": ["/sys/fs/cgroup"], "cgroupns": False,
        "rootless": False}
    assert P.lifecycle_hooks(cfg) == {}


def test_podman_shape_to_exact_plans(tmp_path):
    cfg = _podman(tmp_path)
    prog = P.seccomp_program(cfg)
    assert prog["notify"] is False and prog["bpf"]
    proc = P.ProcessPlan.from_config(cfg.process, prog)
    init = _init(cfg, proc)
    # the network namespace is joined by path: not among the new ones
    assert init["join_paths"] == {"network": "/run/netns/podman-x"}
    assert init["new_flags"] == NEWNS | NEWUTS | NEWIPC | NEWPID
    assert init["loopback"] is False
    assert init["process"]["rlimits"] == [(7, 20000, 20000, "RLIMIT_NOFILE"),
                                          (6, 32768, 32768, "RLIMIT_NPROC")]
    assert init["process"]["no_new_privileges"] is False
    assert init["process"]["seccomp"] is prog
    assert init["annotations"] == {"io.podman.annotations.autoremove": "FALSE"}
    # a relative bind source is the bundle's
    rec = P.criu_record(cfg, str(tmp_path))
    assert rec["binds"] == [("/etc/hosts", os.path.join(str(tmp_path), "hosts"))]
    assert rec["join"] == {"network": "/run/netns/podman-x"}
    assert cfg.cgroups_path == "/libpod_parent/libpod-x"
    # what exec gets: the init's confinement, the filter as text
    ex = P.ExecRecord.of(cfg, proc).to_json()
    assert ex["namespaces"] == ["ipc", "mount", "network", "pid", "uts"]
    assert ex["process"]["seccomp"]["bpf"] == prog["bpf"].hex()
    assert set(ex["process"]) == set(P.ProcessPlan.CONFINEMENT) | {"seccomp"}


def test_containerd_shape_to_exact_plans(tmp_path):
    cfg = _containerd(tmp_path)
    assert cfg.cgroups_path == "/default/x"
    proc = P.ProcessPlan.from_config(cfg.process, P.seccomp_program(cfg))
    assert proc.seccomp is None
    init = _init(cfg, proc)
    assert init["new_flags"] == NEWNS | NEWUTS | NEWIPC | NEWPID | NEWNET
    assert init["process"]["rlimits"] == [(7, 1024, 1024, "RLIMIT_NOFILE")]


def test_exec_starts_from_the_recorded_confinement(tmp_path):
    cfg = _podman(tmp_path)
    proc = P.ProcessPlan.from_config(cfg.process, P.seccomp_program(cfg))
    rec = Record({"exec": json.loads(json.dumps(P.ExecRecord.of(cfg, proc).to_json()))})
    info = P.ExecRecord.from_record(rec)
    back = P.ProcessPlan.from_record(info.process).wire()
    want = proc.wire()
    for k in ("args", "terminal", "console_size"):      # per exec, not recorded
        back.pop(k), want.pop(k)
    assert back == want


def test_a_format0_record_without_exec_rebuilds_it_from_the_bundle(tmp_path):
    cfg = base_config(["sleep", "1"])
    cfg["root"]["path"] = str(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    info = P.ExecRecord.from_record(Record({"bundle": str(tmp_path)}))
    assert info.namespaces == ["ipc", "mount", "network", "pid", "uts"]
    assert info.process["capabilities"]["bounding"] == CAPS
    assert info.strict_guard is True


def test_options_refuse_unknown_names():
    from hutch.container.create import CreateOptions
    o = CreateOptions(pid_file="/p", preserve_fds=2)
    assert (o.pid_file, o.preserve_fds, o.no_pivot) == ("/p", 2, False)
    assert CreateOptions().pid_file is None          # defaults are not shared state
    with pytest.raises(TypeError, match="no option 'pidfile'"):
        CreateOptions(pidfile="/p")


# --- the record -------------------------------------------------------------------
def test_record_formats():
    rec = Record.new("x", "1.2.0", "/b", "/b/rootfs", None, "t", "root")
    assert rec["hutchFormat"] == FORMAT and rec.creating and rec.pid == 0
    assert rec.annotations == {} and rec.cgroup is None and rec.attachments == []
    with open(os.path.join(os.path.dirname(__file__), "..", "fixtures",
                           "state-format0.json")) as f:
        old = Record.parse(json.load(f), "upgfix")
    assert old.format == 0 and old.pid > 0 and old.starttime > 0
    assert old.cgroup_paths["memory"] == "/sys/fs/cgroup/memory/hutch-upgrade-fixture"
    assert old.hooks["poststop"][0]["path"] == "/bin/true"
    assert P.CriuRecord(old.criu).cgroup_mounts == ["/sys/fs/cgroup"]
    with pytest.raises(HutchError, match=r"written by a newer hutch \(record format "
                       rf"{FORMAT + 1}; this hutch reads up to {FORMAT}\)"):
        Record.parse({"hutchFormat": FORMAT + 1}, "x")
    with pytest.raises(HutchError, match="not a JSON object"):
        Record.parse([], "x")


ALLOWED = {
    "start": {"created"},
    "kill": {"creating", "created", "running", "paused"},
    "delete": {"creating", "created", "stopped"},
    "pause": {"created", "running"},
    "resume": {"paused"},
    "exec": {"created", "running"},
    "checkpoint": {"running", "paused"},
    "migrate": {"running"},
}


@pytest.mark.parametrize("verb", sorted(ALLOWED))
def test_transitions(verb):
    for status in ("creating", "created", "running", "paused", "stopped"):
        if status in ALLOWED[verb]:
            check(verb, status, "c1")
            continue
        with pytest.raises(HutchError) as e:
            check(verb, status, "c1")
        msg = str(e.value)
        if status == "stopped" and verb in ("kill", "checkpoint"):
            assert isinstance(e.value, NotRunning) and "container not running" in msg
        elif verb == "start":
            assert msg == ("cannot start a container that has stopped"
                           if status == "stopped" else
                           f"cannot start an already {status} container")
        elif verb == "delete":
            assert msg == f"cannot delete container c1 that is not stopped: {status}"
        elif verb == "exec" and status == "creating":
            assert "still being created" in msg
        else:
            assert status in msg
    check("delete", "running", "c1", force=True)
    check("exec", "paused", ignore_paused=True)
    with pytest.raises(ValueError):
        check("teleport", "running")


# --- attachments ------------------------------------------------------------------
class _Log:
    def __init__(self):
        self.calls = []


def _kinds(log, fail_at=None):
    """Three attachments that record what they do; the one named ``fail_at``
    fails in its attach."""
    out = []
    for name in ("net", "dns", "keeper"):
        class A:
            kind = f"test-{name}"

            def __init__(self, name=name):
                self.name = name

            def attach(self, ctx):
                log.calls.append(("attach", self.name, ctx.pid))
                if self.name == fail_at:
                    raise HutchError(f"{self.name} failed")
                return {"made": self.name}

            @staticmethod
            def detach(ctx, data, name=name):
                log.calls.append(("detach", name, data))
        attach.register(A)
        out.append(A())
    return out


def _ctx():
    return attach.Context("c1", 42, "/root", "/b", None, Record({}))


def test_attachments_run_in_order_and_are_recorded_before_they_start():
    log = _Log()
    ctx = _ctx()
    saved = []
    attach.attach_all(_kinds(log), ctx, lambda: saved.append(
        json.loads(json.dumps(ctx.record.attachments))))
    assert log.calls == [("attach", "net", 42), ("attach", "dns", 42),
                         ("attach", "keeper", 42)]
    # each entry is saved with no data before its attach runs, then with it
    assert saved[0] == [{"kind": "test-net", "data": None}]
    assert saved[1] == [{"kind": "test-net", "data": {"made": "net"}}]
    assert saved[-1][-1] == {"kind": "test-keeper", "data": {"made": "keeper"}}
    log.calls.clear()
    assert attach.detach_all(ctx) == []
    assert log.calls == [("detach", "keeper", {"made": "keeper"}),
                         ("detach", "dns", {"made": "dns"}),
                         ("detach", "net", {"made": "net"})]
    assert ctx.record.attachments == []


@pytest.mark.parametrize("fail_at", ["net", "dns", "keeper"])
def test_a_failing_attachment_undoes_itself_and_those_before_it(fail_at):
    log = _Log()
    ctx = _ctx()
    with pytest.raises(HutchError, match=f"{fail_at} failed"):
        attach.attach_all(_kinds(log, fail_at), ctx, lambda: None)
    names = ["net", "dns", "keeper"]
    done = names[:names.index(fail_at)]
    assert [c for c in log.calls if c[0] == "attach"] == \
        [("attach", n, 42) for n in done + [fail_at]]
    # newest first; the one that failed gets None (it did not finish)
    assert [c for c in log.calls if c[0] == "detach"] == \
        [("detach", fail_at, None)] + [("detach", n, {"made": n})
                                        for n in reversed(done)]
    assert ctx.record.attachments == []


def test_an_undo_that_fails_is_kept_for_the_next_delete():
    calls = []

    class Stuck:
        kind = "test-stuck"

        def attach(self, ctx):
            return 1

        @staticmethod
        def detach(ctx, data):
            calls.append(data)
            if len(calls) == 1:
                raise OSError(16, "Device or resource busy")
    attach.register(Stuck)
    ctx = _ctx()
    attach.attach_all([Stuck()], ctx, lambda: None)
    errors = attach.detach_all(ctx)
    assert errors == ["undo attachment test-stuck: [Errno 16] Device or resource busy"]
    assert ctx.record.attachments == [{"kind": "test-stuck", "data": 1}]
    assert attach.detach_all(ctx) == [] and ctx.record.attachments == []


def test_attachment_kinds_resolve_only_to_hutch_classes():
    assert attach.resolve("hutch.container.record:Record") is Record
    for kind in ("os:system", "hutch.container.record", "nope",
                 "hutch.container.nope:X", "hutch.container.record:Nope"):
        with pytest.raises(HutchError, match="is not known to this hutch"):
            attach.resolve(kind)
