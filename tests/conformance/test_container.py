"""What the container sees: process settings, namespaces, mounts, /dev, hooks and
errors, each checked inside the container."""

import hashlib
import json
import os
import subprocess

import pytest

from conftest import RUNTIME_NAME, base_config, runtime_binary


def out(p):
    assert p.returncode == 0, p.stderr
    return p.stdout


def test_args_env_cwd_user(bundle):
    def m(c):
        c["process"]["env"].append("GREETING=hi there")
        c["process"]["cwd"] = "/tmp"
        c["process"]["user"] = {"uid": 1000, "gid": 1000, "additionalGids": [5, 7],
                                "umask": 0o027}
    o = out(bundle.sh('echo "$GREETING|$(pwd)|$HOME"; id -u; id -g; '
                      'grep Groups /proc/self/status; umask', m))
    lines = o.split("\n")
    assert lines[0] == "hi there|/tmp|/home/app"
    assert lines[1:3] == ["1000", "1000"]
    assert lines[3].split()[1:] == ["5", "7"]
    assert lines[4].endswith("027")


def test_capabilities_and_no_new_privs(bundle):
    def m(c):
        caps = ["CAP_KILL", "CAP_NET_RAW"]
        c["process"]["capabilities"] = {"bounding": caps, "effective": caps,
                                        "permitted": caps, "inheritable": [],
                                        "ambient": []}
    o = out(bundle.sh("grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs)' /proc/self/status", m))
    vals = dict(line.split(":\t") for line in o.strip().split("\n"))
    want = f"{(1 << 5) | (1 << 13):016x}"
    assert vals["CapEff"] == vals["CapPrm"] == vals["CapBnd"] == want
    assert vals["NoNewPrivs"] == "1"


def test_all_five_capability_sets_exactly(bundle):
    """A non-root user: after execve the kernel keeps bounding and inheritable as
    set, and permitted and effective become the ambient set (no file caps)."""
    def m(c):
        c["process"]["user"] = {"uid": 1000, "gid": 1000}
        c["process"]["capabilities"] = {
            "bounding": ["CAP_KILL", "CAP_NET_RAW", "CAP_CHOWN", "CAP_SETUID"],
            "permitted": ["CAP_KILL", "CAP_NET_RAW", "CAP_CHOWN"],
            "effective": ["CAP_KILL", "CAP_NET_RAW"],
            "inheritable": ["CAP_KILL", "CAP_NET_RAW", "CAP_CHOWN"],
            "ambient": ["CAP_KILL", "CAP_NET_RAW"]}
    o = out(bundle.sh("grep -E '^Cap' /proc/self/status", m))
    vals = {k: int(v, 16) for k, v in (line.split(":\t") for line in o.split("\n")
                                       if line)}
    kill, raw, chown, setuid = 1 << 5, 1 << 13, 1 << 0, 1 << 7
    assert vals["CapBnd"] == kill | raw | chown | setuid
    assert vals["CapInh"] == kill | raw | chown
    assert vals["CapAmb"] == kill | raw
    assert vals["CapPrm"] == vals["CapEff"] == kill | raw


@pytest.mark.xfail(RUNTIME_NAME == "runc", strict=True,
                   reason="runc warns and ignores unknown capabilities; hutch refuses")
def test_unknown_capability_is_one_clear_error(bundle):
    def m(c):
        c["process"]["capabilities"]["effective"].append("CAP_TELEPATHY")
    p = bundle.sh("true", m)
    assert p.returncode != 0 and "CAP_TELEPATHY" in p.stderr
    assert len(p.stderr.strip().splitlines()) == 1


def test_unavailable_capability_is_refused(bundle):
    if RUNTIME_NAME != "hutch":
        pytest.skip("hutch's documented choice")
    with open("/proc/self/status") as f:
        bnd = [int(line.split()[1], 16) for line in f if line.startswith("CapBnd")][0]
    if bnd >> 24 & 1:
        pytest.skip("this host can grant CAP_SYS_RESOURCE")
    def m(c):
        c["process"]["capabilities"]["bounding"].append("CAP_SYS_RESOURCE")
    p = bundle.sh("true", m)
    assert p.returncode != 0 and "CAP_SYS_RESOURCE" in p.stderr


def test_rlimits_and_oom_score(bundle):
    def m(c):
        c["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "soft": 512, "hard": 1000},
                                   {"type": "RLIMIT_NPROC", "soft": 300, "hard": 400}]
        c["process"]["oomScoreAdj"] = 123
    o = out(bundle.sh("ulimit -n; ulimit -Hn; cat /proc/self/oom_score_adj; "
                      "grep 'Max processes' /proc/self/limits", m))
    lines = o.split("\n")
    assert lines[:3] == ["512", "1000", "123"]
    assert lines[3].split()[2:4] == ["300", "400"]


def test_no_fd_leaks_and_preserved_fds(bundle):
    o = out(bundle.sh("ls /proc/self/fd"))
    assert sorted(int(x) for x in o.split()) == [0, 1, 2, 3]  # 3: ls's own dir fd
    # --preserve-fds 1 passes fd 3 through (a shell puts our pipe at fd 3)
    from conftest import RUNTIME
    r, w = os.pipe()
    b = bundle
    b.write(base_config(["sh", "-c", "echo through-fd3 >&3"]))
    cid = b.new_id()
    cmd = RUNTIME + ["--root", b.root, "run", "--preserve-fds", "1", "--bundle", b.dir,
                     cid]
    p = subprocess.run(cmd, preexec_fn=lambda: os.dup2(w, 3), pass_fds=(3,),
                       capture_output=True, timeout=30, stdin=subprocess.DEVNULL)
    os.close(w)
    assert p.returncode == 0, p.stderr
    assert os.read(r, 100) == b"through-fd3\n"
    os.close(r)


def test_namespaces_hostname_and_pid1(bundle):
    def m(c):
        c["hostname"] = "boxy"
        c["domainname"] = "example.org"
    o = out(bundle.sh("hostname; cat /proc/sys/kernel/domainname; echo $$; "
                      "ip -o link | cut -d: -f2", m))
    lines = o.split("\n")
    assert lines[0] == "boxy" and lines[2] == "1"
    if RUNTIME_NAME != "runc":      # runc 1.1 ignores domainname
        assert lines[1] == "example.org"
    assert [x.strip() for x in lines[3:] if x.strip()] == ["lo"]


def test_host_namespaces_differ(bundle):
    def m(c):       # runc spec adds no cgroup namespace on a host with cgroup v1
        if {"type": "cgroup"} not in c["linux"]["namespaces"]:
            c["linux"]["namespaces"].append({"type": "cgroup"})
    o = out(bundle.sh("for n in pid net mnt ipc uts cgroup; do readlink /proc/self/ns/$n; "
                      "done", m))
    for name, link in zip(("pid", "net", "mnt", "ipc", "uts", "cgroup"), o.split()):
        assert link != os.readlink(f"/proc/self/ns/{name}"), name


def _world_traversable(path):
    """The container's root is an unprivileged host uid: let it reach the bundle."""
    while path not in ("/", "/tmp"):
        os.chmod(path, os.stat(path).st_mode | 0o011)
        path = os.path.dirname(path)


def test_user_namespace_mapping(bundle):
    _world_traversable(bundle.rootfs)

    def m(c):
        c["linux"]["namespaces"].append({"type": "user"})
        c["linux"]["uidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["linux"]["gidMappings"] = [{"containerID": 0, "hostID": 100000, "size": 65536}]
        c["mounts"] = [x for x in c["mounts"] if x["type"] not in ("cgroup",)]
        for x in c["mounts"]:
            if x["type"] == "devpts":
                x["options"] = [o for o in x["options"] if o != "gid=5"]
    o = out(bundle.sh("cat /proc/self/uid_map /proc/self/gid_map; id -u", m))
    lines = [line.split() for line in o.strip().split("\n")]
    assert lines[0] == ["0", "100000", "65536"]
    assert lines[1] == ["0", "100000", "65536"]
    assert lines[2] == ["0"]


@pytest.mark.skipif(RUNTIME_NAME == "runc", reason="runc 1.1 has no time namespace")
def test_time_namespace_offsets(bundle):
    def m(c):
        c["linux"]["namespaces"].append({"type": "time"})
        c["linux"]["timeOffsets"] = {"boottime": {"secs": 86400 * 10, "nanosecs": 0}}
    o = out(bundle.sh("cut -d. -f1 /proc/uptime", m))
    with open("/proc/uptime") as f:
        host = int(float(f.read().split()[0]))
    assert int(o) - host >= 86400 * 10 - 5


def test_join_network_namespace_by_path(bundle):
    name = "hutch-test-" + os.urandom(3).hex()
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        path = f"/run/netns/{name}"
        ino = os.stat(path).st_ino

        def m(c):
            for n in c["linux"]["namespaces"]:
                if n["type"] == "network":
                    n["path"] = path
        o = out(bundle.sh("readlink /proc/self/ns/net", m))
        assert o.strip() == f"net:[{ino}]"
    finally:
        subprocess.run(["ip", "netns", "delete", name], check=True)


def test_sysctl(bundle):
    def m(c):
        c["linux"]["sysctl"] = {"net.ipv4.ip_forward": "1", "kernel.shmmni": "1234"}
    o = out(bundle.sh("cat /proc/sys/net/ipv4/ip_forward /proc/sys/kernel/shmmni", m))
    assert o.split() == ["1", "1234"]
    with open("/proc/sys/kernel/shmmni") as f:
        assert f.read().strip() != "1234"


def test_sysctl_outside_namespace_refused(bundle):
    def m(c):
        c["linux"]["sysctl"] = {"kernel.panic": "5"}
    p = bundle.sh("true", m)
    assert p.returncode != 0 and "kernel.panic" in p.stderr


def test_mounts_flags_and_readonly_root(bundle, tmp_path):
    host_dir = tmp_path / "shared"
    host_dir.mkdir()
    (host_dir / "file").write_text("from host")

    def m(c):
        c["root"]["readonly"] = True
        c["mounts"].append({"destination": "/data", "type": "bind",
                            "source": str(host_dir), "options": ["rbind", "ro", "nosuid"]})
        c["mounts"].append({"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
                            "options": ["noexec", "nodev", "size=1m", "mode=700"]})
    o = out(bundle.sh("cat /data/file; echo; touch /x 2>/dev/null || echo root-ro; "
                      "touch /data/y 2>/dev/null || echo data-ro; touch /scratch/ok && "
                      "echo scratch-rw; grep -E ' /(data|scratch) ' /proc/self/mountinfo",
                      m))
    lines = o.split("\n")
    assert lines[:4] == ["from host", "root-ro", "data-ro", "scratch-rw"]
    data = [x for x in lines if " /data " in x][0].split()
    scratch = [x for x in lines if " /scratch " in x][0]
    assert "ro" in data[5].split(",") and "nosuid" in data[5].split(",")
    assert "noexec" in scratch and "size=1024k" in scratch and "mode=700" in scratch
    assert not (host_dir / "y").exists()


def test_masked_and_readonly_paths(bundle):
    o = out(bundle.sh("wc -c < /proc/timer_list; ls /sys/firmware | wc -l; "
                      "echo 1 > /proc/sysrq-trigger 2>/dev/null || echo sysrq-denied; "
                      "echo 1 > /proc/sys/kernel/shmmni 2>/dev/null || echo sys-ro"))
    assert o.split("\n")[:4] == ["0", "0", "sysrq-denied", "sys-ro"]


def test_devices(bundle):
    def m(c):
        c["linux"]["devices"] = [{"path": "/dev/fuse", "type": "c", "major": 10,
                                  "minor": 229, "fileMode": 0o600, "uid": 0, "gid": 0}]
    o = out(bundle.sh("for d in null zero full random urandom tty fuse; do "
                      "stat -c '%n %F %t:%T %a' /dev/$d; done; for l in fd stdin ptmx; do "
                      "readlink /dev/$l; done", m))
    lines = o.strip().split("\n")
    assert lines[0] == "/dev/null character special file 1:3 666"
    assert lines[6] == "/dev/fuse character special file a:e5 600"
    assert lines[7:] == ["/proc/self/fd", "/proc/self/fd/0", "pts/ptmx"]


def test_denied_device_cannot_be_opened(bundle):
    def m(c):
        c["root"]["readonly"] = False
        c["linux"]["resources"] = {"devices": [
            {"allow": False, "access": "rwm"},
            {"allow": True, "type": "b", "major": 7, "access": "m"}]}
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k].append("CAP_MKNOD")
    o = out(bundle.sh("mknod /tmp/blk b 7 0 && echo made; head -c1 /tmp/blk "
                      "2>/dev/null || echo denied", m))
    assert o.split() == ["made", "denied"]


def test_mount_symlink_cannot_escape(bundle, tmp_path):
    victim = tmp_path / "victim"
    victim.mkdir()
    os.symlink(str(victim), os.path.join(bundle.rootfs, "escape"))
    os.symlink("../../../../../../" + str(victim).lstrip("/"),
               os.path.join(bundle.rootfs, "escape2"))

    def m(c):
        c["mounts"].append({"destination": "/escape", "type": "tmpfs", "source": "tmpfs"})
        c["mounts"].append({"destination": "/escape2", "type": "tmpfs", "source": "tmpfs"})
    p = bundle.sh("touch /escape/inside /escape2/inside2; echo ok", m)
    assert not os.listdir(victim), "a mount escaped the rootfs"
    if RUNTIME_NAME == "runc":
        # runc (securejoin) makes the target where the symlink points, in the rootfs
        assert p.returncode == 0 and p.stdout == "ok\n", p.stderr
        assert os.path.isdir(os.path.join(bundle.rootfs, str(victim).lstrip("/")))
    else:
        # hutch makes no directory through a symlink: the target must exist
        assert p.returncode != 0, p.stdout
        assert "create /escape in the container rootfs: it is a dangling symlink" \
            in p.stderr, p.stderr


def test_missing_executable_error(bundle):
    p = bundle.run(base_config(["no-such-command"]))
    assert p.returncode != 0
    assert "executable file not found" in p.stderr
    # the failed run leaves no container behind
    cid = bundle.ids[-1]
    assert not os.path.exists(os.path.join(bundle.root, cid))
    p = bundle.rt("state", cid)
    assert p.returncode != 0 and "container does not exist" in p.stderr, p.stderr


def test_error_json_log(bundle):
    log = os.path.join(bundle.dir, "log.json")
    bundle.write(base_config(["no-such-command"]))
    cid = bundle.new_id()
    p = bundle.rt("create", "--bundle", bundle.dir, cid,
                  glob=("--log", log, "--log-format", "json"))
    assert p.returncode != 0
    with open(log) as f:
        lines = [json.loads(x) for x in f if x.strip()]
    errs = [x for x in lines if x["level"] == "error"]
    assert errs and "executable file not found" in errs[-1]["msg"]
    assert set(errs[-1]) >= {"level", "msg", "time"}


def test_failed_create_leaves_nothing(bundle):
    def m(c):
        c["mounts"].append({"destination": "/x", "type": "bind",
                            "source": "/nonexistent-hutch-src", "options": ["bind"]})
    b = bundle
    cfg = base_config(["true"])
    m(cfg)
    b.write(cfg)
    cid = b.new_id()
    p = b.rt("create", "--bundle", b.dir, cid)
    assert p.returncode != 0
    assert "/nonexistent-hutch-src" in p.stderr, p.stderr
    assert "no such file or directory" in p.stderr.lower(), p.stderr
    assert not os.path.exists(os.path.join(b.root, cid))
    for ctrl in os.listdir("/sys/fs/cgroup"):
        assert not os.path.exists(f"/sys/fs/cgroup/{ctrl}/hutch/{cid}")


def test_hooks(bundle, tmp_path):
    marks = tmp_path / "hooks"
    marks.mkdir()
    script = tmp_path / "hook.sh"
    script.write_text(f"#!/bin/sh\ncat > {marks}/$1.json\n")
    script.chmod(0o755)
    b = bundle
    cfg = base_config(["true"])
    cfg["hooks"] = {k: [{"path": str(script), "args": ["hook.sh", k]}]
                    for k in ("prestart", "createRuntime", "poststart", "poststop")}
    b.write(cfg)
    cid = b.new_id()
    assert b.rt("create", "--bundle", b.dir, cid).returncode == 0
    st = json.loads((marks / "createRuntime.json").read_text())
    assert st["id"] == cid and st["pid"] > 0
    assert (marks / "prestart.json").exists()
    assert b.rt("start", cid).returncode == 0
    assert json.loads((marks / "poststart.json").read_text())["id"] == cid
    assert b.rt("delete", "--force", cid).returncode == 0
    assert json.loads((marks / "poststop.json").read_text())["id"] == cid


def test_failing_hook_fails_create(bundle):
    cfg = base_config(["true"])
    cfg["hooks"] = {"createRuntime": [{"path": "/bin/false"}]}
    bundle.write(cfg)
    cid = bundle.new_id()
    p = bundle.rt("create", "--bundle", bundle.dir, cid)
    assert p.returncode != 0
    # runc goes on with ": error running hook: exit status 1, stdout: , stderr: ",
    # hutch with " (createRuntime, /bin/false): exit status 1"
    assert "error running hook #0" in p.stderr and "exit status 1" in p.stderr, p.stderr
    assert not os.path.exists(os.path.join(bundle.root, cid))


def test_interpreter_cannot_be_overwritten(bundle):
    """CVE-2019-5736: a `#!/proc/self/exe` program makes the runtime execute its
    own binary inside the container; the container then tries to write it."""
    exe = runtime_binary()
    with open(exe, "rb") as f:
        before = hashlib.sha256(f.read()).hexdigest()
    with open(os.path.join(bundle.rootfs, "evil"), "w") as f:
        f.write("#!/proc/self/exe\n")
    os.chmod(os.path.join(bundle.rootfs, "evil"), 0o755)
    # the attacker: once the runtime's binary runs as the container's init, open it
    # through /proc/1/exe and try to write it
    def m(c):
        c["root"]["readonly"] = False
        for k in ("bounding", "effective", "permitted"):
            c["process"]["capabilities"][k] += ["CAP_DAC_OVERRIDE", "CAP_SYS_PTRACE"]
    att = os.path.join(bundle.rootfs, "attack")
    with open(att, "w") as f:
        f.write("#!/bin/sh\n(sleep 0.2; exec 3<>/proc/1/exe && echo WROTE >&3 && "
                "echo overwritten || echo write-failed) > /tmp/result 2>&1 &\n"
                "exec /evil\n")
    os.chmod(att, 0o755)
    cfg = base_config(["/attack"])
    m(cfg)
    backup = bundle.dir + "/runtime-binary.bak"
    __import__("shutil").copy2(exe, backup)
    bundle.run(cfg, timeout=30)
    with open(exe, "rb") as f:
        after = hashlib.sha256(f.read()).hexdigest()
    if after != before:
        # the defence failed: put the host's binary back before failing
        __import__("shutil").copy2(backup, exe + ".restore")
        os.replace(exe + ".restore", exe)
    os.unlink(backup)
    assert after == before, "the runtime's binary on the host was overwritten"


def test_rbind_takes_submounts_and_bind_does_not(bundle, tmp_path):
    src = tmp_path / "tree"
    (src / "sub").mkdir(parents=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "hutch-test", str(src / "sub")],
                   check=True)
    try:
        (src / "sub" / "inner").write_text("submount")

        def m(c):
            c["mounts"].append({"destination": "/r", "type": "bind", "source": str(src),
                                "options": ["rbind", "rprivate"]})
            c["mounts"].append({"destination": "/b", "type": "bind", "source": str(src),
                                "options": ["bind"]})
        o = out(bundle.sh("cat /r/sub/inner; echo; ls -A /b/sub | wc -l", m))
        assert o.split() == ["submount", "0"]
    finally:
        subprocess.run(["umount", str(src / "sub")], check=True)
