"""What runc does with the configs and calls real clients send, checked on hutch
and on runc alike: `runc spec`'s default config as it is, older seccomp profiles,
runc's phrases and JSON shapes, and what a process is given."""

import glob
import json
import os
import shutil
import socket
import subprocess
import uuid

import pytest

from conftest import RUNTIME_NAME, base_config, build_static, runc_spec
from test_seccomp import PODMAN_PROFILE, podman_default

NATIVE_CAPS = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def _status_caps(text):
    return {line.split(":")[0]: int(line.split()[1], 16)
            for line in text.splitlines() if line.startswith("Cap")}


def test_runc_spec_default_config_as_it_is(bundle):
    """`runc spec` then run: its three ambient capabilities have no inheritable
    set, so they cannot be raised; the process runs with CapAmb 0."""
    cfg = runc_spec()
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = ["sh", "-c", "grep Cap /proc/self/status"]
    p = bundle.run(cfg)
    assert p.returncode == 0, p.stderr
    caps = _status_caps(p.stdout)
    want = (1 << 29) | (1 << 5) | (1 << 10)
    assert caps == {"CapInh": 0, "CapPrm": want, "CapEff": want, "CapBnd": want,
                    "CapAmb": 0}, p.stdout


def test_ambient_raised_where_inheritable(bundle):
    def m(c):
        c["process"]["capabilities"]["inheritable"] = ["CAP_KILL"]
    p = bundle.sh("grep CapAmb /proc/self/status", m)
    assert p.returncode == 0, p.stderr
    assert _status_caps(p.stdout)["CapAmb"] == 1 << 5


def _older_profile():
    """Podman's default profile without openat2, close_range and clone3, loaded
    without no_new_privs (so before the capability drop): nothing the runtime
    does after loading it may need those calls.  (faccessat2 stays: runc's Go
    looks the program up with it and falls back only on ENOSYS.)"""
    sec = podman_default(NATIVE_CAPS)
    for rule in sec["syscalls"]:
        rule["names"] = [n for n in rule["names"]
                         if n not in ("openat2", "close_range", "clone3")]
    sec["syscalls"] = [r for r in sec["syscalls"] if r["names"]]
    return sec


@pytest.mark.skipif(not os.path.exists(PODMAN_PROFILE), reason="containers-common")
@pytest.mark.parametrize("errno_ret", [None, 6])     # 6: ENXIO
def test_an_older_profile_without_no_new_privs(bundle, errno_ret):
    def m(c):
        c["process"]["noNewPrivileges"] = False
        c["process"]["cwd"] = "/tmp"
        c["linux"]["seccomp"] = _older_profile()
        if errno_ret:
            c["linux"]["seccomp"]["defaultErrnoRet"] = errno_ret
    p = bundle.sh("echo ran; pwd", m)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "ran\n/tmp\n"


ENOSYS_PROG = r"""
#include <errno.h>
#include <stdio.h>
#include <unistd.h>
#include <sys/syscall.h>
int main(void) {
    long r = syscall(1000, 0, 0, 0);
    printf("1000:%ld:%d\n", r, r < 0 ? errno : 0);
    r = syscall(SYS_kexec_load, 0, 0, 0, 0);
    printf("kexec:%ld:%d\n", r, r < 0 ? errno : 0);
    return 0;
}
"""


@pytest.mark.skipif(not os.path.exists(PODMAN_PROFILE), reason="containers-common")
def test_a_syscall_newer_than_the_profile_gets_enosys(bundle):
    """runc's stub: past the newest syscall a profile names, ENOSYS (a program
    falls back); a known syscall the profile leaves out, the default errno."""
    build_static(ENOSYS_PROG, os.path.join(bundle.rootfs, "enosys"))
    cfg = base_config(["/enosys"])
    cfg["linux"]["seccomp"] = podman_default(NATIVE_CAPS)
    p = bundle.run(cfg)
    assert p.returncode == 0, p.stderr
    assert p.stdout.splitlines() == ["1000:-1:38", "kexec:-1:1"], p.stdout


def test_start_container_hook_runs_under_the_filter(bundle):
    def m(c):
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                 "syscalls": [{"names": ["mkdir", "mkdirat"],
                                               "action": "SCMP_ACT_KILL"}]}
        c["hooks"] = {"startContainer": [{"path": "/bin/sh",
                                          "args": ["sh", "-c", "mkdir /tmp/hooked"]}]}
    p = bundle.sh("true", m)
    assert p.returncode != 0
    assert "error running" in p.stderr and "hook" in p.stderr, p.stderr
    assert "bad system call" in p.stderr, p.stderr


def test_notify_on_write_is_refused_up_front(bundle, tmp_path):
    def m(c):
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                 "listenerPath": str(tmp_path / "agent.sock"),
                                 "syscalls": [{"names": ["write"],
                                               "action": "SCMP_ACT_NOTIFY"}]}
    p = bundle.sh("true", m, timeout=20)
    assert p.returncode != 0
    assert "SCMP_ACT_NOTIFY cannot be used for the write syscall" in p.stderr, p.stderr


def test_missing_seccomp_agent(bundle, tmp_path):
    def m(c):
        c["linux"]["seccomp"] = {"defaultAction": "SCMP_ACT_ALLOW",
                                 "listenerPath": str(tmp_path / "nobody.sock"),
                                 "syscalls": [{"names": ["mkdir", "mkdirat"],
                                               "action": "SCMP_ACT_NOTIFY"}]}
    p = bundle.sh("true", m, timeout=20)
    assert p.returncode != 0
    assert "failed to connect with seccomp agent" in p.stderr, p.stderr


def test_proc_on_a_symlink_is_refused(bundle):
    shutil.rmtree(os.path.join(bundle.rootfs, "proc"))
    os.symlink("/symlink", os.path.join(bundle.rootfs, "proc"))
    p = bundle.sh("true")
    assert p.returncode != 0
    assert "must be mounted on ordinary directory" in p.stderr, p.stderr


def test_unified_resources_on_a_host_with_v1(bundle):
    if not glob.glob("/sys/fs/cgroup/memory/"):
        pytest.skip("cgroup v2 alone: unified is allowed")
    cid = bundle.new_id()

    def m(c):
        c["linux"]["cgroupsPath"] = f"/hutch-t-{cid}"
        c["linux"]["resources"] = {"unified": {"memory.min": "131072"}}
    p = bundle.sh("true", m)
    assert p.returncode != 0
    assert "invalid configuration" in p.stderr, p.stderr
    assert not glob.glob(f"/sys/fs/cgroup/*/hutch-t-{cid}")


def test_frozen_cgroup_is_refused_not_waited_on(bundle):
    name = f"hutch-frozen-{uuid.uuid4().hex[:8]}"
    path = f"/sys/fs/cgroup/freezer/{name}"
    os.mkdir(path)
    try:
        with open(f"{path}/freezer.state", "w") as f:
            f.write("FROZEN")

        def m(c):
            c["linux"]["cgroupsPath"] = "/" + name
        cfg = base_config(["true"])
        m(cfg)
        bundle.write(cfg)
        cid = bundle.new_id()
        p = bundle.rt("run", "-d", "--bundle", bundle.dir, cid, timeout=20)
        assert p.returncode != 0
        assert "container's cgroup unexpectedly frozen" in p.stderr, p.stderr
        assert os.path.isdir(path)      # not ours: left for its owner
    finally:
        with open(f"{path}/freezer.state", "w") as f:
            f.write("THAWED")
        for d in sorted(glob.glob(f"/sys/fs/cgroup/*/{name}"), reverse=True):
            os.rmdir(d)


def test_a_device_node_is_not_allowed_by_itself(bundle):
    """linux.devices makes /dev/kmsg; only resources.devices may allow it."""
    def m(c):
        c["linux"]["resources"] = {"devices": [{"allow": False, "access": "rwm"}]}
        c["linux"]["devices"] = [{"path": "/dev/kmsg", "type": "c", "major": 1,
                                  "minor": 11}]
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k] += ["CAP_SYSLOG"]
    p = bundle.sh("test -c /dev/kmsg && echo node; head -n 1 /dev/kmsg 2>&1; true", m)
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("node\n") and "Operation not permitted" in p.stdout, \
        p.stdout


def test_resources_keys_in_any_case(bundle):
    cid = bundle.new_id()
    cg = f"hutch-t-{cid}"

    def m(c):
        c["linux"]["cgroupsPath"] = "/" + cg
        c["linux"]["resources"] = {"CPU": {"Shares": 512}, "Pids": {"LIMIT": 42},
                                   "unknownThing": {"x": 1}}
    cfg = base_config(["sleep", "100"])
    m(cfg)
    bundle.write(cfg)
    assert bundle.rt("run", "-d", "--bundle", bundle.dir, cid).returncode == 0
    try:
        with open(f"/sys/fs/cgroup/cpu/{cg}/cpu.shares") as f:
            assert f.read().strip() == "512"
        with open(f"/sys/fs/cgroup/pids/{cg}/pids.max") as f:
            assert f.read().strip() == "42"
        p = bundle.rt("update", "-r", "-", cid, input='{"PIDS": {"Limit": 43}}')
        assert p.returncode == 0, p.stderr
        with open(f"/sys/fs/cgroup/pids/{cg}/pids.max") as f:
            assert f.read().strip() == "43"
    finally:
        bundle.rt("delete", "-f", cid)


def test_json_shapes_and_stopped_containers(bundle):
    b = bundle
    p = b.rt("list", "--format", "json")
    assert p.returncode == 0 and p.stdout == "null\n", p.stdout
    b.write(base_config(["sleep", "100"]))
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    try:
        line = b.rt("list", "--format", "json").stdout
        items = json.loads(line)
        assert list(items[0]) == ["ociVersion", "id", "pid", "status", "bundle",
                                  "rootfs", "created", "owner"], line
        assert ": " not in line and ", " not in line          # compact
        st = b.rt("events", "--stats", cid).stdout
        assert st.startswith('{"type":"stats","id":"' + cid + '","data":{'), st
        assert b.rt("kill", cid, "0").returncode == 0         # is it there?
        assert b.rt("kill", cid, "KILL").returncode == 0
        for _ in range(100):
            if json.loads(b.rt("state", cid).stdout)["status"] == "stopped":
                break
        p = b.rt("ps", "--format", "json", cid)
        assert p.returncode == 0 and p.stdout == "null\n", (p.stdout, p.stderr)
        p = b.rt("ps", cid)
        assert p.returncode == 0 and p.stdout.split()[:2] == ["UID", "PID"], p.stdout
        assert len(p.stdout.splitlines()) == 1
    finally:
        b.rt("delete", "-f", cid)


def test_exec_pid_file_in_a_missing_directory(bundle):
    b = bundle
    b.write(base_config(["sleep", "100"]))
    cid = b.new_id()
    assert b.rt("run", "-d", "--bundle", b.dir, cid).returncode == 0
    try:
        p = b.rt("exec", "--pid-file", "/nonexistent/dir/x", cid, "true")
        assert p.returncode == 255, (p.returncode, p.stderr)
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "exec failed" in lines[0], p.stderr
        assert "no such file or directory" in lines[0].lower()
        assert "Traceback" not in p.stderr
    finally:
        b.rt("delete", "-f", cid)


def test_the_terminal_belongs_to_the_user(bundle, tmp_path):
    """A uid-1000 process's tty is its own (the group stays tty), as with runc."""
    from test_process_io import _read_until
    b = bundle
    cfg = base_config(["sh", "-c", "ls -ln $(tty) | awk '{print $3, $4}'; sleep 1"])
    cfg["process"]["terminal"] = True
    cfg["process"]["user"] = {"uid": 1000, "gid": 1000}
    b.write(cfg)
    cid = b.new_id()
    path = str(tmp_path / "console.sock")
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(1)
    try:
        p = b.rt("run", "-d", "--console-socket", path, "--bundle", b.dir, cid)
        assert p.returncode == 0, p.stderr
        conn, _ = srv.accept()
        _, fds, _, _ = socket.recv_fds(conn, 4096, 1)
        conn.close()
        try:
            out = _read_until(fds[0], b"\n")
        finally:
            os.close(fds[0])
        assert out.split()[:2] == [b"1000", b"5"], out
    finally:
        srv.close()
        b.rt("delete", "-f", cid)


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_debug_lines(bundle, fmt):
    """--debug writes debug lines (logrus' shape), to --log when given."""
    b = bundle
    b.write(base_config(["true"]))
    cid = b.new_id()
    p = b.rt("run", "--bundle", b.dir, cid, glob=("--debug",))
    assert p.returncode == 0, p.stderr
    assert "level=debug" in p.stderr and "child process in init()" in p.stderr, p.stderr
    log = os.path.join(b.dir, "debug.log")
    cid = b.new_id()
    p = b.rt("run", "--bundle", b.dir, cid,
             glob=("--log", log, "--log-format", fmt, "--debug"))
    assert p.returncode == 0 and "level=debug" not in p.stderr, p.stderr
    with open(log) as f:
        text = f.read()
    assert ('"level":"debug"' if fmt == "json" else "level=debug") in text, text
    assert "nsexec container setup" in text


def test_mount_and_uts_namespaces_joined_by_path(bundle):
    """A config that joins another process's mount and uts namespaces: the
    process runs in them with the bundle's root, and the hostname is set in
    the joined uts namespace."""
    import time
    holder = subprocess.Popen(["unshare", "--mount", "--uts", "sleep", "100"],
                              stdin=subprocess.DEVNULL)
    cid = bundle.new_id()
    try:
        for _ in range(100):
            if os.readlink(f"/proc/{holder.pid}/ns/uts") != \
                    os.readlink("/proc/self/ns/uts"):
                break
            time.sleep(0.02)
        cfg = base_config(["sleep", "100"])
        ns = [n for n in cfg["linux"]["namespaces"] if n["type"] not in ("mount", "uts")]
        cfg["linux"]["namespaces"] = ns + [
            {"type": "mount", "path": f"/proc/{holder.pid}/ns/mnt"},
            {"type": "uts", "path": f"/proc/{holder.pid}/ns/uts"}]
        cfg["linux"].pop("maskedPaths", None)
        cfg["linux"].pop("readonlyPaths", None)
        cfg["hostname"] = "joined-uts"
        bundle.write(cfg)
        p = bundle.rt("run", "-d", "--bundle", bundle.dir, cid)
        assert p.returncode == 0, p.stderr
        pid = json.loads(bundle.rt("state", cid).stdout)["pid"]
        for t in ("mnt", "uts"):
            assert os.readlink(f"/proc/{pid}/ns/{t}") == \
                os.readlink(f"/proc/{holder.pid}/ns/{t}"), t
        assert os.path.samefile(f"/proc/{pid}/root/bin/busybox",
                                os.path.join(bundle.rootfs, "bin", "busybox"))
        got = subprocess.run(["nsenter", "-t", str(holder.pid), "--uts", "hostname"],
                             capture_output=True, text=True).stdout
        assert got == "joined-uts\n"
    finally:
        bundle.rt("delete", "-f", cid)
        holder.kill()
        holder.wait()


@pytest.mark.xfail(RUNTIME_NAME == "runc", strict=True,
                   reason="runc 1.1.5 makes / unbindable before it binds the rootfs "
                          "onto itself: EINVAL")
def test_unbindable_rootfs_propagation(bundle):
    def m(c):
        c["linux"]["rootfsPropagation"] = "unbindable"
    p = bundle.sh("awk '$5 == \"/\"' /proc/self/mountinfo", m)
    assert p.returncode == 0, p.stderr
    assert "unbindable" in p.stdout, p.stdout


def test_no_pivot_does_not_expose_the_hosts_proc(bundle):
    """With --no-pivot the host's mounts stay below the container's root: a new
    user namespace inside must still not be able to mount a fresh procfs."""
    def m(c):
        for k in ("bounding", "permitted"):
            c["process"]["capabilities"][k] += ["CAP_SETFCAP"]
    cfg = base_config(["unshare", "-mrpf", "sh", "-c",
                       "mount -t proc none /proc && echo mounted"])
    m(cfg)
    bundle.write(cfg)
    p = bundle.rt("run", "--no-pivot", "--bundle", bundle.dir, bundle.new_id())
    assert p.returncode != 0 and "mounted" not in p.stdout
    assert "permission denied" in (p.stdout + p.stderr).lower(), (p.stdout, p.stderr)


def test_userns_bind_of_a_source_only_root_can_reach(bundle, tmp_path):
    """A container in a user namespace (its root an unprivileged host uid) binds
    a directory behind a 0700 root-owned one: the runtime opens it for it."""
    hidden = tmp_path / "hidden"
    (hidden / "dir").mkdir(parents=True)
    (hidden / "dir" / "f").write_text("reached\n")
    os.chmod(hidden, 0o700)
    from test_container import _world_traversable
    _world_traversable(bundle.rootfs)

    def m(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"].append({"destination": "/root", "type": "bind",
                            "source": str(hidden / "dir"), "options": ["bind"]})
        c["mounts"] = [mm for mm in c["mounts"] if mm["type"] != "cgroup"]
    p = bundle.sh("cat /root/f", m)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "reached\n"
