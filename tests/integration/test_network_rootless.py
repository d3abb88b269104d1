"""Rootless container networks (hutch.network.rootless) with real traffic.

Nothing here touches the machine's own network namespace.  The test makes a
private "host" network namespace, a second one standing in for the internet
(198.18.0.1, through a veth; the host side is 198.18.0.2 with its default route
there) and a user; a "container" is that user's `unshare -U -r -n` run inside the
private host namespace, and start() runs as that user there too.  Servers and
clients on both ends check the bytes that went through the tool.  Everything is
removed afterwards, and the module's teardown checks that no process, namespace,
user or file is left.

This machine's /dev/net/tun is mode 0600 (no udev), which no unprivileged user may
open; start() is then run in a private mount namespace whose /dev/net is a tmpfs
with a 0666 tun node, leaving the real one alone.
"""

import json
import os
import pwd
import random
import shutil
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from conftest import IS_ROOT, REPO

from hutch.errors import HutchError
from hutch.network import rootless

SRC = os.path.join(REPO, "src")
TOOLS = ["slirp4netns", "pasta"]
INET, HOST_ADDR, HOST_ADDR2 = "198.18.0.1", "198.18.0.2", "198.18.0.3"
root = pytest.mark.skipif(not IS_ROOT, reason="makes namespaces and a user: needs root")

# a private /dev/net with a usable tun node, for the user's start() on this machine
TUN_FIX = ('mount -t tmpfs -o mode=755 hutch-tun /dev/net && '
           'mknod -m 666 /dev/net/tun c 10 200 && exec "$@"')

CALL = r"""
import json, sys
sys.path.insert(0, sys.argv[1])
from hutch.errors import HutchError
from hutch.network import rootless
a = json.loads(sys.argv[2])
try:
    print(json.dumps({"ok": getattr(rootless, a["fn"])(*a["args"], **a["kw"])}))
except HutchError as e:
    print(json.dumps({"error": str(e), "errno": e.errno}))
"""

# one exchange: the server answers TAG:<what it got> and prints the peer and the data.
# TCP messages end with a newline rather than a half-close: Debian 12's pasta does
# not pass on the server's FIN after the client's (the reply bytes do arrive)
SERVER = r"""
import json, socket, sys
proto, host, port, tag, timeout = sys.argv[1:6]
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, int(port)))
if proto == "tcp":
    s.listen()
print("ready", flush=True)
s.settimeout(float(timeout))
try:
    if proto == "tcp":
        c, peer = s.accept()
        c.settimeout(float(timeout))
        data = b""
        while not data.endswith(b"\n") and (chunk := c.recv(4096)):
            data += chunk
        data = data.rstrip(b"\n")
        c.sendall(tag.encode() + b":" + data + b"\n")
        c.close()
    else:
        data, peer = s.recvfrom(65536)
        s.sendto(tag.encode() + b":" + data, peer)
    print(json.dumps({"peer": peer[0], "data": data.decode()}), flush=True)
except OSError:
    print(json.dumps({"peer": None}), flush=True)
"""

CLIENT = r"""
import json, socket, sys
proto, host, port, payload, timeout = sys.argv[1:6]
try:
    if proto == "tcp":
        c = socket.create_connection((host, int(port)), timeout=float(timeout))
        c.sendall(payload.encode() + b"\n")
        data = b""
        while not data.endswith(b"\n") and (chunk := c.recv(4096)):
            data += chunk
        data = data.rstrip(b"\n")
    else:
        c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        c.settimeout(float(timeout))
        c.sendto(payload.encode(), (host, int(port)))
        data = c.recvfrom(65536)[0]
    print(json.dumps({"reply": data.decode()}))
except OSError as e:
    print(json.dumps({"error": repr(e)}))
"""

HOLD = r"""
import socket, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen()
print("ready", flush=True)
time.sleep(60)
"""


def _host_nameserver():
    """The first IPv4 nameserver of /etc/resolv.conf: where both tools send the
    container's DNS queries."""
    try:
        with open("/etc/resolv.conf") as f:
            for line in f:
                w = line.split()
                if len(w) >= 2 and w[0] == "nameserver" and w[1].count(".") == 3:
                    return w[1]
    except OSError:
        pass
    return None


class World:
    """The namespaces, the user and a work directory; runs commands in them."""

    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.host, self.inet = f"hutch-rl-test-{tag}", f"hutch-rl-test-{tag}-inet"
        self.user = f"hutch-rl-{tag}"
        self.work = tempfile.mkdtemp(prefix="hutch-rl-test-")
        self.procs = []
        self.tun_fix = os.stat("/dev/net/tun").st_mode & 0o006 != 0o006
        self.dns = _host_nameserver()
        self.uid = self.gid = None

    def setup(self):
        sh = ["ip", "netns", "add", self.host], ["ip", "netns", "add", self.inet]
        for cmd in sh:
            subprocess.run(cmd, check=True)
        h, i = ["ip", "-n", self.host], ["ip", "-n", self.inet]
        for cmd in (
                # made straight inside the namespaces: nothing appears on the machine
                h + ["link", "add", "rl0", "type", "veth", "peer", "name", "rl1",
                     "netns", self.inet],
                i + ["addr", "add", f"{INET}/24", "dev", "rl1"],
                i + ["link", "set", "rl1", "up"], i + ["link", "set", "lo", "up"],
                h + ["addr", "add", f"{HOST_ADDR}/24", "dev", "rl0"],
                h + ["addr", "add", f"{HOST_ADDR2}/24", "dev", "rl0"],
                h + ["link", "set", "rl0", "up"], h + ["link", "set", "lo", "up"],
                h + ["route", "add", "default", "via", INET]):
            subprocess.run(cmd, check=True)
        if self.dns and not self.dns.startswith("127."):
            # the resolver the tools forward to lives in the "internet" namespace
            subprocess.run(i + ["addr", "add", f"{self.dns}/32", "dev", "rl1"], check=True)
        subprocess.run(["useradd", "-M", "-s", "/usr/sbin/nologin", self.user], check=True)
        pw = pwd.getpwnam(self.user)
        self.uid, self.gid = pw.pw_uid, pw.pw_gid
        os.chmod(self.work, 0o755)

    # --- where commands run ----------------------------------------------------
    def as_user(self, argv):
        return ["setpriv", "--reuid", str(self.uid), "--regid", str(self.gid),
                "--clear-groups", "--"] + argv

    def in_host(self, argv, user=False, tun_fix=False):
        argv = self.as_user(argv) if user else argv
        if tun_fix and self.tun_fix:
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c", TUN_FIX,
                    "sh"] + argv
        return ["nsenter", f"--net=/run/netns/{self.host}"] + argv

    def in_inet(self, argv):
        return ["nsenter", f"--net=/run/netns/{self.inet}"] + argv

    def in_ctr(self, ctr, argv):
        if ctr["rootless"]:
            return self.as_user(["nsenter", "-t", str(ctr["pid"]), "-U", "-n",
                                 "--preserve-credentials"] + argv)
        return ["nsenter", "-t", str(ctr["pid"]), "-n"] + argv

    def popen(self, argv, **kw):
        p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, text=True, **kw)
        self.procs.append(p)
        return p

    # --- hutch's API, run as the caller would ------------------------------------
    def call(self, fn, *args, user=True, tun_fix=True, **kw):
        """rootless.fn(*args, **kw) in the private host namespace, as the test user
        (or root): the result, or {"error", "errno"}."""
        argv = [sys.executable, "-c", CALL, SRC,
                json.dumps({"fn": fn, "args": args, "kw": kw})]
        p = subprocess.run(self.in_host(argv, user=user, tun_fix=tun_fix),
                           capture_output=True, text=True, timeout=60,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0 and p.stdout.strip(), (fn, p.stdout, p.stderr)
        out = json.loads(p.stdout.strip().splitlines()[-1])
        return out.get("ok", out)

    # --- one exchange of bytes ---------------------------------------------------
    def exchange(self, server_argv, client_argv, proto, host, port, timeout=5.0,
                 server_host="0.0.0.0", server_port=None):
        """Runs a server (prefix ``server_argv``) and a client (``client_argv``)
        talking to host:port: (what the client got, what the server saw)."""
        token = uuid.uuid4().hex
        srv = self.popen(server_argv + [sys.executable, "-c", SERVER, proto, server_host,
                                        str(server_port or port), "srv", str(timeout)],
                         stdout=subprocess.PIPE)
        try:
            assert srv.stdout.readline().strip() == "ready"
            cli = subprocess.run(client_argv + [sys.executable, "-c", CLIENT, proto, host,
                                                str(port), token, str(timeout)],
                                 capture_output=True, text=True, timeout=timeout + 10,
                                 stdin=subprocess.DEVNULL)
            got = json.loads(cli.stdout.strip().splitlines()[-1]) if cli.stdout.strip() \
                else {"error": cli.stderr}
            seen = json.loads(srv.communicate(timeout=timeout + 10)[0].strip())
        finally:
            if srv.poll() is None:
                srv.kill()
                srv.wait()
        return got, seen, token

    def hold_port(self, port):
        """A listener on the host's port, for as long as the test runs."""
        p = self.popen(self.in_host([sys.executable, "-c", HOLD, str(port)]),
                       stdout=subprocess.PIPE)
        assert p.stdout.readline().strip() == "ready"
        return p

    # --- the user's processes ----------------------------------------------------
    def user_procs(self, zombies=True):
        out = []
        for name in os.listdir("/proc"):
            if not name.isdigit():
                continue
            try:
                uid = _uid(name)
                with open(f"/proc/{name}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            state = stat[stat.rindex(")") + 2]
            if uid == self.uid and (zombies or state != "Z"):
                out.append((int(name), stat[stat.index("(") + 1:stat.rindex(")")], state))
        return out

    def tools_running(self):
        return [p for p in self.user_procs(zombies=False)
                if p[1] in ("slirp4netns", "pasta", "passt", "passt.avx2")]

    def teardown(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.wait()
        if self.uid is not None:
            subprocess.run(["pkill", "-9", "-U", str(self.uid)], capture_output=True)
            # orphaned tools are reaped by pid 1, which may take a moment
            # (this VM's pid 1 reaps late: a zombie is dead, not a leftover)
            deadline = time.monotonic() + 15
            while self.user_procs(zombies=False) and time.monotonic() < deadline:
                time.sleep(0.2)
            left = self.user_procs(zombies=False)
            subprocess.run(["userdel", "-f", self.user], check=not left)
            assert not left, left
        for ns in (self.host, self.inet):
            if os.path.exists(f"/run/netns/{ns}"):
                subprocess.run(["ip", "netns", "del", ns], check=True)
        shutil.rmtree(self.work, ignore_errors=True)


@pytest.fixture(scope="module")
def world():
    if not os.path.exists("/dev/net/tun"):
        pytest.skip("no /dev/net/tun")
    w = World()
    try:
        w.setup()
        yield w
    finally:
        w.teardown()
    with open("/etc/passwd") as f:
        assert f"\n{w.user}:" not in "\n" + f.read()
    for ns in (w.host, w.inet):
        assert not os.path.exists(f"/run/netns/{ns}")
    assert not os.path.exists(w.work)
    assert not w.user_procs(zombies=False)     # zombies wait for pid 1


def _status(pid, key):
    """A field of /proc/PID/status: the first word after ``key:``."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return line.split()[1]
    return None


def _uid(pid):
    """The real uid of a process (/proc/PID itself is root's when it is not dumpable,
    as pasta makes itself)."""
    return int(_status(pid, "Uid"))


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _container(world, rootless_=True):
    """A stand-in container: `unshare -U -r -n` (or, for root, `unshare -n`) in the
    private host namespace; its sleep is the init whose namespaces the tool joins."""
    cmd = ["unshare", "-U", "-r", "-n", "--fork", "sleep", "300"] if rootless_ else \
        ["unshare", "-n", "--fork", "sleep", "300"]
    p = world.popen(world.in_host(cmd, user=rootless_), stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not _children(p.pid):
        assert p.poll() is None and time.monotonic() < deadline, "unshare failed"
        time.sleep(0.01)
    pid = _children(p.pid)[0]
    return {"pid": pid, "rootless": rootless_, "proc": p}


def _end_container(ctr):
    try:
        os.kill(ctr["pid"], 9)
    except ProcessLookupError:
        pass
    ctr["proc"].wait(timeout=10)


def _state_dir(world, owner=True):
    d = tempfile.mkdtemp(prefix="state-", dir=world.work)
    if owner:
        os.chown(d, world.uid, world.gid)
    return d


def _ports(n):
    return random.sample(range(20000, 45000), n)


@pytest.fixture(params=TOOLS)
def running(request, world):
    """A rootless container with ``tool`` started for it, publishing a TCP port (to
    80) and a UDP port (to 81); stopped and removed afterwards."""
    tool = request.param
    ctr = _container(world)
    sd = _state_dir(world)
    tcp, udp = _ports(2)
    publish = [{"proto": "tcp", "host_ip": "", "host_port": tcp, "ctr_port": 80},
               {"proto": "udp", "host_ip": "", "host_port": udp, "ctr_port": 81}]
    try:
        data = world.call("start", tool, ctr["pid"], sd, publish)
        assert "error" not in data, data
        yield {"tool": tool, "ctr": ctr, "dir": sd, "data": data, "tcp": tcp, "udp": udp}
    finally:
        rootless.stop(sd)           # as root: whatever the test left
        _end_container(ctr)
        shutil.rmtree(sd)


@root
@pytest.mark.root
def test_start_records_the_tool(running, world):
    data, sd = running["data"], running["dir"]
    with open(os.path.join(sd, rootless.STATE)) as f:
        assert json.load(f) == data
    assert data["tool"] == running["tool"]
    with open(f"/proc/{data['pid']}/stat") as f:
        stat = f.read()
    assert int(stat[stat.rindex(")") + 2:].split()[19]) == data["starttime"]
    assert _uid(data["pid"]) == world.uid
    # its own session, not the caller's (the caller has exited)
    assert os.getsid(data["pid"]) == data["pid"]
    assert [p["host_port"] for p in data["publish"]] == [running["tcp"], running["udp"]]
    assert _status(data["pid"], "Seccomp") == "2"     # filtered, by hutch or by pasta
    if running["tool"] == "slirp4netns":
        assert data["addr"] == "10.0.2.100" and data["gateway"] == "10.0.2.2"
    else:
        assert data["addr"] == HOST_ADDR and data["gateway"] == INET   # copied


@root
@pytest.mark.root
def test_outbound_tcp_reaches_the_internet(running, world):
    got, seen, token = world.exchange(world.in_inet([]), world.in_ctr(running["ctr"], []),
                                      "tcp", INET, _ports(1)[0])
    assert got == {"reply": f"srv:{token}"}
    assert seen == {"peer": HOST_ADDR, "data": token}


@root
@pytest.mark.root
def test_published_tcp_port_from_host_loopback(running, world):
    ctr, port = running["ctr"], running["tcp"]
    got, seen, token = world.exchange(world.in_ctr(ctr, []), world.in_host([]), "tcp",
                                      "127.0.0.1", port, server_port=80)
    assert got == {"reply": f"srv:{token}"}
    assert seen["data"] == token


@root
@pytest.mark.root
def test_published_tcp_and_udp_from_the_internet(running, world):
    ctr = running["ctr"]
    for proto, port, ctr_port in (("tcp", running["tcp"], 80), ("udp", running["udp"], 81)):
        got, seen, token = world.exchange(world.in_ctr(ctr, []), world.in_inet([]), proto,
                                          HOST_ADDR, port, server_port=ctr_port)
        assert got == {"reply": f"srv:{token}"}, proto
        assert seen["data"] == token


@root
@pytest.mark.root
def test_host_loopback_is_out_of_reach(running, world):
    """A service on the host's 127.0.0.1 is not reached through the gateway."""
    port = _ports(1)[0]
    got, seen, _ = world.exchange(world.in_host([]), world.in_ctr(running["ctr"], []),
                                  "tcp", running["data"]["gateway"], port, timeout=1.5,
                                  server_host="127.0.0.1")
    assert "error" in got and seen == {"peer": None}


@root
@pytest.mark.root
def test_dns_of_resolv_conf_reaches_the_host_resolver(running, world):
    if not world.dns:
        pytest.skip("no IPv4 nameserver in /etc/resolv.conf")
    text = rootless.resolv_conf(running["tool"], running["data"])
    server = text.split("\n")[0].split()[1]
    assert server == {"slirp4netns": "10.0.2.3", "pasta": "169.254.1.1"}[running["tool"]]
    where = world.in_host([]) if world.dns.startswith("127.") else world.in_inet([])
    got, seen, token = world.exchange(where, world.in_ctr(running["ctr"], []), "udp",
                                      server, 53, server_host=world.dns)
    assert got == {"reply": f"srv:{token}"}
    assert seen["data"] == token


@root
@pytest.mark.root
def test_stop(running, world):
    data, sd = running["data"], running["dir"]
    assert world.call("stop", sd) is None
    st = rootless._load(sd)
    assert st is None and os.listdir(sd) == []
    try:
        with open(f"/proc/{data['pid']}/stat") as f:
            assert f.read().split(") ")[1][0] == "Z"     # gone, not yet reaped by init
    except FileNotFoundError:
        pass
    assert not world.tools_running()
    assert world.call("stop", sd) is None
    assert world.call("stop", sd, data) is None


@root
@pytest.mark.root
@pytest.mark.parametrize("tool", TOOLS)
def test_port_in_use_fails_cleanly(tool, world):
    ctr = _container(world)
    sd = _state_dir(world)
    free, busy = _ports(2)
    holder = world.hold_port(busy)
    try:
        publish = [{"proto": "tcp", "host_ip": "", "host_port": free, "ctr_port": 80},
                   {"proto": "tcp", "host_ip": "", "host_port": busy, "ctr_port": 81}]
        out = world.call("start", tool, ctr["pid"], sd, publish)
        assert out["errno"] == 98, out
        msg = out["error"]
        assert msg.startswith(f"network {tool}: ") and str(busy) in msg
        assert "port in use" in msg and "\n" not in msg
        assert not world.tools_running()
        assert os.listdir(sd) == []
    finally:
        holder.kill()
        _end_container(ctr)
        shutil.rmtree(sd)


@root
@pytest.mark.root
@pytest.mark.parametrize("tool", TOOLS)
def test_when_the_container_goes(tool, world):
    """slirp4netns ends with the container's init (its --exit-fd is a pidfd of it);
    Debian 12's pasta does not, and stop() ends it."""
    ctr = _container(world)
    sd = _state_dir(world)
    try:
        data = world.call("start", tool, ctr["pid"], sd, [])
        assert "error" not in data, data
        _end_container(ctr)
        deadline = time.monotonic() + 2.5
        while world.tools_running() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert bool(world.tools_running()) != data["exits_with_container"]
        world.call("stop", sd)
        assert not world.tools_running() and os.listdir(sd) == []
    finally:
        rootless.stop(sd)
        _end_container(ctr)
        shutil.rmtree(sd)


@root
@pytest.mark.root
@pytest.mark.parametrize("tool", TOOLS)
def test_root_caller_and_rootful_container(tool, world):
    ctr = _container(world, rootless_=False)
    sd = _state_dir(world, owner=False)
    port = _ports(1)[0]
    try:
        publish = [{"proto": "tcp", "host_ip": "127.0.0.1", "host_port": port,
                    "ctr_port": 80}]
        data = world.call("start", tool, ctr["pid"], sd, publish, user=False)
        assert "error" not in data, data
        assert _uid(data["pid"]) == 0
        if tool == "slirp4netns":       # its sandbox: no capability but binding ports
            assert _status(data["pid"], "CapEff") == "0000000000000400"
        got, seen, token = world.exchange(world.in_inet([]), world.in_ctr(ctr, []), "tcp",
                                          INET, _ports(1)[0])
        assert got == {"reply": f"srv:{token}"} and seen["peer"] == HOST_ADDR
        got, seen, token = world.exchange(world.in_ctr(ctr, []), world.in_host([]), "tcp",
                                          "127.0.0.1", port, server_port=80)
        assert got == {"reply": f"srv:{token}"}
        assert world.call("stop", sd, user=False) is None
        assert os.listdir(sd) == []
    finally:
        rootless.stop(sd)
        _end_container(ctr)
        shutil.rmtree(sd)


@root
@pytest.mark.root
@pytest.mark.parametrize("tool", TOOLS)
def test_outbound_addr_mtu_and_no_ipv6(tool, world):
    ctr = _container(world)
    sd = _state_dir(world)
    try:
        data = world.call("start", tool, ctr["pid"], sd, [], mtu=1500, ipv6=False,
                          outbound_addr=HOST_ADDR2)
        assert "error" not in data, data
        assert data["mtu"] == 1500 and data["ipv6"] is False
        iface = data["interface"]
        link = subprocess.run(world.in_ctr(ctr, ["ip", "-o", "link", "show", "dev", iface]),
                              capture_output=True, text=True, check=True).stdout.split()
        assert link[link.index("mtu") + 1] == "1500"
        got, seen, token = world.exchange(world.in_inet([]), world.in_ctr(ctr, []), "tcp",
                                          INET, _ports(1)[0])
        assert got == {"reply": f"srv:{token}"} and seen["peer"] == HOST_ADDR2
        assert "fd00::3" not in rootless.resolv_conf(tool, data)
    finally:
        rootless.stop(sd)
        _end_container(ctr)
        shutil.rmtree(sd)


@root
@pytest.mark.root
def test_unusable_tun_is_named(world):
    if not world.tun_fix:
        pytest.skip("/dev/net/tun is usable by everyone here")
    ctr = _container(world)
    sd = _state_dir(world)
    try:
        out = world.call("start", "slirp4netns", ctr["pid"], sd, [], tun_fix=False)
        assert out["errno"] == 13 and "/dev/net/tun" in out["error"], out
        assert os.listdir(sd) == [] and not world.tools_running()
    finally:
        _end_container(ctr)
        shutil.rmtree(sd)


def test_log_is_bounded(monkeypatch, tmp_path):
    """A tool's output stops at LOG_LIMIT bytes: its writes fail (EFBIG) and it is
    not killed for it (SIGXFSZ ignored)."""
    monkeypatch.setattr(rootless, "LOG_LIMIT", 4096)
    log = os.open(tmp_path / "log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC)
    script = f"head -c 10000 /dev/zero; echo $? > {tmp_path}/status"
    try:
        pid = rootless._spawn_detached(["/bin/sh", "-c", script], log, [])
    finally:
        os.close(log)
    fd = os.pidfd_open(pid)
    try:
        import select
        assert select.select([fd], [], [], 10)[0]
    finally:
        os.close(fd)
    assert os.path.getsize(tmp_path / "log") == 4096
    assert (tmp_path / "status").read_text().strip() == "1"      # EFBIG, not a signal


def test_missing_tool(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", "")
    monkeypatch.setattr(rootless, "BIN_DIR", "/nonexistent/bin")
    for tool, pkg in (("slirp4netns", "slirp4netns"), ("pasta", "passt")):
        with pytest.raises(HutchError) as e:
            rootless.start(tool, os.getpid(), str(tmp_path))
        assert str(e.value) == (f"network {tool}: /nonexistent/bin/{tool} is not installed "
                                f"(Debian package {pkg}) (errno 2)")
        assert e.value.errno == 2
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("tool", TOOLS)
def test_bad_arguments(tool, tmp_path):
    bad = [[{"proto": "sctp", "host_ip": "", "host_port": 1, "ctr_port": 1}],
           [{"proto": "tcp", "host_ip": "", "host_port": 0, "ctr_port": 1}],
           [{"proto": "tcp", "host_ip": "nope", "host_port": 8080, "ctr_port": 80}],
           [{"proto": "tcp"}], ["8080:80"]]
    if tool == "slirp4netns":
        bad.append([{"proto": "tcp", "host_ip": "::1", "host_port": 8080, "ctr_port": 80}])
    for publish in bad:
        with pytest.raises(HutchError) as e:
            rootless.start(tool, os.getpid(), str(tmp_path), publish)
        assert e.value.errno == 22 and str(e.value).startswith(f"network {tool}: ")
    with pytest.raises(HutchError):
        rootless.start(tool, os.getpid(), str(tmp_path), mtu=10)
    with pytest.raises(HutchError):
        rootless.start("vde", os.getpid(), str(tmp_path))
    assert os.listdir(tmp_path) == []


def test_resolv_conf():
    slirp = rootless.resolv_conf("slirp4netns", {"ipv6": True})
    assert slirp.startswith("nameserver 10.0.2.3\nnameserver fd00::3\n")
    assert rootless.resolv_conf("slirp4netns", {"ipv6": False}).startswith(
        "nameserver 10.0.2.3\n")
    assert "fd00::3" not in rootless.resolv_conf("slirp4netns", {"ipv6": False})
    pasta = rootless.resolv_conf("pasta", {"dns": "169.254.1.1"})
    assert pasta.startswith("nameserver 169.254.1.1\n")
    assert pasta.count("nameserver") == 1
    for text in (slirp, pasta):
        assert all(line.split()[0] in ("nameserver", "search", "domain", "options")
                   for line in text.splitlines())
    with pytest.raises(HutchError):
        rootless.resolv_conf("vde", {})
