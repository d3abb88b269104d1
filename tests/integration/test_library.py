"""The Python library (`hutch.Sandbox`, `hutch.run`, `hutch.aio`): each field of a
result and each default checked by its effect inside the sandbox or on the host."""

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from conftest import IS_ROOT, REPO

import hutch
import hutch.aio

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="containers need root")
HUTCH = os.path.join(REPO, ".venv", "bin", "hutch-fast")
PY = os.path.join(REPO, ".venv", "bin", "python")


@pytest.fixture
def root(tmp_path):
    """A state root of the test's own; every container in it is gone after."""
    d = str(tmp_path / "state")
    yield d
    left = [n for n in (os.listdir(d) if os.path.isdir(d) else [])
            if not n.startswith(".")]
    for n in left:
        subprocess.run([HUTCH, "--root", d, "delete", "-f", n], capture_output=True)
    assert left == [], f"containers left behind: {left}"


def _cgroup_dirs(name):
    out = []
    for base in ("/sys/fs/cgroup/freezer/hutch", "/sys/fs/cgroup/unified/hutch",
                 "/sys/fs/cgroup/memory/hutch", "/sys/fs/cgroup/hutch"):
        if os.path.isdir(os.path.join(base, name)):
            out.append(os.path.join(base, name))
    return out


def test_result_fields(root):
    with hutch.Sandbox(root=root) as sb:
        r = sb.run(["sh", "-c", "echo out; echo err >&2; exit 3"])
        assert (r.returncode, r.stdout, r.stderr) == (3, b"out\n", b"err\n")
        assert r.signal is None and not r.timed_out and not r.oom_killed
        assert 0 < r.duration < 5
        r = sb.run(["sh", "-c", "kill -TERM $$"])
        assert (r.returncode, r.signal) == (-signal.SIGTERM, signal.SIGTERM)
        r = sb.run(["cat"], input=b"x" * 300000)
        assert r.stdout == b"x" * 300000
        with pytest.raises(hutch.CommandFailed) as e:
            sb.run(["false"], check=True)
        assert e.value.result.returncode == 1


def test_timeout_kills_everything_it_started(root):
    with hutch.Sandbox(root=root) as sb:
        t = time.monotonic()
        r = sb.run(["sh", "-c", "sleep 100 & (setsid sleep 100 &); sleep 100"], timeout=1)
        took = time.monotonic() - t
        assert r.timed_out and r.returncode == -signal.SIGKILL
        assert took < 3
        # only the reaper is left: the detached sleeps went with the command
        ps = sb.run(["ps", "-o", "comm="]).stdout.split()
        assert ps == [b"hutch-init", b"ps"], ps
        # and the command's own cgroup is gone
        for d in _cgroup_dirs(sb.name):
            assert not [n for n in os.listdir(d) if n.startswith("hutch-run-")], d


def test_default_timeout_of_the_sandbox(root):
    with hutch.Sandbox(root=root, timeout=0.5) as sb:
        assert sb.run(["sleep", "5"]).timed_out
        assert not sb.run(["true"]).timed_out


def test_oom_killed(root):
    with hutch.Sandbox(root=root, memory="64m") as sb:
        r = sb.run(["python3", "-c", "b = bytearray(100 << 20); b[::4096] = b'x' * "
                    "len(b[::4096])"], timeout=20)
        assert r.oom_killed and r.returncode == -signal.SIGKILL, r
        assert sb.stats()["oom_kills"] >= 1
        r = sb.run(["true"])
        assert not r.oom_killed


def test_fork_bomb_stays_bounded(root):
    with hutch.Sandbox(root=root, pids=32) as sb:
        p = sb.spawn(["sh", "-c", "f() { f | f & }; f; sleep 3"], stderr=hutch.DEVNULL)
        peak = 0
        while p.poll() is None and peak < 40:
            peak = max(peak, sb.stats()["pids"])
            time.sleep(0.05)
        p.kill()
        p.wait()
        assert 0 < peak <= 32
        assert sb.stats()["pids_limit"] == 32
        assert sb.run(["echo", "alive"], timeout=10).stdout == b"alive\n"


def test_limits_are_the_cgroups(root):
    with hutch.Sandbox(root=root, memory="256m", cpus=0.5, cpuset_cpus="0") as sb:
        st = sb.stats()
        assert st["memory_limit"] == 256 << 20
        cg = _cgroup_dirs(sb.name)
        cpu = f"/sys/fs/cgroup/cpu/hutch/{sb.name}/cpu.cfs_quota_us"
        if os.path.exists(cpu):
            assert open(cpu).read().strip() == "50000"
        assert cg
        assert sb.run(["cat", "/proc/self/status"]).stdout.count(b"Cpus_allowed_list:\t0\n")


def test_spawn_pipes(root):
    with hutch.Sandbox(root=root) as sb:
        p = sb.spawn(["sh", "-c", "while read l; do echo \"<$l>\"; done; echo bye >&2"],
                     stdin=hutch.PIPE, stdout=hutch.PIPE, stderr=hutch.PIPE)
        assert p.pid > 0 and p.returncode is None
        out, err = p.communicate(b"a\nb\n", timeout=10)
        assert (out, err, p.returncode) == (b"<a>\n<b>\n", b"bye\n", 0)
        p = sb.spawn(["sleep", "30"])
        with pytest.raises(hutch.TimeoutExpired):
            p.wait(timeout=0.2)
        p.kill()
        assert p.wait(timeout=5) == -signal.SIGKILL


def test_files_round_trip(root, tmp_path):
    with hutch.Sandbox(root=root) as sb:
        sb.write_file("/tmp/x", b"data", mode=0o640)
        assert sb.read_file("/tmp/x") == b"data"
        ls = sb.run(["stat", "-c", "%a %u", "/tmp/x"]).stdout
        assert ls == b"640 0\n"     # owned by the sandbox's root, not by nobody
        src = tmp_path / "tree"
        (src / "a" / "b").mkdir(parents=True)
        (src / "a" / "b" / "f").write_bytes(b"deep")
        (src / "top").write_bytes(b"top")
        os.symlink("a/b/f", src / "link")
        sb.put(str(src), "/tmp/in")
        assert sb.run(["cat", "/tmp/in/a/b/f", "/tmp/in/link"]).stdout == b"deepdeep"
        sb.run(["sh", "-c", "echo made > /tmp/in/a/new"])
        sb.get("/tmp/in", str(tmp_path / "out"))
        assert (tmp_path / "out" / "a" / "new").read_bytes() == b"made\n"
        assert os.readlink(tmp_path / "out" / "link") == "a/b/f"
        # a symlink planted inside resolves inside: never to the host's /etc
        sb.run(["ln", "-s", "/etc", "/tmp/evil"])
        with pytest.raises(hutch.SandboxError):
            sb.write_file("/tmp/evil/hutch-test-escape", b"x")
        assert not os.path.exists("/etc/hutch-test-escape")
        with pytest.raises(hutch.SandboxError) as e:
            sb.read_file("/tmp/nope")
        assert e.value.errno == 2


def test_confinement_defaults(root):
    with hutch.Sandbox(root=root) as sb:
        uid_map = sb.run(["cat", "/proc/self/uid_map"]).stdout.split()
        assert uid_map[0] == b"0" and uid_map[1] != b"0"     # unprivileged on the host
        assert sb.run(["id", "-u"]).stdout == b"0\n"
        r = sb.run(["unshare", "-U", "true"])
        assert r.returncode != 0 and b"Operation not permitted" in r.stderr
        r = sb.run(["python3", "-c", "import ctypes; l = ctypes.CDLL(None, use_errno="
                    "True); print(l.syscall(250, 0, 0, 0, 0), ctypes.get_errno())"])
        assert r.stdout == b"-1 1\n"        # keyctl: EPERM
        status = sb.run(["cat", "/proc/self/status"]).stdout.decode()
        assert "NoNewPrivs:\t1" in status and "Seccomp:\t2" in status
        r = sb.run(["touch", "/usr/hutch-test"])
        assert r.returncode != 0 and not os.path.exists("/usr/hutch-test")
        # nothing of the host's /proc, /sys, /dev or /run hides below its own
        mounts = sb.run(["cat", "/proc/self/mountinfo"]).stdout.decode().splitlines()
        points = [m.split()[4] for m in mounts]
        assert points.count("/proc") == 1 and points.count("/sys") == 1
        assert not [p for p in points if p.startswith("/sys/fs/cgroup")]


def test_unconfined_and_root_host(root):
    with hutch.Sandbox(root=root, seccomp="unconfined", user="root-host",
                       cap_drop=["ALL"]) as sb:
        status = sb.run(["cat", "/proc/self/status"]).stdout.decode()
        assert "Seccomp:\t0" in status and "CapEff:\t0000000000000000" in status
        assert sb.run(["cat", "/proc/self/uid_map"]).stdout.split()[:2] == [b"0", b"0"]


def test_visible_to_the_cli(root):
    name = "lib-" + uuid.uuid4().hex[:6]
    with hutch.Sandbox(root=root, name=name) as sb:
        assert sb.name == name
        ls = subprocess.run([HUTCH, "--root", root, "list", "--format", "json"],
                            capture_output=True, text=True, check=True).stdout
        assert [c["id"] for c in json.loads(ls)] == [name]
        p = subprocess.run([HUTCH, "--root", root, "exec", name, "cat", "/proc/1/cmdline"],
                           capture_output=True, check=True)
        assert p.stdout.split(b"\0")[0] == b"/run/hutch-init"
    assert [n for n in os.listdir(root) if not n.startswith(".")] == []
    assert _cgroup_dirs(name) == []


def test_exception_inside_with_leaves_nothing(root):
    name = "lib-" + uuid.uuid4().hex[:6]
    with pytest.raises(RuntimeError):
        with hutch.Sandbox(root=root, name=name) as sb:
            sb.spawn(["sleep", "100"])
            raise RuntimeError("boom")
    assert [n for n in os.listdir(root) if not n.startswith(".")] == []
    assert _cgroup_dirs(name) == []


def test_parent_killed_then_delete_cleans_up(root):
    name = "lib-" + uuid.uuid4().hex[:6]
    script = (f"import hutch, sys, time; sb = hutch.Sandbox(root={root!r}, name={name!r}, "
              "memory='64m').start(); sb.spawn(['sleep', '100']); print('up', flush=True); "
              "time.sleep(100)")
    with tempfile.TemporaryFile() as out:
        p = subprocess.Popen([PY, "-c", script], stdout=out, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            out.seek(0)
            if b"up" in out.read():
                break
            time.sleep(0.05)
        p.kill()
        p.wait()
    assert os.path.isdir(os.path.join(root, name))
    init = json.loads(subprocess.run([HUTCH, "--root", root, "state", name],
                                     capture_output=True, check=True).stdout)["pid"]
    subprocess.run([HUTCH, "--root", root, "delete", "-f", name], check=True)
    # the orphaned processes went to the nearest child subreaper: this test
    # process, which uses the library too; a pid namespace's init exits only
    # once every process in it is reaped, so reap what came here
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if os.waitpid(-1, os.WNOHANG) == (0, 0):
                time.sleep(0.02)
        except ChildProcessError:
            break
        if not os.path.exists(f"/proc/{init}"):
            break
    try:
        with open(f"/proc/{init}/stat") as f:
            assert f.read().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        pass
    assert _cgroup_dirs(name) == []


def test_checkpoint_forks_a_running_copy(root, busybox_rootfs, tmp_path):
    from hutch.criu import find
    try:
        find(None)
    except hutch.HutchError as e:
        pytest.skip(f"no CRIU: {e}")
    # the sandbox's root (an unprivileged host uid) binds its rootfs: a place it
    # can reach, not pytest's private directory (which the sandbox refuses)
    with pytest.raises(hutch.SandboxError) as e:
        hutch.Sandbox(root=root, rootfs=busybox_rootfs).start()
    assert "cannot reach it" in str(e.value)
    image = tempfile.mkdtemp(prefix="hutch-lib-")
    os.chmod(image, 0o755)
    rootfs = os.path.join(image, "rootfs")
    subprocess.run(["cp", "-a", busybox_rootfs, rootfs], check=True)
    try:
        _checkpoint_and_fork(root, rootfs, tmp_path)
    finally:
        subprocess.run(["rm", "-rf", image], check=True)


def _checkpoint_and_fork(root, rootfs, tmp_path):
    with hutch.Sandbox(root=root, rootfs=rootfs) as sb:
        sb.run(["sh", "-c", "(i=0; while :; do i=$((i+1)); echo $i > /tmp/c; "
                "sleep 0.05; done) >/dev/null 2>&1 &"])
        time.sleep(0.3)
        snap = sb.checkpoint(str(tmp_path / "snap"), leave_running=True)
        at_dump = int(sb.read_file("/tmp/c"))
        with hutch.Sandbox.restore(snap, name="lib-copy-" + uuid.uuid4().hex[:6],
                                   root=root) as copy:
            time.sleep(0.5)
            a, b = int(sb.read_file("/tmp/c")), int(copy.read_file("/tmp/c"))
            assert a > at_dump and b > at_dump      # both count on
            assert copy.run(["cat", "/proc/1/cmdline"]).stdout.startswith(
                b"/run/hutch-init")
            copy.write_file("/tmp/mine", b"copy")
            assert sb.run(["test", "-e", "/tmp/mine"]).returncode == 1


def test_parallel_threads(root):
    results, errors = {}, []

    def work(i):
        try:
            with hutch.Sandbox(root=root, memory="64m") as sb:
                results[i] = sb.run(["sh", "-c", f"echo {i}; exit {i % 7}"], timeout=30)
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    threads = [threading.Thread(target=work, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    for i, r in results.items():
        assert (r.stdout, r.returncode) == (f"{i}\n".encode(), i % 7)
    assert len(results) == 20


def test_failed_starts_leave_no_zombie_and_close_returns(root):
    """A process that fails before it runs its program (here: no such program)
    is reaped: none is left in the sandbox's pid namespace to keep its dying
    init, and close() with it, waiting (its error used to be able to reach the
    caller before its pid did)."""
    with hutch.Sandbox(root=root) as sb:
        def fail():
            for _ in range(10):
                with pytest.raises(hutch.SandboxError):
                    sb.run(["/no/such/program"])
        threads = [threading.Thread(target=fail) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert sb.run(["true"]).returncode == 0
        t0 = time.monotonic()
    assert time.monotonic() - t0 < 5
    with open(f"/proc/self/task/{os.getpid()}/children") as f:
        kids = f.read().split()
    zombies = [k for k in kids if open(f"/proc/{k}/stat").read().split(")")[1].split()[0]
               == "Z"]
    assert zombies == []


def test_parallel_asyncio(root):
    async def one(i):
        async with hutch.aio.Sandbox(root=root) as sb:
            return await sb.run(["sh", "-c", f"echo {i}"])

    async def main():
        rs = await asyncio.gather(*[one(i) for i in range(20)])
        r = await hutch.aio.run(["sleep", "5"], timeout=0.3, root=root)
        async with hutch.aio.Sandbox(root=root) as sb:
            task = asyncio.create_task(sb.run(["sleep", "30"]))
            await asyncio.sleep(0.3)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            left = (await sb.run(["ps", "-o", "comm="])).stdout.split()
        return rs, r, left
    rs, r, left = asyncio.run(main())
    assert [x.stdout for x in rs] == [f"{i}\n".encode() for i in range(20)]
    assert r.timed_out
    assert left == [b"hutch-init", b"ps"]


def test_one_shot_run(root):
    r = hutch.run(["sh", "-c", "echo $K; cat /proc/self/uid_map"], env={"K": "v"},
                  memory="64m", timeout=10, root=root)
    assert r.returncode == 0 and r.stdout.startswith(b"v\n")


def test_errors_are_typed(root):
    with pytest.raises(hutch.SandboxError) as e:
        hutch.Sandbox(root=root, memory="lots")
    assert e.value.errno == 22
    with pytest.raises(hutch.SandboxError) as e:
        hutch.Sandbox(root=root, network="host,mynet")
    assert e.value.errno == 22
    with pytest.raises(hutch.SandboxError) as e:
        hutch.Sandbox(root=root, publish=["8080:80"])     # loopback only
    assert e.value.errno == 22
    with pytest.raises(hutch.SandboxError) as e:
        hutch.Sandbox(root=root, network="no-such-net",
                      config_dir=str(root) + "-cfg").start()
    assert e.value.errno == 2 and "no such network" in str(e.value)
    sb = hutch.Sandbox(root=root)
    with pytest.raises(hutch.SandboxError):
        sb.run(["true"])        # not started


def test_cli_sandbox_flags():
    p = subprocess.run([HUTCH, "sandbox", "--timeout", "0.5", "--", "sleep", "5"])
    assert p.returncode == 124
    p = subprocess.run([HUTCH, "sandbox", "--memory", "32m", "--", "python3", "-c",
                        "b = bytearray(100 << 20); b[::4096] = b'x' * len(b[::4096])"],
                       capture_output=True)
    assert p.returncode == 137
    p = subprocess.run([HUTCH, "sandbox", "--pids-limit", "10", "--cap-drop", "ALL",
                        "--", "sh", "-c", "cat /sys/fs/cgroup/pids/pids.max 2>/dev/null;"
                        " grep CapEff /proc/self/status"], capture_output=True, text=True)
    assert p.returncode == 0 and "CapEff:\t0000000000000000" in p.stdout, p.stderr
    p = subprocess.run([HUTCH, "sandbox", "--", "sh", "-c", "exit 7"])
    assert p.returncode == 7
    p = subprocess.run([HUTCH, "sandbox", "--seccomp", "unconfined", "--", "unshare",
                        "-U", "true"])
    assert p.returncode == 0


def test_rootless_library():
    import pathlib
    import pwd
    name = "hutch-l-" + uuid.uuid4().hex[:6]
    subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", name], check=True)
    work = tempfile.mkdtemp(prefix="hutch-rootless-")
    try:
        pw = pwd.getpwnam(name)
        os.chmod(work, 0o755)
        xdg = pathlib.Path(work) / "xdg"
        xdg.mkdir(mode=0o700)
        os.chown(xdg, pw.pw_uid, pw.pw_gid)
        script = ("import hutch, json; sb = hutch.Sandbox(); sb.start()\n"
                  "try:\n"
                  "  r = sb.run(['sh', '-c', 'id -u; touch /usr/x /etc/x 2>&1; "
                  "cat /proc/self/uid_map'])\n"
                  "  sb.write_file('/tmp/f', b'hi'); got = sb.read_file('/tmp/f')\n"
                  "finally:\n  sb.close()\n"
                  "print(json.dumps([r.returncode, r.stdout.decode(), got.decode()]))\n")
        p = subprocess.run([PY, "-c", script], user=pw.pw_uid, group=pw.pw_gid,
                           extra_groups=[], capture_output=True, text=True, timeout=60,
                           env={"XDG_RUNTIME_DIR": str(xdg), "PATH": "/usr/bin:/bin"},
                           cwd="/")
        assert p.returncode == 0, p.stderr
        code, out, got = json.loads(p.stdout.splitlines()[-1])
        lines = out.splitlines()
        assert lines[0] == "0" and got == "hi"
        assert "Read-only file system" in out
        assert lines[-1].split() == ["0", str(pw.pw_uid), "1"]
        assert [n for n in os.listdir(xdg / "hutch") if not n.startswith(".")] == []
        # limits need cgroups, which this user has none of: said so, by name
        script = "import hutch\ntry:\n  hutch.run(['true'], memory='64m')\n" \
                 "except hutch.SandboxError as e:\n  print(e)\n"
        p = subprocess.run([PY, "-c", script], user=pw.pw_uid, group=pw.pw_gid,
                           extra_groups=[], capture_output=True, text=True, timeout=60,
                           env={"XDG_RUNTIME_DIR": str(xdg), "PATH": "/usr/bin:/bin"},
                           cwd="/")
        assert "needs cgroups" in p.stdout, (p.stdout, p.stderr)
    finally:
        subprocess.run(["pkill", "-9", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], check=True)
        subprocess.run(["rm", "-rf", work], check=True)


def test_library_import_is_lazy():
    p = subprocess.run([PY, "-c", "import hutch, sys; print(sorted(m for m in "
                        "sys.modules if m.startswith('hutch')))"],
                       capture_output=True, text=True, check=True)
    assert p.stdout.strip() == "['hutch']"
    assert sys.modules.get("hutch") is not None
