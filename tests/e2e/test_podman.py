"""Podman drives the runtime (podman --runtime NAME, registered in containers.conf,
with conmon in between).  Each check asserts a real effect."""

import json
import time
import uuid

import pytest

from conftest import RUNTIME_NAME


def _name():
    return "p-" + uuid.uuid4().hex[:8]


@pytest.fixture
def box(engines):
    """A detached container running sleep, removed afterwards."""
    name = _name()
    engines.podman("run", "-d", "--name", name, engines.image, "sleep", "1000",
                   check=True)
    yield name
    engines.podman("rm", "-f", "-t", "0", name)


def test_run_rm_output_and_exit_code(engines):
    p = engines.podman("run", "--rm", "--network", "none", engines.image, "sh", "-c",
                       "echo hello; exit 3")
    assert p.returncode == 3 and p.stdout == "hello\n", p.stderr
    p = engines.podman("run", "--rm", "-i", "--network", "none", engines.image, "cat",
                       input="piped-in\n")
    assert p.stdout == "piped-in\n", p.stderr


def test_podmans_seccomp_profile_is_in_force(engines):
    p = engines.podman("run", "--rm", "--network", "none", engines.image, "sh", "-c",
                       "grep -E '^(Seccomp|Seccomp_filters):' /proc/self/status; "
                       "swapon /dev/null 2>&1; true")
    assert "Seccomp:\t2" in p.stdout and "Seccomp_filters:\t1" in p.stdout, p.stdout
    assert "Operation not permitted" in p.stdout
    p = engines.podman("run", "--rm", "--network", "none", "--security-opt",
                       "seccomp=unconfined", engines.image, "grep", "^Seccomp:",
                       "/proc/self/status")
    assert p.stdout.split() == ["Seccomp:", "0"], p.stdout


def test_run_tty(engines):
    p = engines.sh("script", "-qec", " ".join(engines.podman_cmd() + [
        "run", "--rm", "-t", "--network", "none", engines.image, "sh", "-c",
        "'tty; test -t 0 && echo is-a-tty'"]), "/dev/null")
    assert "/dev/pts/" in p.stdout and "is-a-tty" in p.stdout, (p.stdout, p.stderr)


def test_exec_flags(engines, box):
    e = engines
    p = e.podman("exec", "-u", "1000", "-w", "/tmp", "-e", "FOO=bar", box, "sh", "-c",
                 "echo $FOO $(id -u) $(pwd)")
    assert p.stdout == "bar 1000 /tmp\n", p.stderr
    p = e.podman("exec", box, "sh", "-c", "echo $$; cat /proc/1/cmdline")
    pid, cmd = p.stdout.split("\n", 1)
    assert pid != "1" and cmd.startswith("sleep"), p.stdout
    assert e.podman("exec", box, "sh", "-c", "exit 7").returncode == 7
    p = e.podman("exec", "-d", box, "sleep", "30")
    assert p.returncode == 0, p.stderr
    top = e.podman("top", box, "args").stdout
    assert "sleep 30" in top and "sleep 1000" in top, top
    p = e.sh("script", "-qec", " ".join(e.podman_cmd() + ["exec", "-t", box, "tty"]),
             "/dev/null")
    assert "/dev/pts/" in p.stdout, (p.stdout, p.stderr)
    p = e.podman("exec", "-i", box, "cat", input="into-exec\n")
    assert p.stdout == "into-exec\n"


def test_ps_logs_stop_kill_restart(engines):
    e = engines
    name = _name()
    e.podman("run", "-d", "--name", name, e.image, "sh", "-c",
             "trap 'echo got-term; exit 0' TERM; echo started; "
             "while :; do sleep 0.1; done", check=True)
    try:
        ps = e.podman("ps", "--format", "{{.Names}} {{.Status}}").stdout
        assert f"{name} Up" in ps, ps
        for _ in range(50):
            if "started" in e.podman("logs", name).stdout:
                break
            time.sleep(0.1)
        assert e.podman("stop", "-t", "10", name).returncode == 0
        assert "got-term" in e.podman("logs", name).stdout
        assert e.podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() == "0"
        assert e.podman("restart", name).returncode == 0
        state = json.loads(e.podman("inspect", name).stdout)[0]["State"]
        assert state["Running"] and state["Pid"] > 0
        assert e.podman("kill", "-s", "KILL", name).returncode == 0
        e.podman("wait", name)
        assert e.podman("inspect", "-f", "{{.State.ExitCode}}", name).stdout.strip() \
            == "137"
    finally:
        e.podman("rm", "-f", "-t", "0", name)


def test_pause_update_stats_top(engines, box):
    e = engines
    assert e.podman("pause", box).returncode == 0
    assert e.podman("inspect", "-f", "{{.State.Status}}", box).stdout.strip() == "paused"
    assert e.podman("unpause", box).returncode == 0
    assert e.podman("inspect", "-f", "{{.State.Status}}", box).stdout.strip() == "running"
    assert e.podman("update", "--memory", "96m", "--cpus", "0.5", box).returncode == 0
    p = e.podman("exec", box, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                 "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    assert p.stdout.split() == [str(96 << 20), "50000"], (p.stdout, p.stderr)
    stats = json.loads(e.podman("stats", "--no-stream", "--format", "json", box).stdout)
    assert stats[0]["name"] == box and stats[0]["mem_usage"] != ""
    assert "sleep 1000" in e.podman("top", box).stdout


def test_limits_apply_and_oom_is_137(engines):
    e = engines
    p = e.podman("run", "--rm", "--memory", "64m", "--pids-limit", "20", "--cpus", "0.5",
                 e.image, "cat", "/sys/fs/cgroup/memory/memory.limit_in_bytes",
                 "/sys/fs/cgroup/pids/pids.max", "/sys/fs/cgroup/cpu/cpu.cfs_quota_us")
    assert p.stdout.split() == [str(64 << 20), "20", "50000"], p.stderr
    p = e.podman("run", "--rm", "--memory", "32m", "--memory-swap", "32m", e.image,
                 "sh", "-c", "x=$(head -c 100000000 /dev/zero | tr '\\0' a)")
    assert p.returncode == 137, p.stderr
    p = e.podman("run", "--rm", "--pids-limit", "10", e.image, "sh", "-c",
                 "for i in $(seq 1 20); do sleep 3 & done; echo all-started")
    assert "all-started" not in p.stdout and "can't fork" in p.stderr, p.stderr


def test_proc_views_through_podman(engines):
    """org.hutch.proc: virtual through Podman (and conmon): the container sees its
    own limit in /proc/meminfo and sysinfo(2), and its CPUs in cpuinfo."""
    if RUNTIME_NAME != "hutch":
        pytest.skip("the views are hutch's")
    e = engines
    p = e.podman("run", "--rm", "--memory", "128m", "--cpuset-cpus", "0",
                 "--annotation", "org.hutch.proc=virtual", e.image, "sh", "-c",
                 "grep MemTotal /proc/meminfo; grep -c ^processor /proc/cpuinfo; "
                 "free | sed -n 2p")
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "MemTotal:         131072 kB", p.stdout
    assert lines[1] == "1"
    assert lines[2].split()[1] == "131072"      # busybox free: sysinfo(2)


def test_networks_ports_and_volumes(engines, tmp_path):
    e = engines
    p = e.podman("run", "--rm", "--network", "none", e.image, "sh", "-c",
                 "ls /sys/class/net")
    assert p.stdout.split() == ["lo"], p.stdout
    p = e.podman("run", "--rm", e.image, "sh", "-c", "ip -4 -o addr show eth0")
    assert " inet 10." in p.stdout, (p.stdout, p.stderr)
    name = _name()
    e.podman("run", "-d", "--name", name, "-p", "127.0.0.1:18080:8080", e.image, "sh",
             "-c", "echo hello-web > /www/index.html; exec httpd -f -p 8080 -h /www",
             check=True)
    try:
        body = ""
        for _ in range(50):
            body = e.sh("busybox", "wget", "-qO-", "http://127.0.0.1:18080/").stdout
            if body:
                break
            time.sleep(0.1)
        assert body == "hello-web\n"
    finally:
        e.podman("rm", "-f", "-t", "0", name)
    vol = tmp_path / "vol"
    vol.mkdir()
    (vol / "in").write_text("from-host\n")
    p = e.podman("run", "--rm", "-v", f"{vol}:/data", e.image, "sh", "-c",
                 "cat /data/in; echo from-container > /data/out")
    assert p.stdout == "from-host\n" and (vol / "out").read_text() == "from-container\n"


def test_errors_surface_through_podman(engines, box):
    e = engines
    p = e.podman("run", "--rm", "--network", "none", e.image, "no-such-command")
    assert p.returncode == 127
    assert "executable file not found" in p.stderr, p.stderr
    p = e.podman("exec", box, "no-such-command")
    assert p.returncode == 127
    assert "executable file not found" in p.stderr, p.stderr


def test_pid_host_stop_uses_kill_all(engines):
    e = engines
    name = _name()
    e.podman("run", "-d", "--name", name, "--pid", "host", e.image, "sleep", "1000",
             check=True)
    try:
        assert e.podman("stop", "-t", "1", name).returncode == 0
        assert e.podman("inspect", "-f", "{{.State.Running}}", name).stdout.strip() \
            == "false"
    finally:
        e.podman("rm", "-f", "-t", "0", name)


@pytest.mark.xfail(RUNTIME_NAME == "runc", strict=True,
                   reason="the engine runs runc without --criu, so runc uses Debian's "
                   "CRIU 3.17, which cannot dump on this kernel")
def test_checkpoint_restore_export_import(engines, tmp_path):
    """podman container checkpoint/restore, and --export/--import, through the
    runtime (a counter keeps counting)."""
    e = engines
    name = _name()
    e.podman("run", "-d", "--name", name, e.image, "sh", "-c",
             "i=0; while :; do i=$((i+1)); echo $i > /tmp/c; sleep 0.05; done",
             check=True)
    try:
        time.sleep(0.5)
        p = e.podman("container", "checkpoint", name)
        assert p.returncode == 0, p.stderr
        assert e.podman("inspect", "-f", "{{.State.Status}}", name).stdout.strip() \
            == "exited"
        p = e.podman("container", "restore", name)
        assert p.returncode == 0, p.stderr
        first = int(e.podman("exec", name, "cat", "/tmp/c").stdout)
        time.sleep(0.3)
        second = int(e.podman("exec", name, "cat", "/tmp/c").stdout)
        assert first < second and first > 3, (first, second)
        archive = str(tmp_path / "ck.tar.gz")
        p = e.podman("container", "checkpoint", "--leave-running", "-e", archive, name)
        assert p.returncode == 0, p.stderr
        e.podman("rm", "-f", "-t", "0", name, check=True)
        p = e.podman("container", "restore", "-i", archive)
        assert p.returncode == 0, p.stderr
        third = int(e.podman("exec", name, "cat", "/tmp/c").stdout)
        assert third >= second, (second, third)
    finally:
        e.podman("rm", "-f", "-t", "0", name)
