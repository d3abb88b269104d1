"""Engines drive the runtime for real: Podman (through conmon) and containerd
(through its runc v2 shim with BinaryName = the runtime).

Everything the engines make lives in places the tests own and is removed
afterwards:
- one private network namespace for the whole tier (`nsenter --net`), so that
  netavark's bridge, iptables rules and ip_forward never touch the host's;
- Podman's storage, run and tmp directories, its containers.conf and network
  config directory, under a temporary directory;
- containerd's root, state, sockets and the shim's runtime root, likewise, with
  containerd itself started for the session and stopped after it;
- the few host paths the engines insist on (/run/containers, /var/lib/containers,
  /etc/containers/networks, the conmon cgroup) are removed if the session made them.

HUTCH_TEST_RUNTIME=runc runs the same tests against runc.  The test modules take
the session's `engines` as a parameter; engines.image is the busybox image both
engines have, engines.runtime the file they execute.
"""

import os
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import IS_ROOT, RUNTIME, RUNTIME_NAME

IMAGE = "localhost/busybox:latest"
HOST_PATHS = ("/run/containers", "/var/lib/containers", "/etc/containers/networks",
              "/run/containerd")


def _need(*tools):
    missing = [t for t in tools if shutil.which(t) is None]
    if missing:
        pytest.fail(f"the e2e tier needs {', '.join(missing)}: ./setup.sh installs "
                    "them (podman, containerd from Debian)")


class Engines:
    def __init__(self, work):
        self.work = work
        self.env = dict(os.environ)
        self.containerd = None
        self.netns = "hutch-e2e-" + uuid.uuid4().hex[:6]
        self.name = RUNTIME_NAME if RUNTIME_NAME in ("hutch", "runc") else "ocirt"
        self.runtime = RUNTIME[0]      # hutch's launcher, or the runtime under test
        self.image = IMAGE

    # --- the private network namespace ---------------------------------------------
    def net(self):
        return ["nsenter", f"--net=/run/netns/{self.netns}"]

    def sh(self, *cmd, timeout=120, input=None, check=False):
        """A command in the private network namespace; output via files (a detached
        container keeps its stdio open).  It runs in the work directory: conmon
        inherits its cwd and makes a file named oom there when a container is
        OOM-killed (it was left at the repository's root)."""
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(self.net() + [str(c) for c in cmd], stdout=out,
                               stderr=err, timeout=timeout, env=self.env, cwd=self.work,
                               input=input.encode() if input is not None else None,
                               stdin=None if input is not None else subprocess.DEVNULL)
            out.seek(0)
            err.seek(0)
            p.stdout, p.stderr = out.read().decode(errors="replace"), \
                err.read().decode(errors="replace")
        if check:
            assert p.returncode == 0, (cmd, p.returncode, p.stderr)
        return p

    # --- podman ------------------------------------------------------------------------
    def podman_cmd(self):
        w = self.work
        return ["podman", "--root", f"{w}/storage", "--runroot", f"{w}/run",
                "--tmpdir", f"{w}/tmp", "--runtime", self.name]

    def podman(self, *args, **kw):
        return self.sh(*self.podman_cmd(), *args, **kw)

    # --- containerd ---------------------------------------------------------------------
    def ctr(self, *args, **kw):
        return self.sh("ctr", "--address", f"{self.work}/containerd/containerd.sock",
                       "--namespace", "hutch-e2e", *args, **kw)

    def ctr_run(self, *args, **kw):
        """`ctr run` with the runc v2 shim executing the runtime under test."""
        return self.ctr("run", "--runtime", "io.containerd.runc.v2", "--runc-binary",
                        self.runtime, "--runc-root", f"{self.work}/containerd/runc",
                        *args, **kw)


def _setup(e):
    w = e.work
    subprocess.run(["ip", "netns", "add", e.netns], check=True)
    subprocess.run(["ip", "netns", "exec", e.netns, "ip", "link", "set", "lo", "up"],
                   check=True)
    nf = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True,
                        text=True).stdout.strip()
    os.makedirs(f"{w}/networks")
    conf = f"{w}/containers.conf"
    with open(conf, "w") as f:
        f.write(f"""[containers]
# no CAP_SYS_RESOURCE on this host: rlimits at or below the current hard limits
default_ulimits = ["nofile={nf}:{nf}", "nproc=32768:32768"]

[engine]
cgroup_manager = "cgroupfs"
events_logger = "file"
runtime_supports_json = ["crun", "runc", "kata", "runsc", "krun", "hutch", "ocirt"]

[engine.runtimes]
{e.name} = ["{e.runtime}"]

[network]
network_config_dir = "{w}/networks"
""")
    e.env = dict(os.environ, CONTAINERS_CONF=conf)
    # the image: busybox-static, imported (no registry here)
    root = f"{w}/bbroot"
    for d in ("bin", "etc", "proc", "sys", "dev", "tmp", "root", "run", "www"):
        os.makedirs(f"{root}/{d}")
    shutil.copy("/bin/busybox", f"{root}/bin/busybox")
    for a in subprocess.run(["/bin/busybox", "--list"], capture_output=True,
                            text=True).stdout.split():
        if a != "busybox":
            os.symlink("busybox", f"{root}/bin/{a}")
    with open(f"{root}/etc/passwd", "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/tmp:/bin/sh\n")
    with open(f"{root}/etc/group", "w") as f:
        f.write("root:x:0:\napp:x:1000:\n")
    os.chmod(f"{root}/tmp", 0o1777)
    subprocess.run(["tar", "-C", root, "-cf", f"{w}/bb.tar", "."], check=True)
    e.podman("import", "--change", 'CMD ["/bin/sh"]', "--change",
             "ENV PATH=/usr/sbin:/usr/bin:/sbin:/bin", f"{w}/bb.tar", IMAGE, check=True)
    e.podman("save", "--format", "docker-archive", "-o", f"{w}/bb-docker.tar", IMAGE,
             check=True)


def _start_containerd(e):
    d = f"{e.work}/containerd"
    os.makedirs(f"{d}/root")
    os.makedirs(f"{d}/state")
    with open(f"{d}/config.toml", "w") as f:
        f.write(f"""version = 2
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  address = "{d}/debug.sock"
""")
    log = open(f"{d}/containerd.log", "w")
    e.containerd = subprocess.Popen(e.net() + ["containerd", "--config",
                                               f"{d}/config.toml"],
                                    stdout=log, stderr=log, stdin=subprocess.DEVNULL,
                                    cwd=e.work)
    for _ in range(100):
        if e.ctr("version").returncode == 0:
            break
        time.sleep(0.1)
    e.ctr("images", "import", f"{e.work}/bb-docker.tar", check=True)


def _teardown(e, before):
    if e.containerd is not None:
        for c in e.ctr("containers", "ls", "-q").stdout.split():
            e.ctr("task", "kill", "-a", "-s", "SIGKILL", c)
            time.sleep(0.2)
            e.ctr("task", "rm", "-f", c)
            e.ctr("containers", "rm", c)
        e.containerd.terminate()
        try:
            e.containerd.wait(10)
        except subprocess.TimeoutExpired:
            e.containerd.kill()
            e.containerd.wait()
    e.podman("rm", "-af", "-t", "0")
    e.podman("system", "reset", "-f")
    subprocess.run(["ip", "netns", "del", e.netns])
    for p in HOST_PATHS:
        if p not in before and os.path.exists(p):
            shutil.rmtree(p, ignore_errors=True)
    # the engines' parent cgroups (Podman's libpod_parent with conmon's, and
    # containerd's per-namespace one, which runc leaves behind), if the session made them
    for d in _cgroup_dirs("libpod_parent") + _cgroup_dirs("hutch-e2e"):
        if d not in before:
            if os.path.ismount(os.path.dirname(d)):
                _rmdirs(d)
            else:       # under a plain directory (below): conmon's files with it
                shutil.rmtree(d, ignore_errors=True)
    # conmon makes its cgroup in every controller the kernel lists, mounted or
    # not: on this host that is plain directories on /sys/fs/cgroup's tmpfs
    # (hugetlb, net_cls, net_prio, perf_event); those the session made go too
    for h in os.listdir("/sys/fs/cgroup"):
        p = os.path.join("/sys/fs/cgroup", h)
        if p not in before and not os.path.ismount(p) and os.path.isdir(p):
            shutil.rmtree(p, ignore_errors=True)     # plain tmpfs, with conmon's files
    with open("/proc/self/mountinfo") as f:
        stale = [line.split()[4] for line in f if e.work in line]
    for m in sorted(stale, key=len, reverse=True):
        subprocess.run(["umount", "-l", m])
    shutil.rmtree(e.work, ignore_errors=True)


def _rmdirs(top):
    """Removes a cgroup directory and every one below it, deepest first."""
    for dirpath, _dirs, _files in os.walk(top, topdown=False):
        try:
            os.rmdir(dirpath)
        except OSError:
            pass


def _cgroup_dirs(name):
    out = []
    for h in os.listdir("/sys/fs/cgroup"):
        p = os.path.join("/sys/fs/cgroup", h, name)
        if os.path.isdir(p):
            out.append(p)
    return out


@pytest.fixture(scope="session")
def engines():
    if not IS_ROOT:
        pytest.skip("engines run as root here")
    _need("podman", "conmon", "containerd", "ctr", "nsenter", "ip")
    if not os.path.exists("/usr/lib/podman/netavark"):
        pytest.fail("the e2e tier needs netavark (Podman's network backend): ./setup.sh "
                    "installs it")
    before = {p for p in HOST_PATHS if os.path.exists(p)} | set(_cgroup_dirs(
        "libpod_parent")) | {os.path.join("/sys/fs/cgroup", h)
                             for h in os.listdir("/sys/fs/cgroup")}
    e = Engines(tempfile.mkdtemp(prefix="hutch-e2e-"))
    os.chmod(e.work, 0o755)
    try:
        _setup(e)
        _start_containerd(e)
        yield e
    finally:
        _teardown(e, before)
    # nothing of the tier's is left
    assert not os.path.exists(f"/run/netns/{e.netns}")
    assert not [p for p in HOST_PATHS if p not in before and os.path.exists(p)]
    for pat in ("libpod_parent", "hutch-e2e"):
        assert not [d for d in _cgroup_dirs(pat) if d not in before], pat
