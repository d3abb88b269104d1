"""exec: a new process in a running container joins every namespace and cgroup of
the init, gets its confinement, and passes exit codes, signals and a terminal
through.  Refusals are clear.  Runs against runc too (HUTCH_TEST_RUNTIME=runc)."""

import contextlib
import glob
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import RUNTIME, RUNTIME_NAME, base_config, runtime_binary

CG = "/sys/fs/cgroup"
NS = ("mnt", "net", "ipc", "uts", "pid", "cgroup")


def _cfg(cid, args=("sleep", "1000"), resources=None):
    cfg = base_config(list(args))
    cfg["linux"]["cgroupsPath"] = f"/hutch-t-{cid}"
    cfg["hostname"] = "exec-box"
    if resources:
        cfg["linux"]["resources"] = resources
    return cfg


@contextlib.contextmanager
def _container(b, cfg=None, cid=None):
    """A detached container; force-deleted afterwards, and nothing may remain."""
    cid = cid or b.new_id()
    b.write(cfg or _cfg(cid))
    p = b.rt("run", "-d", "--bundle", b.dir, cid)
    assert p.returncode == 0, p.stderr
    try:
        yield cid
    finally:
        b.rt("delete", "--force", cid)
        assert not glob.glob(f"{CG}/*/hutch-t-{cid}")


def _init_pid(b, cid):
    return json.loads(b.rt("state", cid, check=True).stdout)["pid"]


def _detached_exec(b, cid, *args):
    """``args``: exec options, then the command."""
    pidfile = os.path.join(b.dir, f"exec-{time.monotonic_ns()}.pid")
    opts = []
    while args and args[0].startswith("--"):
        opts += args[:2]
        args = args[2:]
    p = b.rt("exec", "--detach", "--pid-file", pidfile, *opts, cid, *args)
    assert p.returncode == 0, p.stderr
    with open(pidfile) as f:
        return int(f.read())


def _status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            out[k] = v.strip()
    return out


def test_exec_joins_every_namespace_of_the_init(bundle):
    b = bundle
    with _container(b) as cid:
        p = b.rt("exec", cid, "sh", "-c",
                 "echo me=$$; cat /proc/1/cmdline | tr '\\0' ' '; echo; hostname")
        assert p.returncode == 0, p.stderr
        lines = p.stdout.splitlines()
        assert lines[0] != "me=1" and lines[0].startswith("me=")
        assert lines[1].strip() == "sleep 1000"         # the init is PID 1
        assert lines[2] == "exec-box"
        init = _init_pid(b, cid)
        pid = _detached_exec(b, cid, "sleep", "30")
        for ns in NS:
            assert os.readlink(f"/proc/{pid}/ns/{ns}") == \
                os.readlink(f"/proc/{init}/ns/{ns}"), ns
        assert os.readlink(f"/proc/{pid}/ns/mnt") != os.readlink("/proc/self/ns/mnt")
        # the same mounts: a file the exec writes is seen by the init's root
        assert b.rt("exec", cid, "sh", "-c", "echo shared > /marker").returncode == 0
        with open(f"/proc/{init}/root/marker") as f:
            assert f.read() == "shared\n"
        # and its root is the container's, not the host's
        assert os.stat(f"/proc/{pid}/root/marker").st_ino == \
            os.stat(os.path.join(b.rootfs, "marker")).st_ino


def test_exec_sits_in_the_container_cgroups_and_their_limits_apply(bundle):
    b = bundle
    cid = b.new_id()
    res = {"memory": {"limit": 32 << 20, "swap": 32 << 20}, "pids": {"limit": 10}}
    with _container(b, _cfg(cid, resources=res), cid):
        pid = _detached_exec(b, cid, "sleep", "30")
        with open(f"/proc/{pid}/cgroup") as f:
            lines = [ln.strip().split(":", 2) for ln in f]
        v1 = {c: path for _, c, path in lines if c and c != "name=systemd"}
        assert v1 and all(path == f"/hutch-t-{cid}" for path in v1.values()), v1
        # memory: an exec'd allocation past the limit is OOM-killed
        p = b.rt("exec", cid, "dd", "if=/dev/zero", "of=/dev/null", "bs=64M", "count=1")
        assert p.returncode == 137, (p.returncode, p.stderr)
        # pids: forks past the limit fail inside the exec'd shell
        p = b.rt("exec", cid, "sh", "-c", "i=0; while [ $i -lt 15 ]; do sleep 3 & "
                 "i=$((i+1)); echo $i; done", timeout=60)
        started = [int(x) for x in p.stdout.split()]
        assert started and max(started) < 15, p.stdout
        with open(f"{CG}/pids/hutch-t-{cid}/pids.current") as f:
            assert int(f.read()) <= 10


def test_exec_into_a_sub_cgroup(bundle):
    b = bundle
    cid = b.new_id()
    with _container(b, _cfg(cid), cid):
        sub = f"{CG}/memory/hutch-t-{cid}/side"
        os.mkdir(sub)
        pid = _detached_exec(b, cid, "--cgroup", "memory:side", "sleep", "30")
        with open(f"/proc/{pid}/cgroup") as f:
            got = {c: path for _, c, path in (ln.strip().split(":", 2) for ln in f)}
        assert got["memory"] == f"/hutch-t-{cid}/side"
        assert got["pids"] == f"/hutch-t-{cid}"
        p = b.rt("exec", "--cgroup", "memory:nope", cid, "true")
        assert p.returncode != 0
        assert "adding pid" in p.stderr and "/nope/cgroup.procs: no such file" in \
            p.stderr, p.stderr
        p = b.rt("exec", "--cgroup", "..", cid, "true")
        assert p.returncode != 0 and " .. is not a sub cgroup path" in p.stderr
        p = b.rt("exec", "--cgroup", "whaaat:/", cid, "true")
        assert p.returncode != 0 and "unknown controller " in p.stderr, p.stderr
        p = b.rt("exec", "--cgroup", "/", cid, "cat", "/proc/self/cgroup")
        assert p.returncode == 0 and f"memory:/hutch-t-{cid}\n" in p.stdout, p.stdout


def test_exec_into_a_created_container(bundle):
    """Before start, exec already joins the init's namespaces."""
    b = bundle
    cid = b.new_id()
    b.write(_cfg(cid))
    assert b.rt("create", "--bundle", b.dir, cid).returncode == 0
    try:
        p = b.rt("exec", cid, "hostname")
        assert p.returncode == 0 and p.stdout == "exec-box\n", p.stderr
        assert json.loads(b.rt("state", cid).stdout)["status"] == "created"
    finally:
        b.rt("delete", "--force", cid)


def test_exec_gets_the_init_confinement_and_cap_adds(bundle):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(cid)
    caps = ["CAP_CHOWN", "CAP_KILL", "CAP_NET_BIND_SERVICE"]
    cfg["process"]["capabilities"] = {k: list(caps) for k in
                                      ("bounding", "effective", "permitted")}
    cfg["process"]["noNewPrivileges"] = True
    cfg["process"]["user"] = {"uid": 0, "gid": 0, "additionalGids": [5]}
    cfg["process"]["env"] = ["PATH=/bin", "FROM_CONFIG=yes"]
    with _container(b, cfg, cid):
        init = _status(_init_pid(b, cid))
        pid = _detached_exec(b, cid, "sleep", "30")
        st = _status(pid)
        for k in ("CapBnd", "CapEff", "CapPrm", "CapInh", "CapAmb", "NoNewPrivs",
                  "Uid", "Gid", "Groups"):
            assert st[k] == init[k], (k, st[k], init[k])
        assert st["NoNewPrivs"] == "1" and st["Groups"] == "5"
        assert int(st["CapEff"], 16) == 1 << 0 | 1 << 5 | 1 << 10   # the three caps
        p = b.rt("exec", "-e", "EXTRA=1", cid, "env")
        out = p.stdout.splitlines()
        assert "FROM_CONFIG=yes" in out and "EXTRA=1" in out
        pid = _detached_exec(b, cid, "sleep", "30")
        base_eff = int(_status(pid)["CapEff"], 16)
        p = b.rt("exec", "--detach", "--cap", "CAP_SYS_ADMIN", "--pid-file",
                 os.path.join(b.dir, "cap.pid"), cid, "sleep", "30")
        assert p.returncode == 0, p.stderr
        with open(os.path.join(b.dir, "cap.pid")) as f:
            eff = int(_status(int(f.read()))["CapEff"], 16)
        assert eff == base_eff | 1 << 21          # CAP_SYS_ADMIN is 21


@pytest.mark.xfail(RUNTIME_NAME == "runc", strict=False,
                   reason="runc 1.1.5 often gives exec'd processes the soft RLIMIT_NOFILE "
                   "its Go runtime raised to the hard limit, not the configured one")
def test_exec_gets_the_configured_rlimits(bundle):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(cid)
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 512, "soft": 256}]
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    with _container(b, cfg, cid):
        p = b.rt("exec", cid, "sh", "-c", "ulimit -n; ulimit -Hn")
        assert p.stdout.split() == ["256", "512"], (p.stdout, p.stderr)


def test_exec_process_json_user_env_cwd(bundle):
    b = bundle
    with _container(b) as cid:
        proc = {"args": ["sh", "-c", "id -u; id -g; pwd; echo $ONLY"],
                "env": ["PATH=/bin", "ONLY=json"], "cwd": "/tmp",
                "user": {"uid": 1000, "gid": 1000}}
        path = os.path.join(b.dir, "process.json")
        with open(path, "w") as f:
            json.dump(proc, f)
        p = b.rt("exec", "--process", path, cid)
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["1000", "1000", "/tmp", "json"]
        p = b.rt("exec", "--user", "1000:5", "--cwd", "/etc", cid, "sh", "-c",
                 "id -u; id -g; pwd")
        assert p.stdout.split() == ["1000", "5", "/etc"], p.stderr


def test_exec_in_a_user_namespace(bundle):
    b = bundle
    cid = b.new_id()
    cfg = _cfg(cid)
    cfg["linux"]["namespaces"].append({"type": "user"})
    for key in ("uidMappings", "gidMappings"):
        cfg["linux"][key] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
    # the container's root is host uid 100000: let it reach the bundle (pytest
    # makes its temporary directories 0700)
    d = b.dir
    while d.startswith(tempfile.gettempdir() + "/"):
        os.chmod(d, os.stat(d).st_mode | 0o011)
        d = os.path.dirname(d)
    with _container(b, cfg, cid):
        p = b.rt("exec", cid, "sh", "-c", "id -u; cat /proc/self/uid_map")
        assert p.returncode == 0, p.stderr
        assert p.stdout.split() == ["0", "0", "100000", "65536"]
        pid = _detached_exec(b, cid, "sleep", "30")
        init = _init_pid(b, cid)
        assert os.readlink(f"/proc/{pid}/ns/user") == os.readlink(f"/proc/{init}/ns/user")
        assert _status(pid)["Uid"].split()[0] == "100000"    # root inside, not outside
        p = b.rt("exec", "--user", "1000", cid, "id", "-u")
        assert p.stdout.strip() == "1000", p.stderr


def test_exit_codes_and_signals_pass_through(bundle):
    b = bundle
    with _container(b) as cid:
        assert b.rt("exec", cid, "sh", "-c", "exit 7").returncode == 7
        assert b.rt("exec", cid, "true").returncode == 0
        assert b.rt("exec", cid, "sh", "-c", "kill -KILL $$").returncode == 137
        # a signal sent to the runtime reaches the exec'd process
        proc = subprocess.Popen(
            RUNTIME + ["--root", b.root, "exec", cid, "sh", "-c",
                       "trap 'exit 42' TERM; echo ready; while :; do sleep 0.1; done"],
            stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            assert proc.stdout.readline() == b"ready\n"
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=10) == 42
        finally:
            proc.kill()
            proc.wait()


def test_exec_preserve_fds(bundle):
    b = bundle
    with _container(b) as cid:
        r, w = os.pipe()
        # a small wrapper puts the pipe at fd 3, as an engine would
        wrapper = ("import os, sys; os.dup2(int(sys.argv[1]), 3); "
                   "os.execvp(sys.argv[2], sys.argv[2:])")
        try:
            p = subprocess.run([sys.executable, "-c", wrapper, str(w)] + RUNTIME +
                               ["--root", b.root, "exec", "--preserve-fds", "1", cid,
                                "sh", "-c", "echo through-fd3 >&3"],
                               pass_fds=(w,), stdin=subprocess.DEVNULL,
                               capture_output=True, timeout=30)
            os.close(w)
            w = -1
            assert p.returncode == 0, p.stderr
            assert os.read(r, 100) == b"through-fd3\n"
        finally:
            os.close(r)
            if w >= 0:
                os.close(w)


def test_exec_tty_through_the_console_socket(bundle, tmp_path):
    from test_process_io import _read_until
    b = bundle
    with _container(b) as cid:
        path = str(tmp_path / "exec-console.sock")
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(path)
        srv.listen(1)
        try:
            p = b.rt("exec", "--tty", "--detach", "--console-socket", path, cid,
                     "sh", "-c", "tty; test -t 0 && echo is-a-tty; read x; echo got:$x")
            assert p.returncode == 0, p.stderr
            conn, _ = srv.accept()
            _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
            conn.close()
            master = fds[0]
            try:
                out = _read_until(master, b"is-a-tty")
                assert b"/dev/pts/" in out and b"is-a-tty" in out, out
                os.write(master, b"typed\n")
                assert b"got:typed" in _read_until(master, b"got:typed")
            finally:
                os.close(master)
        finally:
            srv.close()


def test_twenty_concurrent_execs(bundle):
    b = bundle
    with _container(b) as cid:
        procs = [subprocess.Popen(RUNTIME + ["--root", b.root, "exec", cid, "sh", "-c",
                                             f"echo exec-{i}; exit {i}"],
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  stdin=subprocess.DEVNULL) for i in range(20)]
        for i, p in enumerate(procs):
            out, err = p.communicate(timeout=60)
            assert p.returncode == i, (i, p.returncode, err)
            assert out == f"exec-{i}\n".encode()


def test_exec_refusals(bundle):
    b = bundle
    with _container(b) as cid:
        p = b.rt("exec", cid, "no-such-command")
        assert p.returncode != 0 and "executable file not found" in p.stderr, p.stderr
        p = b.rt("exec", "--cwd", "/no/such/dir", cid, "true")
        assert p.returncode != 0 and "/no/such/dir" in p.stderr, p.stderr
        assert "no such file or directory" in p.stderr.lower()
        p = b.rt("exec", "--user", "nosuchuser", cid, "true")
        assert p.returncode != 0 and "nosuchuser" in p.stderr, p.stderr
        # paused: refused unless --ignore-paused, which then waits for resume
        assert b.rt("pause", cid).returncode == 0
        p = b.rt("exec", cid, "true")
        assert p.returncode != 0 and "paused" in p.stderr, p.stderr
        waiting = subprocess.Popen(RUNTIME + ["--root", b.root, "exec", "--ignore-paused",
                                              cid, "echo", "thawed"],
                                   stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        try:
            time.sleep(1)
            assert waiting.poll() is None          # frozen with the container
            assert b.rt("resume", cid).returncode == 0
            assert waiting.communicate(timeout=20)[0] == b"thawed\n"
            assert waiting.returncode == 0
        finally:
            waiting.kill()
            waiting.wait()
        assert b.rt("kill", cid, "KILL").returncode == 0
        for _ in range(100):
            if json.loads(b.rt("state", cid).stdout)["status"] == "stopped":
                break
            time.sleep(0.05)
        p = b.rt("exec", cid, "true")
        assert p.returncode != 0 and "stopped" in p.stderr, p.stderr
    p = b.rt("exec", "no-such-container", "true")
    assert p.returncode != 0 and "does not exist" in p.stderr, p.stderr


ATTACK = r"""#!/bin/sh
# wait for a process running the runtime's own binary, hold its inode, and write
# it once the process is gone (the CVE-2019-5736 attack, reached through exec)
end=$(( $(date +%s) + 15 ))
while [ $(date +%s) -lt $end ]; do
    for p in /proc/[0-9]*; do
        case "$(readlink $p/exe 2>/dev/null)" in
            *busybox*|"") continue ;;
        esac
        exec 3<$p/exe || continue
        echo "holding $(readlink $p/exe)" > /result
        while [ -e $p ]; do :; done
        if (exec 4<>/proc/self/fd/3 && echo pwned >&4); then
            echo overwritten >> /result
        else echo write-failed >> /result; fi
        exit 0
    done
done
echo never-saw-it >> /result
"""


def _exec_attack(b, clear_immutable):
    """The container's init watches for a process running the runtime's binary;
    `exec /evil` (#!/proc/self/exe) gives it one.  The binary must survive."""
    exe = runtime_binary()
    with open(exe, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(b.rootfs, "attack"), "w") as f:
        f.write(ATTACK)
    with open(os.path.join(b.rootfs, "evil"), "w") as f:
        # run as the runtime's binary; with CLEAR=1 it also tries to clear the
        # binary's immutable flag (FS_IOC_SETFLAGS) with CAP_LINUX_IMMUTABLE
        f.write("#!/proc/self/exe\nimport os, time\n"
                "if os.environ.get('CLEAR') == '1':\n"
                "    import fcntl\n"
                "    try:\n"
                "        fd = os.open('/proc/self/exe', os.O_RDONLY)\n"
                "        fcntl.ioctl(fd, 0x40086602, bytes(8))\n"
                "        msg = 'cleared'\n"
                "    except OSError as e:\n"
                "        msg = 'clear-failed: %s' % e\n"
                "    open('/result', 'a').write(msg + '\\n')\n"
                "time.sleep(1)\n")
    for name in ("attack", "evil"):
        os.chmod(os.path.join(b.rootfs, name), 0o755)
    # the attacker brings what the runtime's binary needs to start in the
    # container (its loader, libraries, and for hutch the Python library), so that
    # it runs there for a second; here they are read-only binds of the host's
    cid = b.new_id()
    cfg = _cfg(cid, args=("/attack",))
    for d in ("lib", "lib64"):
        os.symlink(f"usr/{d}", os.path.join(b.rootfs, d))
    for d in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64",
              f"/usr/lib/python{sys.version_info[0]}.{sys.version_info[1]}"):
        if os.path.isdir(d):
            cfg["mounts"].append({"destination": d, "type": "bind", "source": d,
                                  "options": ["rbind", "ro"]})
    cfg["process"]["env"].append(f"CLEAR={int(clear_immutable)}")
    extra = ["CAP_DAC_OVERRIDE", "CAP_FOWNER"]
    if clear_immutable:
        extra.append("CAP_LINUX_IMMUTABLE")
    for k in ("bounding", "effective", "permitted"):
        cfg["process"]["capabilities"][k] += extra
    backup = os.path.join(b.dir, "runtime-binary.bak")
    shutil.copy2(exe, backup)
    immutable = "i" in subprocess.run(["lsattr", exe], capture_output=True,
                                      text=True).stdout.split(" ")[0]
    try:
        with _container(b, cfg, cid):
            time.sleep(0.3)
            # how the exec ends is the runtime's binary's business (a Python
            # script is no program for runc's); what counts is the attacker's report
            b.rt("exec", cid, "/evil", timeout=30)
            result = ""
            for _ in range(100):       # the attacker reports once the exec ended
                try:
                    with open(os.path.join(b.rootfs, "result")) as f:
                        result = f.read()
                except FileNotFoundError:
                    pass
                if "write-failed" in result or "overwritten" in result:
                    break
                time.sleep(0.05)
    finally:
        with open(exe, "rb") as f:
            after = hashlib.sha256(f.read()).hexdigest()
        if after != before:       # the defence failed: put the binary back first
            subprocess.run(["chattr", "-i", exe], capture_output=True)
            shutil.copy2(backup, exe + ".restore")
            os.replace(exe + ".restore", exe)
        if immutable:             # and its flag, if the attack cleared it
            subprocess.run(["chattr", "+i", exe], capture_output=True)
        os.unlink(backup)
    assert after == before, "the runtime's binary on the host was overwritten"
    return result


def test_exec_cannot_overwrite_the_runtime_binary(bundle):
    result = _exec_attack(bundle, clear_immutable=False)
    assert "holding" in result, result     # the attacker did reach the binary
    assert "write-failed" in result and "overwritten" not in result, result


def test_exec_cannot_overwrite_it_even_with_cap_linux_immutable(bundle):
    """A container that may clear the immutable flag gets the read-only clone."""
    result = _exec_attack(bundle, clear_immutable=True)
    assert "holding" in result, result     # the attacker did reach the binary
    assert "write-failed" in result and "overwritten" not in result, result
    assert "cleared" not in result.split(), result
