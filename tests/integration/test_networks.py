"""Container networks (hutch network, --network, -p, names, NAT, IPv6, bandwidth),
with real traffic checked from both ends.

Each test builds a lab of its own: a network namespace standing for the host
(where hutch runs, so its bridges, veths, nftables table and DNS responder live
there) and another standing for "the internet", joined by a veth.  The internet
has no route back to any container subnet, so a reply proves NAT.  hutch runs
in a private mount namespace too, where /etc/resolv.conf names 127.0.0.53: a
fake upstream resolver the test runs in the host namespace.  Nothing reaches an
address outside the two namespaces, and the lab checks that nothing is left in
them (links, table, processes) before it deletes them."""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
import uuid

import pytest

from conftest import IS_ROOT, REPO

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not IS_ROOT, reason="networks need root")]
HUTCH = os.path.join(REPO, ".venv", "bin", "hutch-fast")
PY = os.path.join(REPO, ".venv", "bin", "python")
UPLINK4, INET4 = "198.18.0.2", "198.18.0.1"
UPLINK6, INET6 = "fd00:18::2", "fd00:18::1"

# a fake upstream resolver: answers NAME.test with 198.18.0.1 (and ::1 AAAA),
# anything else NXDOMAIN; listens on 127.0.0.53:53 (udp and tcp)
FAKE_DNS = textwrap.dedent("""
    import socket, sys, threading
    import dns.message, dns.rrset, dns.rcode
    def answer(data):
        q = dns.message.from_wire(data)
        r = dns.message.make_response(q)
        name = q.question[0].name.to_text()
        if name.endswith(".test."):
            if q.question[0].rdtype == 1:
                r.answer.append(dns.rrset.from_text(name, 30, "IN", "A", "198.18.0.1"))
        else:
            r.set_rcode(dns.rcode.NXDOMAIN)
        return r.to_wire()
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    u.bind(("127.0.0.53", 53))
    print("ready", flush=True)
    while True:
        data, peer = u.recvfrom(4096)
        try:
            u.sendto(answer(data), peer)
        except Exception:
            pass
""")


def sh(argv, check=True, **kw):
    return subprocess.run(argv, check=check, capture_output=True, text=True, **kw)


class Lab:
    def __init__(self):
        tag = uuid.uuid4().hex[:6]
        self.host, self.inet = f"hutch-h{tag}", f"hutch-i{tag}"
        self.procs = []
        sh(["ip", "netns", "add", self.host])
        sh(["ip", "netns", "add", self.inet])
        h, i = ["ip", "-n", self.host], ["ip", "-n", self.inet]
        sh(h + ["link", "add", "up0", "type", "veth", "peer", "name", "down0",
                "netns", self.inet])
        sh(h + ["addr", "add", f"{UPLINK4}/24", "dev", "up0"])
        sh(h + ["addr", "add", f"{UPLINK6}/64", "dev", "up0", "nodad"])
        sh(i + ["addr", "add", f"{INET4}/24", "dev", "down0"])
        sh(i + ["addr", "add", f"{INET6}/64", "dev", "down0", "nodad"])
        for ns in (h, i):
            sh(ns + ["link", "set", "lo", "up"])
        sh(h + ["link", "set", "up0", "up"])
        sh(i + ["link", "set", "down0", "up"])
        sh(h + ["route", "add", "default", "via", INET4])
        sh(h + ["-6", "route", "add", "default", "via", INET6])
        # a new namespace copies the host's ip_forward (1 here): start from 0, so
        # that the lab shows hutch turning it on and restoring it
        self.in_host(["sysctl", "-qw", "net.ipv4.ip_forward=0"])
        self.root = tempfile.mkdtemp(prefix="hutch-net-root-")
        os.chmod(self.root, 0o755)
        self.config = tempfile.mkdtemp(prefix="hutch-net-cfg-")
        self.resolv = os.path.join(self.config, "resolv.conf")
        with open(self.resolv, "w") as f:
            f.write("nameserver 127.0.0.53\n")
        self.www = tempfile.mkdtemp(prefix="hutch-net-www-")
        os.chmod(self.www, 0o755)
        with open(os.path.join(self.www, "index.html"), "w") as f:
            f.write("hello from the container\n")
        os.chmod(os.path.join(self.www, "index.html"), 0o644)

    # --- running things -----------------------------------------------------------------
    def wrap(self, argv):
        """argv in the lab's host namespace, with the lab's /etc/resolv.conf."""
        return ["unshare", "-m", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/resolv.conf && exec nsenter '
                f'--net=/run/netns/{self.host} "$@"', self.resolv] + list(argv)

    def hutch(self, *args, check=True, timeout=60, env=None):
        # files, not pipes: a created container keeps its stdio open
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            r = subprocess.run(self.wrap([HUTCH, "--root", self.root, "--config-dir",
                                          self.config] + list(args)),
                               stdout=out, stderr=err, timeout=timeout,
                               stdin=subprocess.DEVNULL, env=env)
            out.seek(0)
            err.seek(0)
            r.stdout = out.read().decode(errors="replace")
            r.stderr = err.read().decode(errors="replace")
        if check and r.returncode != 0:
            raise AssertionError(f"hutch {' '.join(args)}: exit {r.returncode}: "
                                 f"{r.stderr.strip()}")
        return r

    def in_host(self, argv, **kw):
        return sh(["nsenter", f"--net=/run/netns/{self.host}"] + list(argv), **kw)

    def in_inet(self, argv, **kw):
        return sh(["nsenter", f"--net=/run/netns/{self.inet}"] + list(argv), **kw)

    def bg(self, where, argv):
        p = subprocess.Popen(["nsenter", f"--net=/run/netns/{where}"] + list(argv),
                             stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.procs.append(p)
        return p

    def fake_dns(self):
        p = self.bg(self.host, [PY, "-c", FAKE_DNS])
        assert p.stdout.readline().strip() == "ready"
        return p

    def detached(self, name, cmd, *opts):
        self.hutch("sandbox", "-d", "--name", name, *opts, "--", *cmd)

    def exec(self, name, *cmd, check=True, timeout=30):
        return self.hutch("exec", name, *cmd, check=check, timeout=timeout)

    def inspect(self, net):
        return json.loads(self.hutch("network", "inspect", net).stdout)[0]

    # --- the end ------------------------------------------------------------------------
    def leftovers(self):
        left = []
        links = self.in_host(["ip", "-o", "link"]).stdout
        left += [ln.split(":")[1].strip() for ln in links.splitlines()
                 if ln.split(":")[1].strip().split("@")[0] not in ("lo", "up0")]
        tables = self.in_host(["nft", "list", "tables"]).stdout
        if "hutch" in tables:
            left.append("nft table inet hutch")
        ours = {p.pid for p in self.procs if p.poll() is None}
        pids = sh(["ip", "netns", "pids", self.host], check=False).stdout.split()
        left += [f"process {p}: {_comm(p)}" for p in pids if int(p) not in ours]
        fwd = self.in_host(["sysctl", "-n", "net.ipv4.ip_forward"]).stdout.strip()
        if fwd != "0":
            left.append(f"ip_forward {fwd}")
        nets = os.path.join(self.root, ".networks")
        if os.path.isdir(nets):
            left += [f"{nets}/{n}" for n in os.listdir(nets)
                     if n not in ("lock", "cni-cache")]
        return left

    def close(self):
        for n in os.listdir(self.root):
            if not n.startswith("."):
                self.hutch("delete", "-f", n, check=False)
        left = self.leftovers()
        for p in self.procs:
            p.kill()
            p.wait()
        for ns in (self.host, self.inet):
            for pid in sh(["ip", "netns", "pids", ns], check=False).stdout.split():
                try:
                    os.kill(int(pid), 9)    # only processes of the lab's namespaces
                except ProcessLookupError:
                    pass
            sh(["ip", "netns", "del", ns], check=False)
        for d in (self.root, self.config, self.www):
            shutil.rmtree(d, ignore_errors=True)
        return left


def _comm(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")[:120]
    except OSError:
        return "?"


@pytest.fixture
def lab():
    lab = Lab()
    try:
        yield lab
    finally:
        left = lab.close()
    assert left == [], f"left behind: {left}"


def httpd(lab, name, port, *opts):
    """A detached sandbox serving lab.www on PORT (busybox httpd)."""
    lab.detached(name, ["busybox", "httpd", "-f", "-p", f"[::]:{port}", "-h", "/www"],
                 "-v", f"{lab.www}:/www:ro", *opts)


def curl(url, t=3):
    # (Debian 12's static busybox wget crashes; curl is the host's, which a
    # sandbox sees)
    return ["curl", "-sS", "-g", "-m", str(t), url]


def fetch(run, url, tries=30):
    """Fetches url with curl through ``run`` (a lab method), retrying while the
    server starts; returns the body or raises."""
    last = None
    for _ in range(tries):
        r = run(curl(url), check=False)
        if r.returncode == 0:
            return r.stdout
        last = r.stderr
        time.sleep(0.2)
    raise AssertionError(f"{url}: {last}")


# --- the tests ----------------------------------------------------------------------------
def test_network_create_inspect_rm_in_use(lab):
    lab.hutch("network", "create", "n1", "--subnet", "10.99.1.0/24")
    ls = lab.hutch("network", "ls").stdout
    assert "n1" in ls and "default" in ls and "10.99.1.0/24" in ls
    lab.detached("a", ["sleep", "300"], "--network", "n1")
    info = lab.inspect("n1")
    ip = info["containers"]["a"]["ip4"]
    assert ip.startswith("10.99.1.") and info["active"]
    # the container's own view agrees
    out = lab.exec("a", "ip", "-4", "-o", "addr", "show", "eth0").stdout
    assert f"{ip}/24" in out
    r = lab.hutch("network", "rm", "n1", check=False)
    assert r.returncode == 1 and "in use" in r.stderr and "a" in r.stderr
    state = json.loads(lab.hutch("state", "a").stdout)
    assert state["annotations"]["org.hutch.network.n1"] == ip
    r = lab.hutch("checkpoint", "--image-path", os.path.join(lab.root, "img"), "a",
                  check=False)
    assert r.returncode == 1 and "hutch network" in r.stderr
    # a responder that died is started again by the next container
    pid = json.load(open(os.path.join(lab.root, ".networks", "n1", "leases.json"))
                    )["resolver"]["pid"]
    os.kill(pid, 9)
    lab.detached("b", ["sleep", "300"], "--network", "n1")
    out = lab.exec("b", "busybox", "nslookup", "a").stdout
    assert ip in out
    lab.hutch("delete", "-f", "a")
    lab.hutch("delete", "-f", "b")
    assert not lab.inspect("n1")["active"]
    lab.hutch("network", "rm", "n1")
    assert "n1" not in lab.hutch("network", "ls").stdout


def test_names_and_late_server(lab):
    """Two sandboxes on one network talk by name; the server starts after the
    client, and is still found (a resolver, not a stale /etc/hosts)."""
    lab.hutch("network", "create", "web")
    lab.detached("client", ["sleep", "300"], "--network", "web")
    httpd(lab, "srv", 8080, "--network", "web")
    body = fetch(lambda a, check: lab.exec("client", *a, check=check),
                 "http://srv:8080/")
    assert body == "hello from the container\n"
    # the client's /etc/hosts knows only itself; /etc/resolv.conf names the gateway
    hosts = lab.exec("client", "cat", "/etc/hosts").stdout
    assert "srv" not in hosts and "client" in hosts
    gw = lab.inspect("web")["gateway"]
    assert lab.exec("client", "cat", "/etc/resolv.conf").stdout == f"nameserver {gw}\n"


def test_publish_from_host_loopback_and_internet(lab):
    httpd(lab, "pub", 80, "--network", "default", "-p", "8080:80")
    want = "hello from the container\n"
    assert fetch(lab.in_host, "http://127.0.0.1:8080/") == want
    assert fetch(lab.in_host, f"http://{UPLINK4}:8080/") == want
    assert fetch(lab.in_inet, f"http://{UPLINK4}:8080/") == want
    # IPv6 to an IPv4-only container: the responder's proxy
    assert fetch(lab.in_host, "http://[::1]:8080/") == want
    assert fetch(lab.in_inet, f"http://[{UPLINK6}]:8080/") == want
    # the port is taken: a second container cannot publish it
    r = lab.hutch("sandbox", "--network", "default", "-p", "8080:80", "--", "true",
                  check=False)
    assert r.returncode != 0 and "8080/tcp" in r.stderr and "pub" in r.stderr


def test_egress_through_nat(lab):
    """The internet namespace has no route to the container subnet: a reply
    proves the masquerade, and the server sees the host's address."""
    srv = lab.bg(lab.inet, [PY, "-c", textwrap.dedent("""
        import socket
        s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("198.18.0.1", 9000)); s.listen(); print("ready", flush=True)
        c, peer = s.accept(); c.recv(1000)
        c.sendall(b"HTTP/1.0 200 OK\\r\\n\\r\\nseen " + peer[0].encode() + b"\\n")
        c.close(); print(peer[0], flush=True)
    """)])
    assert srv.stdout.readline().strip() == "ready"
    r = lab.hutch("sandbox", "--network", "default", "--", *curl(f"http://{INET4}:9000/"))
    assert r.stdout == f"seen {UPLINK4}\n"
    assert srv.stdout.readline().strip() == UPLINK4


def test_internal_network_blocks_egress(lab):
    lab.hutch("network", "create", "closed", "--internal")
    lab.bg(lab.inet, [PY, "-m", "http.server", "-b", INET4, "9002"])
    assert fetch(lab.in_host, f"http://{INET4}:9002/")      # the internet is there
    r = lab.hutch("sandbox", "--network", "closed", "--",
                  *curl(f"http://{INET4}:9002/", 2), check=False)
    assert r.returncode == 28, r.stderr         # curl's "timed out"
    # names outside are refused, not forwarded (no DNS tunnel out)
    lab.fake_dns()
    r = lab.hutch("sandbox", "--network", "closed", "--", "busybox", "nslookup",
                  "example.test", check=False)
    assert "198.18.0.1" not in r.stdout
    # but inside the network, containers reach each other by name
    httpd(lab, "inside", 80, "--network", "closed")
    got = lab.hutch("sandbox", "--network", "closed", "--", "sh", "-c",
                    "for i in 1 2 3 4 5 6 7 8 9 10; do curl -sS -m 2 http://inside/ "
                    "&& exit 0; sleep 0.3; done; exit 1").stdout
    assert got == "hello from the container\n"


def test_dns_forwards_to_a_loopback_resolver(lab):
    lab.fake_dns()
    r = lab.hutch("sandbox", "--network", "default", "--", "busybox", "nslookup",
                  "example.test")
    assert "198.18.0.1" in r.stdout
    r = lab.hutch("sandbox", "--network", "default", "--", "busybox", "nslookup",
                  "nothing.invalid", check=False)
    assert r.returncode != 0


def test_ipv6_between_sandboxes_and_published(lab):
    lab.hutch("network", "create", "six", "--ipv6")
    info = lab.inspect("six")
    httpd(lab, "srv6", 80, "--network", "six", "-p", "8086:80")
    ip6 = lab.inspect("six")["containers"]["srv6"]["ip6"]
    assert ip6.startswith(info["subnet6"].split("::")[0])
    want = "hello from the container\n"
    got = fetch(lambda a, check: lab.hutch("sandbox", "--network", "six", "--", *a,
                                           check=check), f"http://[{ip6}]:80/", 10)
    assert got == want
    # by name: the responder answers AAAA
    r = lab.hutch("sandbox", "--network", "six", "--", "busybox", "nslookup",
                  "-type=AAAA", "srv6")
    assert ip6 in r.stdout
    assert fetch(lab.in_inet, f"http://[{UPLINK6}]:8086/") == want     # DNAT, v6
    assert fetch(lab.in_host, "http://[::1]:8086/") == want             # proxy
    # egress over IPv6, masqueraded: the internet has no route to the ULA
    lab.bg(lab.inet, [PY, "-m", "http.server", "-b", INET6, "9006", "-d", lab.www])
    fetch(lab.in_host, f"http://[{INET6}]:9006/")
    got = lab.hutch("sandbox", "--network", "six", "--", *curl(f"http://[{INET6}]:9006/"))
    assert got.stdout == want


def test_concurrent_creates_get_distinct_addresses(lab):
    names = [f"c{i}" for i in range(6)]
    threads = [threading.Thread(target=lab.detached, args=(n, ["sleep", "300"],
                                                           "--network", "default"))
               for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ips = {n: c["ip4"] for n, c in lab.inspect("default")["containers"].items()}
    assert sorted(ips) == names and len(set(ips.values())) == 6


def test_bandwidth_limit(lab):
    """--bandwidth 10mbit, measured with iperf3 both ways (container to host,
    and with -R host to container)."""
    # a server per direction: a container's last packets (its FIN too) may still
    # sit in the shaper's queue when its namespace goes, and a server that
    # missed them stays busy
    for port in (5201, 5202):
        lab.bg(lab.host, ["iperf3", "-s", "-p", str(port)])
    for port, extra in ((5201, ()), (5202, ("-R",))):
        for _ in range(20):
            r = lab.hutch("sandbox", "--network", "default", "--bandwidth", "10mbit",
                          "--", "iperf3", "-c", "10.77.0.1", "-p", str(port), "-t", "4",
                          "-J", *extra, check=False, timeout=60)
            res = json.loads(r.stdout)
            if "connect" not in res.get("error", ""):
                break
            time.sleep(0.3)     # the server is not listening yet
        assert "sum_received" in res.get("end", {}), res.get("error") or r.stdout[-400:]
        mbit = res["end"]["sum_received"]["bits_per_second"] / 1e6
        print("measured", extra, mbit)
        assert 7 <= mbit <= 13, (extra, mbit)


def test_library_on_a_network(lab):
    code = textwrap.dedent(f"""
        import sys; sys.path.insert(0, {os.path.join(REPO, 'src')!r})
        import hutch
        with hutch.Sandbox(root={lab.root!r}, network="default", name="lib",
                           config_dir={lab.config!r}) as sb:
            r = sb.run(["ip", "-4", "-o", "addr", "show", "eth0"])
            print(r.stdout.decode().split()[3])
            r = sb.run(["curl", "-sS", "-m", "5", "http://{INET4}:9001/"])
            print(r.returncode)
    """)
    lab.bg(lab.inet, [PY, "-c", "import socket\ns=socket.socket()\n"
                      "s.bind(('198.18.0.1',9001));s.listen()\n"
                      "c,_=s.accept();c.recv(100);c.sendall(b'HTTP/1.0 200 OK\\r\\n\\r\\nx')"])
    time.sleep(0.3)
    out = subprocess.run(lab.wrap([PY, "-c", code]), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr
    addr, rc = out.stdout.split()
    assert addr.startswith("10.77.") and rc == "0"


def test_oci_annotations_and_killed_creates(lab, busybox_rootfs, tmp_path):
    """An engine's bundle asks for a network with annotations (`runc spec`'s
    config); a create killed at each network step leaves nothing once
    `delete -f` ran."""
    from conftest import base_config
    b = str(tmp_path / "bundle")
    shutil.copytree(busybox_rootfs, os.path.join(b, "rootfs"), symlinks=True)
    cfg = base_config(["httpd", "-f", "-p", "80", "-h", "/www"])
    cfg["annotations"] = {"org.hutch.network": "default",
                          "org.hutch.publish": "8090:80,127.0.0.1:8091:80"}
    cfg["mounts"].append({"destination": "/www", "type": "bind", "source": lab.www,
                          "options": ["rbind", "ro"]})
    with open(os.path.join(b, "config.json"), "w") as f:
        json.dump(cfg, f)
    for point in ("network:leased", "network:veth", "create:ready"):
        r = lab.hutch("create", "--bundle", b, "k", check=False,
                      env=dict(os.environ, HUTCH_FAILPOINT=point))
        assert r.returncode != 0
        lab.hutch("delete", "-f", "k")
        assert lab.leftovers() == [], point
    lab.hutch("create", "--bundle", b, "oci1")
    lab.hutch("start", "oci1")
    want = "hello from the container\n"
    assert fetch(lab.in_inet, f"http://{UPLINK4}:8090/") == want
    assert fetch(lab.in_host, "http://127.0.0.1:8091/") == want
    # its resolv.conf and hosts are its own, bound over the rootfs's
    assert lab.exec("oci1", "cat", "/etc/resolv.conf").stdout == "nameserver 10.77.0.1\n"
    assert not os.path.exists(os.path.join(b, "rootfs", "etc", "resolv.conf")) or \
        "10.77.0.1" not in open(os.path.join(b, "rootfs", "etc", "resolv.conf")).read()
    lab.hutch("delete", "-f", "oci1")


def test_cni_conflist(lab):
    """A sandbox on a CNI conflist: Debian's bridge, host-local and portmap."""
    data = os.path.join(lab.config, "ipam")
    conf = os.path.join(lab.config, "cnitest.conflist")
    with open(conf, "w") as f:
        json.dump({"cniVersion": "1.0.0", "name": "cnitest", "plugins": [
            {"type": "bridge", "bridge": "cnitest0", "isGateway": True, "ipMasq": True,
             "ipam": {"type": "host-local", "dataDir": data,
                      "ranges": [[{"subnet": "10.99.9.0/24"}]],
                      "routes": [{"dst": "0.0.0.0/0"}]}},
            {"type": "portmap", "capabilities": {"portMappings": True}}]}, f)
    # a create killed once the plugins ran: delete -f finds the conflist in
    # the cache and runs DEL (no lease, no veth left)
    r = lab.hutch("sandbox", "-d", "--name", "cnikill", "--network", f"cni:{conf}",
                  "--", "sleep", "100", check=False,
                  env=dict(os.environ, HUTCH_FAILPOINT="network:cni"))
    assert r.returncode != 0
    lab.hutch("delete", "-f", "cnikill")
    assert [n for n in os.listdir(os.path.join(data, "cnitest"))
            if n.startswith("10.")] == []
    assert "veth" not in lab.in_host(["ip", "-o", "link"]).stdout
    httpd(lab, "cnisrv", 80, "--network", f"cni:{conf}", "-p", "8089:80")
    assert lab.exec("cnisrv", "ip", "-4", "-o", "addr", "show", "eth0").stdout.split()[3] \
        .startswith("10.99.9.")
    assert fetch(lab.in_inet, f"http://{UPLINK4}:8089/") == "hello from the container\n"
    lab.hutch("delete", "-f", "cnisrv")
    # host-local's lease (a file named by the address) is gone
    assert [n for n in os.listdir(os.path.join(data, "cnitest"))
            if n.startswith("10.")] == []
    assert "veth" not in lab.in_host(["ip", "-o", "link"]).stdout
    # the bridge plugin never removes its bridge, and turns ip_forward on for
    # good (isGateway): CNI's ways, undone by the test
    lab.in_host(["ip", "link", "del", "cnitest0"])
    lab.in_host(["sysctl", "-qw", "net.ipv4.ip_forward=0"])


def test_verbs_that_do_not_network_import_no_networking():
    """`hutch state`, `list` and a loopback `sandbox` load neither pyroute2,
    dnspython nor hutch's network modules (python -X importtime)."""
    for argv in (["list"], ["state", "nothing-here"], ["sandbox", "--", "true"]):
        r = subprocess.run([sys.executable, "-X", "importtime", HUTCH] + argv,
                           capture_output=True, text=True)
        mods = [ln.split("|")[-1].strip() for ln in r.stderr.splitlines()
                if ln.startswith("import time:")]
        bad = [m for m in mods if m.startswith(("pyroute2", "dns", "hutch.network.",
                                                "asyncio"))]
        assert mods and bad == [], (argv, bad)


@pytest.mark.parametrize("tool", ["slirp4netns", "pasta"])
def test_rootless_egress_and_publish(lab, tool):
    """A non-root user's sandbox on slirp4netns or pasta reaches the internet namespace
    and publishes a port.  (This VM's /dev/net/tun is 0600 without udev: the lab
    gives the user a 0666 node in its private mount namespace.)"""
    import pwd
    name = "hutch-n-" + uuid.uuid4().hex[:6]
    sh(["useradd", "-M", "-s", "/usr/sbin/nologin", name])
    try:
        pw = pwd.getpwnam(name)
        root = os.path.join(lab.root, "user")
        os.makedirs(root, mode=0o700)
        os.chown(root, pw.pw_uid, pw.pw_gid)
        lab.bg(lab.inet, [PY, "-m", "http.server", "-b", INET4, "9003",
                          "-d", lab.www])
        fetch(lab.in_host, f"http://{INET4}:9003/")

        def as_user(*args, wait=True):
            argv = ["unshare", "-m", "--propagation", "private", "sh", "-c",
                    "mount -t tmpfs -o mode=755 tun /dev/net && "
                    "mknod -m 666 /dev/net/tun c 10 200 && "
                    f"exec nsenter --net=/run/netns/{lab.host} setpriv "
                    f"--reuid {pw.pw_uid} --regid {pw.pw_gid} --clear-groups "
                    f"env XDG_RUNTIME_DIR={root} \"$@\"", "sh",
                    HUTCH, "--root", root, "sandbox", "--network", tool]
            argv += list(args)
            if not wait:
                p = subprocess.Popen(argv, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL)
                lab.procs.append(p)
                return p
            return sh(argv, check=False, timeout=60)
        r = as_user("--", *curl(f"http://{INET4}:9003/index.html", 5))
        assert r.returncode == 0 and r.stdout == "hello from the container\n", r.stderr
        srv = as_user("-p", "8092:80", "-v", f"{lab.www}:/www:ro", "--",
                      "busybox", "httpd", "-f", "-p", "80", "-h", "/www", wait=False)
        assert fetch(lab.in_inet, f"http://{UPLINK4}:8092/") == \
            "hello from the container\n"
        srv.terminate()
        srv.wait(timeout=20)
    finally:
        subprocess.run(["pkill", "-9", "-u", name], capture_output=True)
        subprocess.run(["userdel", name], check=True)


def test_options_and_two_networks(lab):
    """--ip, --dns, --add-host and --network-alias, and a sandbox on two
    networks: eth0 and eth1, a default route through the first, names on both."""
    lab.hutch("network", "create", "front", "--subnet", "10.99.2.0/24")
    lab.hutch("network", "create", "back", "--subnet", "10.99.3.0/24", "--ipv6")
    lab.detached("both", ["sleep", "300"], "--network", "front,back", "--ip",
                 "10.99.2.50", "--dns", "198.18.0.53", "--add-host", "mirror:10.1.2.3",
                 "--network-alias", "www")
    addrs = lab.exec("both", "ip", "-o", "addr").stdout
    by_if = {}
    for line in addrs.splitlines():
        f = line.split()
        by_if.setdefault(f[1], []).append(f[3])
    assert "10.99.2.50/24" in by_if["eth0"]
    assert any(a.startswith("10.99.3.") for a in by_if["eth1"])
    assert any(a.startswith("fd") for a in by_if["eth1"])     # back has IPv6
    route = lab.exec("both", "ip", "route", "show", "default").stdout
    assert route.startswith("default via 10.99.2.1 dev eth0"), route
    assert lab.exec("both", "cat", "/etc/resolv.conf").stdout == "nameserver 198.18.0.53\n"
    hosts = lab.exec("both", "cat", "/etc/hosts").stdout
    assert "10.1.2.3\tmirror" in hosts and "10.99.2.50\tboth" in hosts
    assert "www" in hosts.split("10.99.2.50")[1].splitlines()[0]
    # another container finds it by its alias on either network
    for net, prefix in (("front", "10.99.2.50"), ("back", "10.99.3.")):
        out = lab.hutch("sandbox", "--network", net, "--", "busybox", "nslookup",
                        "www").stdout
        assert f"Address: {prefix}" in out, (net, out)
    # --ip taken: refused by name
    r = lab.hutch("sandbox", "--network", "front", "--ip", "10.99.2.50", "--", "true",
                  check=False)
    assert r.returncode == 1 and "in use" in r.stderr
