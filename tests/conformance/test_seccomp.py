"""linux.seccomp: every action, argument operators, unknown names, Podman's default
profile, exec'd processes under the same filter, and the notify listener.  Runs
against runc too (HUTCH_TEST_RUNTIME=runc)."""

import json
import os
import platform
import socket
import struct
import threading

import pytest

from conftest import base_config

PODMAN_PROFILE = "/usr/share/containers/seccomp.json"
GO_ARCH = {"x86_64": "amd64", "aarch64": "arm64"}.get(platform.machine(),
                                                       platform.machine())
NATIVE = {"x86_64": "SCMP_ARCH_X86_64", "aarch64": "SCMP_ARCH_AARCH64"}.get(
    platform.machine())
O_CREAT = 0o100


def _cfg(script, seccomp, nnp=True):
    cfg = base_config(["sh", "-c", script])
    cfg["linux"]["seccomp"] = seccomp
    cfg["process"]["noNewPrivileges"] = nnp
    return cfg


def _allow_but(*rules):
    return {"defaultAction": "SCMP_ACT_ALLOW", "architectures": [NATIVE],
            "syscalls": list(rules)}


def podman_default(caps):
    """Podman's default profile as Podman turns it into config.json: the native
    architecture and its sub-architectures, and the rules whose includes and
    excludes match the container's capabilities and architecture."""
    with open(PODMAN_PROFILE) as f:
        prof = json.load(f)
    arches = []
    for m in prof.get("archMap") or []:
        if m["architecture"] == NATIVE:
            arches = [m["architecture"]] + m.get("subArchitectures", [])
    calls = []
    for s in prof["syscalls"]:
        inc, exc = s.get("includes") or {}, s.get("excludes") or {}
        if inc.get("arches") and GO_ARCH not in inc["arches"]:
            continue
        if inc.get("caps") and not set(inc["caps"]) <= set(caps):
            continue
        if exc.get("arches") and GO_ARCH in exc["arches"]:
            continue
        if exc.get("caps") and set(exc["caps"]) & set(caps):
            continue
        calls.append({k: s[k] for k in ("names", "action", "args", "errnoRet")
                      if s.get(k) not in (None, [])})
    out = {"defaultAction": prof["defaultAction"], "architectures": arches,
           "syscalls": calls}
    if prof.get("defaultErrnoRet") is not None:
        out["defaultErrnoRet"] = prof["defaultErrnoRet"]
    return out


def test_errno_with_masked_eq_and_unknown_names(bundle):
    """ERRNO with errnoRet on openat only when O_CREAT is set (SCMP_CMP_MASKED_EQ);
    a name no architecture knows is skipped, as runc skips it."""
    sec = _allow_but({"names": ["openat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 42,
                      "args": [{"index": 2, "value": O_CREAT, "valueTwo": O_CREAT,
                                "op": "SCMP_CMP_MASKED_EQ"}]},
                     {"names": ["no_such_syscall_anywhere"], "action": "SCMP_ACT_KILL"})
    p = bundle.run(_cfg("cat /etc/passwd | grep -q root && echo read-ok; "
                        "touch /new 2>&1; test -e /new || echo not-created", sec))
    assert p.returncode == 0, p.stderr
    assert "read-ok" in p.stdout and "not-created" in p.stdout
    assert "No message of desired type" in p.stdout      # ENOMSG is 42


def test_comparison_operators_and_or_of_same_argument(bundle):
    """kill(pid, sig) in a container whose shell is pid 1.  Two conditions on the
    same argument are ORed (one rule each, as runc does); conditions on different
    arguments are ANDed."""
    sec = _allow_but(
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,   # USR1 or USR2
         "args": [{"index": 1, "value": 10, "op": "SCMP_CMP_EQ"},
                  {"index": 1, "value": 12, "op": "SCMP_CMP_EQ"}]},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,   # to pid 1, >= 20
         "args": [{"index": 0, "value": 1, "op": "SCMP_CMP_LE"},
                  {"index": 1, "value": 19, "op": "SCMP_CMP_GT"}]},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,   # HUP, 0: any
         "args": [{"index": 1, "value": 2, "op": "SCMP_CMP_LT"},
                  {"index": 0, "value": 0, "op": "SCMP_CMP_NE"}]},
        {"names": ["kill"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,   # >= 60
         "args": [{"index": 1, "value": 60, "op": "SCMP_CMP_GE"},
                  {"index": 0, "value": 1, "op": "SCMP_CMP_GE"}]})
    script = ("trap '' HUP USR1 USR2 WINCH; sleep 100 & bg=$!; "
              "for t in USR1:1 USR2:1 WINCH:1 WINCH:$bg HUP:$bg 63:$bg TERM:$bg; do "
              "kill -${t%:*} ${t#*:} 2>/dev/null && echo $t:sent || echo $t:denied; done")
    p = bundle.run(_cfg(script, sec))
    got = [x.rsplit(":", 1)[1] for x in p.stdout.split()]
    assert got == ["denied", "denied", "denied", "sent", "denied", "denied", "sent"], \
        p.stdout


@pytest.mark.parametrize("action, code", [
    ("SCMP_ACT_KILL_PROCESS", 128 + 31), ("SCMP_ACT_KILL_THREAD", 128 + 31),
    ("SCMP_ACT_KILL", 128 + 31), ("SCMP_ACT_TRAP", 128 + 31),
])
def test_killing_actions(bundle, action, code):
    sec = _allow_but({"names": ["mkdir", "mkdirat"], "action": action})
    p = bundle.run(_cfg("echo before; exec mkdir /d", sec))
    assert p.returncode == code and "before" in p.stdout, (p.returncode, p.stderr)
    assert not os.path.exists(os.path.join(bundle.rootfs, "d"))


def test_log_trace_and_default_errno(bundle):
    """LOG allows; TRACE without a tracer fails the call with ENOSYS; the
    default action's defaultErrnoRet applies to everything else."""
    sec = {"defaultAction": "SCMP_ACT_ERRNO", "defaultErrnoRet": 38,
           "architectures": [NATIVE], "syscalls": [
               {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_LOG"},
               {"names": ["rmdir"], "action": "SCMP_ACT_TRACE"},
               {"names": ["getpid", "getppid"], "action": "SCMP_ACT_ERRNO",
                "errnoRet": 42}]}
    allowed = podman_default([])
    names = {n for c in allowed["syscalls"] if c["action"] == "SCMP_ACT_ALLOW"
             for n in c["names"]} - {"mkdir", "mkdirat", "rmdir", "getpid", "getppid",
                                     "sethostname", "chroot"}
    sec["syscalls"].append({"names": sorted(names), "action": "SCMP_ACT_ALLOW"})
    p = bundle.run(_cfg("mkdir /d && echo mkdir-ok; rmdir /d 2>&1; "
                        "hostname x 2>&1; true", sec))
    assert "mkdir-ok" in p.stdout, (p.stdout, p.stderr)
    assert "Function not implemented" in p.stdout      # TRACE and the default


def test_podman_default_profile_loads_and_works(bundle):
    if not os.path.exists(PODMAN_PROFILE):
        pytest.fail(f"{PODMAN_PROFILE} is missing: setup.sh installs it "
                    "(golang-github-containers-common)")
    caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    cfg = _cfg("echo hi > /tmp/f && cat /tmp/f && ls / >/dev/null && date >/dev/null "
               "&& ps >/dev/null && sleep 0.01 && echo works; swapon /tmp/f 2>&1; "
               "grep -E '^(Seccomp|Seccomp_filters|NoNewPrivs):' /proc/self/status",
               podman_default(caps), nnp=False)
    p = bundle.run(cfg)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "hi" in out and "works" in out
    assert "swapon: /tmp/f: Operation not permitted" in out   # the profile's rule
    assert "Seccomp:\t2" in out and "Seccomp_filters:\t1" in out
    assert "NoNewPrivs:\t0" in out     # loaded before the capabilities were dropped


def test_exec_gets_the_same_filter(bundle):
    b = bundle
    sec = _allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO",
                      "errnoRet": 42})
    cfg = _cfg("sleep 1000", sec, nnp=False)
    b.write(cfg)
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    try:
        p = b.rt("exec", cid, "sh", "-c", "mkdir /x 2>&1; grep Seccomp: /proc/self/status")
        assert "No message of desired type" in p.stdout, (p.stdout, p.stderr)
        assert "Seccomp:\t2" in p.stdout
    finally:
        b.rt("delete", "--force", cid)


def test_a_bad_profile_is_one_clear_error(bundle):
    b = bundle
    for sec, bad in (({"defaultAction": "SCMP_ACT_MAYBE"}, "SCMP_ACT_MAYBE"),
                     (_allow_but({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO",
                                  "args": [{"index": 1, "op": "SCMP_CMP_SOON"}]}),
                      "SCMP_CMP_SOON"),
                     ({"defaultAction": "SCMP_ACT_ALLOW",
                       "architectures": ["SCMP_ARCH_VAX"]}, "SCMP_ARCH_VAX")):
        b.write(_cfg("true", sec))
        cid = b.new_id()
        p = b.rt("run", "--bundle", b.dir, cid)
        assert p.returncode != 0
        assert len(p.stderr.strip().splitlines()) == 1, p.stderr
        assert bad in p.stderr, p.stderr        # the error names the offending value
        assert not os.path.exists(os.path.join(b.root, cid))


# --- notify --------------------------------------------------------------------------
SECCOMP_IOCTL_NOTIF_RECV = 0xC0502100
SECCOMP_IOCTL_NOTIF_SEND = 0xC0182101


def _listener(path, answers, seen):
    """A seccomp agent: for each connection, takes the fd and state from the
    runtime, then answers ``answers[i]`` notifications with -ENOMSG, recording
    the syscall numbers."""
    import fcntl
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    srv.settimeout(30)

    def serve():
        try:
            for n in answers:
                conn, _ = srv.accept()
                msg, fds, _, _ = socket.recv_fds(conn, 65536, 4)
                conn.close()
                seen.setdefault("states", []).append(json.loads(msg))
                fd = fds[0]
                for _ in range(n):
                    buf = bytearray(80)
                    fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_RECV, buf)
                    nid, = struct.unpack_from("Q", buf, 0)
                    seen.setdefault("nrs", []).append(struct.unpack_from("i", buf, 16)[0])
                    fcntl.ioctl(fd, SECCOMP_IOCTL_NOTIF_SEND,
                                bytearray(struct.pack("QqiI", nid, 0, -42, 0)))
                os.close(fd)
        except Exception as e:       # noqa: BLE001 - reported by the test
            seen["error"] = repr(e)
        finally:
            srv.close()
    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return t


def test_notify_sends_the_fd_and_state_to_the_listener(bundle, tmp_path):
    b = bundle
    path = str(tmp_path / "agent.sock")
    seen = {}
    t = _listener(path, [1], seen)
    sec = _allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"})
    sec["listenerPath"] = path
    sec["listenerMetadata"] = "hello-agent"
    p = b.run(_cfg("mkdir /d 2>&1; echo done", sec))
    t.join(10)
    assert "error" not in seen, seen
    assert "No message of desired type" in p.stdout and "done" in p.stdout, p.stdout
    st = seen["states"][0]
    assert st["fds"] == ["seccompFd"] and st["metadata"] == "hello-agent"
    assert st["state"]["id"] == b.ids[-1] and st["pid"] > 0
    assert len(seen["nrs"]) == 1


def test_notify_for_an_exec_goes_to_the_listener_too(bundle, tmp_path):
    b = bundle
    path = str(tmp_path / "agent.sock")
    seen = {}
    t = _listener(path, [0, 1], seen)       # the init's fd, then the exec's
    sec = _allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"})
    sec["listenerPath"] = path
    b.write(_cfg("sleep 1000", sec))
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    try:
        p = b.rt("exec", cid, "sh", "-c", "mkdir /e 2>&1; echo done")
        t.join(10)
        assert "error" not in seen, seen
        assert "No message of desired type" in p.stdout and "done" in p.stdout, p.stdout
        assert len(seen["states"]) == 2 and seen["states"][1]["state"]["id"] == cid
    finally:
        b.rt("delete", "--force", cid)
