"""hutch-only exec and enter behaviour: entering through a pidfd never reaches a
process other than the one the pidfd was opened for, and `hutch enter`."""

import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import IS_ROOT, REPO, RUNTIME, base_config

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def test_a_dead_target_is_never_entered():
    """The init dies after exec opened its pidfd (the pid may be reused at once):
    the one setns through the pidfd fails, and nothing starts anywhere."""
    script = textwrap.dedent("""
        import os, subprocess, sys
        sys.path.insert(0, sys.argv[1])
        from hutch.container import exec as tenant
        from hutch.container.plan import ProcessPlan
        from hutch.errors import HutchError
        victim = subprocess.Popen(["sleep", "100"])
        fd = os.pidfd_open(victim.pid)
        victim.kill(); victim.wait()
        proc = ProcessPlan(args=["/bin/sh", "-c", "touch " + sys.argv[2]], cwd="/")
        plan = {"process": proc.wire(), "ns_flags": 0x20000000 | 0x00020000 | 0x04000000,
                "keep_fds": 3, "no_new_keyring": True, "target": "pid",
                "source": "test", "gone_msg": "the target is gone"}
        try:
            tenant.run_entry(plan, fd, {}, detach=True)
        except HutchError as e:
            print("refused:", e)
            sys.exit(0)
        print("entered")
        sys.exit(1)
    """)
    marker = f"/tmp/hutch-test-entered-{os.getpid()}"
    p = subprocess.run([sys.executable, "-c", script, os.path.join(REPO, "src"), marker],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, (p.stdout, p.stderr)
    assert "refused: the target is gone" in p.stdout
    assert not os.path.exists(marker)


def test_hutch_enter_joins_the_namespaces_of_a_pid(bundle):
    if "hutch" not in os.path.basename(RUNTIME[0]) and RUNTIME[-1] != "hutch":
        pytest.skip("hutch only")
    b = bundle
    cfg = base_config(["sleep", "1000"])
    cfg["hostname"] = "entered"
    b.write(cfg)
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    pid = json.loads(b.rt("state", cid).stdout)["pid"]
    p = b.rt("enter", "--pid", pid, "--", "sh", "-c",
             "hostname; cat /proc/1/cmdline | tr '\\0' ' '; exit 5")
    assert p.returncode == 5, p.stderr
    assert p.stdout.splitlines() == ["entered", "sleep 1000 "]
    # only the uts namespace: hostname from the container, mounts from the host
    p = b.rt("enter", "--pid", pid, "--ns", "uts", "--cap", "CAP_KILL", "--", "sh",
             "-c", "hostname; grep CapEff /proc/self/status; test -d " + REPO)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["entered", "CapEff:", "0000000000000020"]
    p = b.rt("enter", "--pid", "999999999", "--", "true")
    assert p.returncode == 255 and "no process with pid" in p.stderr


def test_exec_refuses_lsm_labels_the_host_cannot_apply(bundle):
    b = bundle
    b.write(base_config(["sleep", "1000"]))
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    from hutch import lsm
    for flag, name, active in (("--apparmor", "AppArmor", lsm.apparmor_active()),
                               ("--process-label", "SELinux", lsm.selinux_active())):
        # an unknown label fails either way; where the LSM is absent, it says so
        p = b.rt("exec", flag, "no-such-label", cid, "true")
        assert p.returncode == 255, p.stderr
        assert len(p.stderr.strip().splitlines()) == 1
        if not active:
            assert f"{name} is not enabled on this host" in p.stderr


def test_seccomp_notify_with_wait_killable_recv(bundle, tmp_path):
    """SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV (Linux 6.0) with a notify listener."""
    import sys
    sys.path.insert(0, os.path.join(REPO, "tests", "conformance"))
    from test_seccomp import _allow_but, _cfg, _listener
    b = bundle
    path = str(tmp_path / "agent.sock")
    seen = {}
    t = _listener(path, [1], seen)
    sec = _allow_but({"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"})
    sec.update(listenerPath=path, flags=["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"])
    p = b.run(_cfg("mkdir /d 2>&1; echo done", sec))
    t.join(10)
    assert "error" not in seen, seen
    assert "No message of desired type" in p.stdout and "done" in p.stdout, p.stderr
    # without a notify rule the flag means nothing, and hutch says so
    sec = _allow_but({"names": ["mkdir"], "action": "SCMP_ACT_ERRNO"})
    sec["flags"] = ["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]
    p = b.run(_cfg("true", sec))
    assert p.returncode != 0 and "applies only to filters with" in p.stderr
