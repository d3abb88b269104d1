"""hutch.network.cni driving Debian's CNI plugins (bridge, host-local, portmap,
firewall) for real.

Every test that runs plugins makes a private "host" network namespace and
container namespaces of its own, runs the code under test inside the "host" one
(nsenter), and puts host-local's store and hutch's cache in a temporary
directory: nothing touches the machine's own namespace or /var/lib/cni, and the
teardown removes every namespace, directory and process the test made."""

import errno
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest

from conftest import IS_ROOT, REPO
from hutch.errors import HutchError
from hutch.network import cni

PLUGINS = "/usr/lib/cni"
needs_root = pytest.mark.skipif(
    not IS_ROOT or not os.path.exists(os.path.join(PLUGINS, "bridge")),
    reason="needs root and the CNI plugins (containernetworking-plugins)")

SUBNET, GATEWAY = "10.99.7.0/24", "10.99.7.1"

DRIVER = r"""
import json, sys
from hutch.errors import HutchError
from hutch.network import cni
op, kw = sys.argv[1], json.loads(sys.argv[2])
try:
    out = {"ok": getattr(cni, op)(**kw)}
except HutchError as e:
    out = {"error": str(e), "errno": e.errno, "code": getattr(e, "code", None)}
print(json.dumps(out))
"""

# one connection: prints "ready" once listening, answers "hello <peer>" and exits
SERVER = r"""
import socket, sys
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(1)
s.settimeout(20)
print("ready", flush=True)
c, peer = s.accept()
c.sendall(b"hello " + peer[0].encode())
c.close()
"""

CLIENT = r"""
import socket, sys
s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=5)
print(s.recv(100).decode())
"""

# a plugin that records its environment and input, then does what FAKE_MODE says
FAKE = r"""#!/bin/sh
d=$(dirname "$0")
env > "$d/env.$CNI_COMMAND"
cat > "$d/stdin.$CNI_COMMAND"
echo "$CNI_COMMAND" >> "$d/calls"
mode=$(cat "$d/mode")
if [ "$CNI_COMMAND" = ADD ]; then
    case "$mode" in
    fail) echo '{"cniVersion":"1.0.0","code":11,"msg":"no luck today","details":"the fake always fails"}'
          exit 1 ;;
    kill) kill -9 $PPID; exit 1 ;;
    sleep) echo $$ > "$d/pid"; sleep 60; exit 1 ;;
    esac
fi
exit 0
"""


def bridge(**ipam_extra):
    return {"type": "bridge", "bridge": "hcni0", "isGateway": True, "ipMasq": True,
            "ipam": {"type": "host-local", "subnet": SUBNET,
                     "routes": [{"dst": "0.0.0.0/0"}], **ipam_extra}}


class Lab:
    """A private "host" namespace, container namespaces, a temporary directory (the
    conflists, host-local's store, hutch's cache, fake plugins) and the processes
    started, all removed by :meth:`close`."""

    def __init__(self):
        self.tag = uuid.uuid4().hex[:8]
        self.dir = tempfile.mkdtemp(prefix="hutch-cni-test-")
        self.ipam = os.path.join(self.dir, "ipam")
        self.cache = os.path.join(self.dir, "cache")
        self.fakes = os.path.join(self.dir, "fakes")
        self.namespaces, self.procs = [], []
        self.host = self.netns("h")
        with open(os.path.join(self.dir, "driver.py"), "w") as f:
            f.write(DRIVER)

    def netns(self, name):
        n = f"hutch-cni-test-{self.tag}-{name}"
        subprocess.run(["ip", "netns", "add", n], check=True)
        self.namespaces.append(n)
        subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
        return n

    def drop_netns(self, n):
        subprocess.run(["ip", "netns", "del", n], check=True)
        self.namespaces.remove(n)

    def conflist(self, plugins, name="hutchtest", version="1.0.0", file="net.conflist",
                 **top):
        for p in plugins:
            if "ipam" in p:
                p["ipam"]["dataDir"] = self.ipam
        conf = {"cniVersion": version, "name": name, "plugins": plugins, **top}
        path = os.path.join(self.dir, file)
        with open(path, "w") as f:
            json.dump(conf, f)
        return path

    def fake(self, mode):
        """A fake plugin called "fake" in a directory of its own."""
        os.makedirs(self.fakes, exist_ok=True)
        path = os.path.join(self.fakes, "fake")
        with open(path, "w") as f:
            f.write(FAKE)
        os.chmod(path, 0o755)
        with open(os.path.join(self.fakes, "mode"), "w") as f:
            f.write(mode)
        return self.fakes

    def in_host(self, *cmd):
        return ["nsenter", f"--net=/run/netns/{self.host}", *cmd]

    def start(self, op, conflist, cid, netns, **kw):
        """Runs cni.OP inside the "host" namespace, in a process of its own."""
        kw.setdefault("cache_dir", self.cache)
        kw = {"conflist_path": conflist, "cid": cid,
              "netns_path": f"/run/netns/{netns}" if netns else "", **kw}
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "PYTHONPATH": os.path.join(REPO, "src")}
        p = subprocess.Popen(self.in_host(sys.executable, os.path.join(self.dir,
                                                                       "driver.py"),
                                          op, json.dumps(kw)),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        self.procs.append(p)
        return p

    def finish(self, p):
        out, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
        return json.loads(out)

    def call(self, op, conflist, cid, netns, **kw):
        return self.finish(self.start(op, conflist, cid, netns, **kw))

    def ok(self, op, conflist, cid, netns, **kw):
        r = self.call(op, conflist, cid, netns, **kw)
        assert "error" not in r, r["error"]
        return r["ok"]

    def server(self, netns, addr, port):
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{netns}", sys.executable,
                              "-c", SERVER, addr, str(port)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.procs.append(p)
        assert p.stdout.readline().strip() == "ready", p.stderr.read()
        return p

    def connect(self, netns, addr, port):
        p = subprocess.run(["nsenter", f"--net=/run/netns/{netns}", sys.executable, "-c",
                            CLIENT, addr, str(port)], capture_output=True, text=True,
                           timeout=30)
        assert p.returncode == 0, p.stderr
        return p.stdout.strip()

    def ip(self, netns, *args):
        return subprocess.run(["ip", "-n", netns, *args], capture_output=True, text=True,
                              check=True).stdout

    def leases(self, net="hutchtest"):
        d = os.path.join(self.ipam, net)
        names = os.listdir(d) if os.path.isdir(d) else []
        return sorted(n for n in names if n[0].isdigit())

    def host_veths(self):
        return [ln for ln in self.ip(self.host, "-o", "link", "show", "type", "veth")
                .splitlines() if ln.strip()]

    def close(self):
        for p in self.procs:
            if p.poll() is None:
                p.kill()
            p.communicate()
        pid = os.path.join(self.fakes, "pid")
        if os.path.exists(pid):
            try:
                os.kill(int(open(pid).read()), signal.SIGKILL)
            except (OSError, ValueError):
                pass
        for n in reversed(self.namespaces):
            subprocess.run(["ip", "netns", "del", n])
        shutil.rmtree(self.dir, ignore_errors=True)
        left = subprocess.run(["ip", "netns", "list"], capture_output=True,
                              text=True).stdout
        assert f"hutch-cni-test-{self.tag}" not in left


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        lab.close()


def address_of(result):
    (ip,) = [i["address"] for i in result["ips"]]
    return ip.split("/")[0]


# -- find() -----------------------------------------------------------------------------

def test_find_by_name_and_by_path(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    (a / "10-other.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "other", "plugins": [{"type": "bridge"}]}))
    (a / "05-broken.conflist").write_text("{not json")
    (b / "20-mine.conf").write_text(json.dumps(
        {"cniVersion": "0.4.0", "name": "mine", "type": "bridge", "bridge": "x0"}))
    (b / "30-mine-too.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "mine", "plugins": [{"type": "ptp"}]}))
    dirs = (str(a), str(b), str(tmp_path / "absent"))
    assert cni.find("other", dirs) == str(a / "10-other.conflist")
    # the first file with the name wins; a broken file beside it is no obstacle
    assert cni.find("mine", dirs) == str(b / "20-mine.conf")
    assert cni.find(str(b / "30-mine-too.conflist"), dirs) == str(b / "30-mine-too.conflist")
    # a .conf is one plugin wrapped into a list
    conf = cni._load(str(b / "20-mine.conf"))
    assert conf["name"] == "mine" and conf["cniVersion"] == "0.4.0"
    assert conf["plugins"] == [{"type": "bridge", "bridge": "x0"}]


def test_find_errors(tmp_path):
    (tmp_path / "bad.conflist").write_text("{not json")
    (tmp_path / "noname.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "a/b", "plugins": [{"type": "bridge"}]}))
    (tmp_path / "badtype.conflist").write_text(json.dumps(
        {"cniVersion": "1.0.0", "name": "n", "plugins": [{"type": "../bin/sh"}]}))
    dirs = (str(tmp_path),)
    with pytest.raises(HutchError) as e:
        cni.find("nowhere", dirs)
    assert e.value.errno == errno.ENOENT
    assert str(e.value).startswith(f"cni network nowhere: not found in {tmp_path}")
    assert str(tmp_path / "bad.conflist") in str(e.value)   # named as skipped
    with pytest.raises(HutchError) as e:
        cni.find(str(tmp_path / "missing.conflist"), dirs)
    assert e.value.errno == errno.ENOENT and "missing.conflist: no such file" in str(e.value)
    with pytest.raises(HutchError) as e:
        cni.find(str(tmp_path / "bad.conflist"), dirs)
    assert e.value.errno == errno.EINVAL
    assert f"cni network config {tmp_path / 'bad.conflist'}: invalid json" in str(e.value)
    for f, why in (("noname.conflist", "network name 'a/b'"),
                   ("badtype.conflist", "plugin type '../bin/sh' is not a file name")):
        with pytest.raises(HutchError) as e:
            cni.find(str(tmp_path / f), dirs)
        assert e.value.errno == errno.EINVAL and why in str(e.value)


# -- ADD, traffic, DEL ----------------------------------------------------------------------

@pytest.mark.root
@needs_root
def test_add_gives_an_address_a_route_and_a_published_port(lab):
    conf = lab.conflist([bridge(), {"type": "portmap", "capabilities": {"portMappings": True}},
                         {"type": "firewall"}])
    ctr = lab.netns("c1")
    result = lab.ok("add", conf, "c1", ctr, port_mappings=[
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp", "hostIP": ""}])
    addr = address_of(result)
    assert result["cniVersion"] == "1.0.0"
    assert [i["name"] for i in result["interfaces"]][::2] == ["hcni0", "eth0"]
    assert result["interfaces"][2]["sandbox"] == f"/run/netns/{ctr}"
    assert f"inet {addr}/24 " in lab.ip(ctr, "addr", "show", "dev", "eth0")
    assert f"default via {GATEWAY} dev eth0" in lab.ip(ctr, "route")
    assert f"inet {GATEWAY}/24 " in lab.ip(lab.host, "addr", "show", "dev", "hcni0")

    # the container reaches the gateway
    if shutil.which("busybox"):
        subprocess.run(["nsenter", f"--net=/run/netns/{ctr}", "busybox", "ping", "-c", "1",
                        "-W", "3", GATEWAY], check=True, capture_output=True)
    srv = lab.server(lab.host, GATEWAY, 7000)
    assert lab.connect(ctr, GATEWAY, 7000) == f"hello {addr}"
    srv.wait(timeout=10)
    # and a server on the container's port 80 answers on the host's port 8080
    srv = lab.server(ctr, "0.0.0.0", 80)
    assert lab.connect(lab.host, GATEWAY, 8080).startswith("hello ")
    srv.wait(timeout=10)

    entry = json.load(open(os.path.join(lab.cache, "hutchtest+c1+eth0.json")))
    assert entry["result"]["ips"] == result["ips"]
    assert entry["capabilityArgs"] == {"portMappings": [
        {"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}
    assert lab.leases() == [addr]

    # a second ADD of the same attachment is refused before any plugin runs
    r = lab.call("add", conf, "c1", ctr)
    assert r["errno"] == errno.EEXIST and "already attached as eth0" in r["error"]

    assert lab.ok("delete", conf, "c1", ctr) is None
    assert lab.host_veths() == [] and lab.leases() == []
    assert "eth0" not in lab.ip(ctr, "link")
    nat = subprocess.run(lab.in_host("iptables-save", "-t", "nat"), capture_output=True,
                         text=True, check=True).stdout
    assert "c1" not in nat and "8080" not in nat
    assert os.listdir(lab.cache) == []   # no entry, no lock file


@pytest.mark.root
@needs_root
def test_delete_is_idempotent_and_works_without_the_netns(lab):
    conf = lab.conflist([bridge(), {"type": "portmap", "capabilities": {"portMappings": True}},
                         {"type": "firewall"}])
    ctr = lab.netns("c1")
    lab.ok("add", conf, "c1", ctr)
    lab.ok("delete", conf, "c1", ctr)
    lab.ok("delete", conf, "c1", ctr)   # nothing cached: the plugins still run, and agree
    lab.ok("delete", conf, "never-added", "")

    # the container's namespace gone first: DEL with CNI_NETNS unset frees the rest
    addr = address_of(lab.ok("add", conf, "c2", ctr,
                             port_mappings=[{"hostPort": 8081, "containerPort": 80}]))
    assert lab.leases() == [addr]
    lab.drop_netns(ctr)
    lab.ok("delete", conf, "c2", "")
    assert lab.leases() == [] and lab.host_veths() == []
    assert "8081" not in subprocess.run(lab.in_host("iptables-save", "-t", "nat"),
                                        capture_output=True, text=True).stdout
    lab.ok("delete", conf, "c2", "")
    assert os.listdir(lab.cache) == []


@pytest.mark.root
@needs_root
def test_delete_uses_the_cached_conflist_once_the_file_is_gone(lab):
    conf = lab.conflist([bridge(), {"type": "firewall"}])
    ctr = lab.netns("c1")
    addr = address_of(lab.ok("add", conf, "c1", ctr))
    os.unlink(conf)
    assert lab.leases() == [addr]
    lab.ok("delete", conf, "c1", ctr)
    assert lab.leases() == [] and lab.host_veths() == []
    assert os.listdir(lab.cache) == []
    lab.ok("delete", conf, "c1", ctr)   # no file, no cache: nothing to do


@pytest.mark.root
@needs_root
def test_concurrent_adds_get_distinct_addresses(lab):
    conf = lab.conflist([bridge(), {"type": "portmap", "capabilities": {"portMappings": True}},
                         {"type": "firewall"}])
    ctrs = [lab.netns(f"c{i}") for i in range(5)]
    procs = [lab.start("add", conf, f"c{i}", n,
                       port_mappings=[{"hostPort": 9000 + i, "containerPort": 80}])
             for i, n in enumerate(ctrs)]
    results = [lab.finish(p) for p in procs]
    assert all("error" not in r for r in results), results
    addrs = [address_of(r["ok"]) for r in results]
    assert len(set(addrs)) == 5
    assert lab.leases() == sorted(addrs)
    for n, a in zip(ctrs, addrs):
        assert f"inet {a}/24 " in lab.ip(n, "addr", "show", "dev", "eth0")
    assert len(lab.host_veths()) == 5
    # each published port reaches its own container
    srv = lab.server(ctrs[3], "0.0.0.0", 80)
    assert lab.connect(lab.host, GATEWAY, 9003).startswith("hello ")
    srv.wait(timeout=10)

    procs = [lab.start("delete", conf, f"c{i}", n) for i, n in enumerate(ctrs)]
    assert all(lab.finish(p) == {"ok": None} for p in procs)
    assert lab.leases() == [] and lab.host_veths() == []
    assert os.listdir(lab.cache) == []


# -- failures -------------------------------------------------------------------------------

@pytest.mark.root
@needs_root
def test_a_failing_plugin_rolls_back_the_ones_before_it(lab):
    dirs = [lab.fake("fail"), PLUGINS]
    conf = lab.conflist([bridge(), {"type": "fake"}])
    ctr = lab.netns("c1")
    r = lab.call("add", conf, "c1", ctr, plugin_dirs=dirs, args={"K8S_POD_NAME": "p"})
    assert r["error"] == ("cni network hutchtest: plugin fake: ADD failed: code 11: "
                          "no luck today: the fake always fails (errno 11)")
    assert r["errno"] == errno.EAGAIN and r["code"] == 11
    # the fake got DEL too (it may have done half its work), then bridge got DEL
    assert open(os.path.join(lab.fakes, "calls")).read().split() == ["ADD", "DEL"]
    assert lab.leases() == [] and lab.host_veths() == []
    assert "eth0" not in lab.ip(ctr, "link")
    assert os.listdir(lab.cache) == []

    # what the fake was given: the bridge's result, and only CNI_* and PATH
    req = json.load(open(os.path.join(lab.fakes, "stdin.ADD")))
    assert req["name"] == "hutchtest" and req["cniVersion"] == "1.0.0"
    assert req["prevResult"]["interfaces"][0]["name"] == "hcni0"
    assert json.load(open(os.path.join(lab.fakes, "stdin.DEL")))["prevResult"] == \
        req["prevResult"]
    env = dict(ln.split("=", 1) for ln in
               open(os.path.join(lab.fakes, "env.ADD")).read().splitlines())
    env.pop("PWD", None)   # the shell's own
    assert env == {"CNI_COMMAND": "ADD", "CNI_CONTAINERID": "c1",
                   "CNI_NETNS": f"/run/netns/{ctr}", "CNI_IFNAME": "eth0",
                   "CNI_PATH": ":".join(dirs), "CNI_ARGS": "IgnoreUnknown=1;K8S_POD_NAME=p",
                   "PATH": cni.PATH}


@pytest.mark.root
@needs_root
def test_a_missing_plugin_is_named_before_anything_runs(lab):
    conf = lab.conflist([bridge(), {"type": "nosuchplugin"}])
    ctr = lab.netns("c1")
    r = lab.call("add", conf, "c1", ctr, plugin_dirs=[PLUGINS, "/nonexistent"])
    assert r["errno"] == errno.ENOENT
    assert r["error"].startswith("cni network hutchtest: plugin nosuchplugin: not found in "
                                 f"{PLUGINS}, /nonexistent")
    assert lab.host_veths() == [] and lab.leases() == []
    # DEL runs the plugins it finds and reports the one it does not
    r = lab.call("delete", conf, "c1", ctr, plugin_dirs=[PLUGINS])
    assert "plugin nosuchplugin: not found" in r["error"]


@pytest.mark.root
@needs_root
def test_a_plugin_that_hangs_is_killed(lab):
    dirs = [lab.fake("sleep"), PLUGINS]
    conf = lab.conflist([{"type": "fake"}])
    ctr = lab.netns("c1")
    t = time.monotonic()
    r = lab.call("add", conf, "c1", ctr, plugin_dirs=dirs, timeout=1)
    assert time.monotonic() - t < 15
    assert r["errno"] == errno.ETIMEDOUT
    assert r["error"].startswith("cni network hutchtest: plugin fake: ADD did not finish "
                                 "within 1 s")
    pid = int(open(os.path.join(lab.fakes, "pid")).read())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert os.listdir(lab.cache) == []


@pytest.mark.root
@needs_root
def test_an_add_cut_short_is_undone_by_the_next(lab):
    dirs = [lab.fake("kill"), PLUGINS]
    conf = lab.conflist([bridge(), {"type": "fake"}])
    ctr = lab.netns("c1")
    p = lab.start("add", conf, "c1", ctr, plugin_dirs=dirs)
    p.communicate(timeout=60)
    assert p.returncode == -signal.SIGKILL
    (first,) = lab.leases()
    assert json.load(open(os.path.join(lab.cache, "hutchtest+c1+eth0.json")))["result"] is None
    # the same network without the killer: the unfinished attachment is deleted first
    lab.conflist([bridge(), {"type": "firewall"}])
    addr = address_of(lab.ok("add", conf, "c1", ctr, plugin_dirs=dirs))
    assert lab.leases() == [addr] and addr != first
    assert open(os.path.join(lab.fakes, "calls")).read().split() == ["ADD", "DEL"]
    assert len(lab.host_veths()) == 1
    lab.ok("delete", conf, "c1", ctr)
    assert lab.leases() == [] and os.listdir(lab.cache) == []


# -- CHECK and versions ----------------------------------------------------------------------

@pytest.mark.root
@needs_root
def test_check(lab):
    # no portmap: its CHECK in plugins 1.1.1 looks for ip6tables rules an IPv4-only
    # container does not have (fixed in 1.3.0)
    conf = lab.conflist([bridge(), {"type": "firewall"}])
    ctr = lab.netns("c1")
    r = lab.call("check", conf, "c1", ctr)
    assert r["errno"] == errno.ENOENT and "container c1 is not attached" in r["error"]
    lab.ok("add", conf, "c1", ctr)
    assert lab.ok("check", conf, "c1", ctr) is True
    subprocess.run(["ip", "-n", ctr, "link", "del", "eth0"], check=True)
    r = lab.call("check", conf, "c1", ctr)
    assert r["error"].startswith("cni network hutchtest: plugin bridge: CHECK failed: ")
    lab.conflist([bridge(), {"type": "firewall"}], disableCheck=True)
    assert lab.ok("check", conf, "c1", ctr) is False
    lab.ok("delete", conf, "c1", ctr)
    assert lab.leases() == [] and lab.host_veths() == []


@pytest.mark.root
@needs_root
@pytest.mark.parametrize("version", ["0.3.1", "0.4.0"])
def test_older_conflist_versions(lab, version):
    plugins = [bridge(), {"type": "portmap", "capabilities": {"portMappings": True}}]
    if version == "0.4.0":
        plugins.append({"type": "firewall"})   # firewall takes 0.4.0 and 1.0.0 only
    conf = lab.conflist(plugins, version=version)
    ctr = lab.netns("c1")
    result = lab.ok("add", conf, "c1", ctr,
                    port_mappings=[{"hostPort": 8080, "containerPort": 80}])
    assert result["cniVersion"] == version
    addr = address_of(result)
    assert f"inet {addr}/24 " in lab.ip(ctr, "addr", "show", "dev", "eth0")
    srv = lab.server(ctr, "0.0.0.0", 80)
    assert lab.connect(lab.host, GATEWAY, 8080).startswith("hello ")
    srv.wait(timeout=10)
    # 0.3.1 has no CHECK (0.4.0's would trip over portmap's, see test_check)
    if version == "0.3.1":
        assert lab.ok("check", conf, "c1", ctr) is False
    lab.ok("delete", conf, "c1", ctr)
    assert lab.leases() == [] and lab.host_veths() == []


@pytest.mark.root
@needs_root
def test_cni_versions_picks_the_highest_every_plugin_takes(lab):
    conf = lab.conflist([bridge(), {"type": "firewall"}], version="1.1.0",
                        cniVersions=["0.3.1", "0.4.0", "1.0.0", "1.1.0"])
    ctr = lab.netns("c1")
    assert lab.ok("add", conf, "c1", ctr)["cniVersion"] == "1.0.0"
    assert json.load(open(os.path.join(lab.cache, "hutchtest+c1+eth0.json")))[
        "cniVersion"] == "1.0.0"
    assert lab.ok("check", conf, "c1", ctr) is True
    lab.ok("delete", conf, "c1", ctr)
    assert lab.leases() == []


@pytest.mark.root
@needs_root
def test_a_single_plugin_conf_of_version_0_2_0(lab):
    # a .conf, not a list, and the old result shape: ip4 becomes ips
    conf = os.path.join(lab.dir, "old.conf")
    with open(conf, "w") as f:
        json.dump({"cniVersion": "0.2.0", "name": "hutchtest",
                   **bridge(dataDir=lab.ipam)}, f)
    ctr = lab.netns("c1")
    result = lab.ok("add", conf, "c1", ctr)
    addr = address_of(result)
    assert "ip4" not in result and result["interfaces"] == []
    assert f"inet {addr}/24 " in lab.ip(ctr, "addr", "show", "dev", "eth0")
    assert lab.ok("check", conf, "c1", ctr) is False
    lab.ok("delete", conf, "c1", ctr)
    assert lab.leases() == [] and lab.host_veths() == []


@pytest.mark.root
@needs_root
def test_one_container_is_not_added_twice_at_once(lab):
    conf = lab.conflist([bridge(), {"type": "firewall"}])
    ctr = lab.netns("c1")
    results = [lab.finish(p) for p in [lab.start("add", conf, "c1", ctr)
                                       for _ in range(2)]]
    ok = [r for r in results if "ok" in r]
    refused = [r for r in results if "error" in r]
    assert len(ok) == 1 and len(refused) == 1, results
    assert refused[0]["errno"] == errno.EEXIST
    assert lab.leases() == [address_of(ok[0]["ok"])] and len(lab.host_veths()) == 1
    lab.ok("delete", conf, "c1", ctr)
    assert lab.leases() == [] and os.listdir(lab.cache) == []
