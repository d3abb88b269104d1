"""The network daemon (hutch.network.resolver) as a real process on loopback: DNS
over UDP and TCP against a fake upstream resolver run here, the IPv6 port proxy
against echo servers, and its start, reload and stop.  No root: 127.0.0.1, ::1
and high ports."""

import itertools
import json
import os
import random
import signal
import socket
import socketserver
import threading
import time

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.rdatatype
import dns.reversename
import dns.rrset
import pytest

from hutch.errors import HutchError
from hutch.network import resolver as R

CID = "0123456789abcdef" * 2      # a full id of 64 would not fit a DNS label (63)
LEASES = {
    CID: {"name": "web", "aliases": ["www"], "ip4": "10.77.0.5", "ip6": "fd77::5"},
    "c2": {"name": "v4only", "ip4": "10.77.0.6"},
}

# ports below the ephemeral range, handed out once per run
_ports = itertools.count(random.randrange(20000, 30000, 100))


def free_port():
    """A port free for UDP and TCP on 127.0.0.1 and ::1."""
    for _ in range(200):
        port = next(_ports)
        socks = []
        try:
            for family, ip in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
                for kind in (socket.SOCK_DGRAM, socket.SOCK_STREAM):
                    s = socket.socket(family, kind)
                    socks.append(s)
                    s.bind((ip, port))
            return port
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no free port")


def write_json(path, data):
    """As hutch writes leases.json: a new file renamed over the old one."""
    tmp = str(path) + ".tmp"
    with open(tmp, "w") as f:
        f.write(data if isinstance(data, str) else json.dumps(data))
    os.rename(tmp, path)


def gone(data):
    try:
        with open(f"/proc/{data['pid']}/stat", "rb") as f:
            st = f.read()
    except FileNotFoundError:
        return True
    fields = st[st.rindex(b")") + 2:].split()
    return int(fields[19]) != data["starttime"] or fields[0] in (b"Z", b"X")


# --- a fake upstream resolver ---------------------------------------------------------
class Upstream:
    """A resolver on 127.0.0.1:port (UDP and TCP).  ``example.test`` has an A
    record; over UDP ``big.test`` comes back truncated (TC, no answer) and
    whole over TCP; other names are NXDOMAIN.  ``seen`` lists (proto, name, id)."""

    RECORDS = {"example.test.": "192.0.2.7", "big.test.": "192.0.2.8"}

    def __init__(self):
        self.port = free_port()
        self.seen = []
        up = self

        def answer(data, proto):
            q = dns.message.from_wire(data)
            name = q.question[0].name.to_text().lower()
            up.seen.append((proto, name, q.id))
            r = dns.message.make_response(q)
            if name in up.RECORDS:
                if proto == "udp" and name == "big.test.":
                    r.flags |= dns.flags.TC
                else:
                    r.answer.append(dns.rrset.from_text(q.question[0].name, 300, "IN", "A",
                                                        up.RECORDS[name]))
            else:
                r.set_rcode(dns.rcode.NXDOMAIN)
            return r.to_wire()

        class Udp(socketserver.BaseRequestHandler):
            def handle(self):
                data, sock = self.request
                sock.sendto(answer(data, "udp"), self.client_address)

        class Tcp(socketserver.BaseRequestHandler):
            def handle(self):
                f = self.request.makefile("rb")
                while True:
                    head = f.read(2)
                    if len(head) < 2:
                        return
                    wire = answer(f.read(int.from_bytes(head, "big")), "tcp")
                    self.request.sendall(len(wire).to_bytes(2, "big") + wire)

        socketserver.ThreadingTCPServer.allow_reuse_address = True
        self.servers = [socketserver.ThreadingUDPServer(("127.0.0.1", self.port), Udp),
                        socketserver.ThreadingTCPServer(("127.0.0.1", self.port), Tcp)]
        self.threads = []
        for s in self.servers:
            s.daemon_threads = True
            t = threading.Thread(target=s.serve_forever, kwargs={"poll_interval": 0.05})
            t.start()
            self.threads.append(t)

    def close(self):
        for s in self.servers:
            s.shutdown()
            s.server_close()
        for t in self.threads:
            t.join()


@pytest.fixture
def upstream():
    u = Upstream()
    yield u
    u.close()


# --- the daemon -------------------------------------------------------------------------
class Net:
    def __init__(self, run_dir, port, data):
        self.dir, self.port, self.data = run_dir, port, data
        self.leases = os.path.join(run_dir, "leases.json")
        self.resolv = os.path.join(run_dir, "resolv.conf")

    def ask(self, name, rdtype="A", host="127.0.0.1", tcp=False, timeout=5.0, qid=None):
        q = dns.message.make_query(name, rdtype)
        if qid is not None:
            q.id = qid
        how = dns.query.tcp if tcp else dns.query.udp
        return how(q, host, timeout=timeout, port=self.port)

    def set_leases(self, leases, **top):
        write_json(self.leases, {"network": "testnet", "gateway4": "10.77.0.1",
                                 "gateway6": "fd77::1", "leases": leases, **top})


@pytest.fixture
def net(tmp_path):
    """Starts the daemon of a network in tmp_path: ``net(leases, resolv=...)``;
    stops it afterwards and checks it is gone."""
    started = []

    def make(leases=LEASES, resolv="nameserver 127.0.0.1\n", upstream_port=53,
             ips=("127.0.0.1", "::1")):
        run_dir = str(tmp_path)
        n = Net(run_dir, free_port(), None)
        n.set_leases(leases)
        write_json(n.resolv, resolv)
        n.data = R.start(run_dir, list(ips), resolv_conf=n.resolv, port=n.port,
                         upstream_port=upstream_port)
        started.append(n)
        return n

    yield make
    for n in started:
        R.stop(n.dir, n.data)
        assert gone(n.data)


def addrs(r):
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


# --- DNS: local names -------------------------------------------------------------------
def test_local_names_answer_a_aaaa_ptr_with_ttl_0(net):
    n = net()
    assert os.path.exists(os.path.join(n.dir, "resolver.pid"))
    r = n.ask("web")
    assert r.rcode() == dns.rcode.NOERROR and addrs(r) == ["10.77.0.5"]
    assert r.answer[0].ttl == 0 and r.flags & dns.flags.AA
    assert addrs(n.ask("web.", "AAAA")) == ["fd77::5"]
    for name in ("WEB", "Www", "www.hutch", "WEB.Hutch.", CID, CID.upper() + ".hutch"):
        assert addrs(n.ask(name)) == ["10.77.0.5"], name
    for host in ("127.0.0.1", "::1"):
        ptr = n.ask("5.0.77.10.in-addr.arpa", "PTR", host=host)
        assert addrs(ptr) == ["web."]
    ptr6 = n.ask(dns.reversename.from_address("fd77::5"), "PTR")
    assert addrs(ptr6) == ["web."]
    assert addrs(n.ask("v4only", host="::1")) == ["10.77.0.6"]


def test_a_name_without_the_family_is_nodata_and_unknown_hutch_names_nxdomain(net, upstream):
    n = net(upstream_port=upstream.port)
    r = n.ask("v4only", "AAAA")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []
    r = n.ask("web", "MX")
    assert r.rcode() == dns.rcode.NOERROR and r.answer == []
    assert n.ask("nobody.hutch").rcode() == dns.rcode.NXDOMAIN
    assert not [s for s in upstream.seen if "nobody" in s[1]]      # not asked upstream


def test_a_name_added_to_the_leases_is_found_without_reload(net):
    n = net()
    assert n.ask("db.hutch").rcode() == dns.rcode.NXDOMAIN
    n.set_leases({**LEASES, "c3": {"name": "db", "ip4": "10.77.0.9", "ip6": None}})
    assert addrs(n.ask("db")) == ["10.77.0.9"]
    assert addrs(n.ask("9.0.77.10.in-addr.arpa", "PTR")) == ["db."]


def test_malformed_leases_keep_the_last_good_copy(net):
    n = net()
    assert addrs(n.ask("web")) == ["10.77.0.5"]         # booted, with a good copy
    write_json(n.leases, "{not json")
    assert addrs(n.ask("web")) == ["10.77.0.5"]
    reply = R.reload(n.dir)
    assert reply["t"] == "ok" and any("leases.json" in e for e in reply["errors"])
    os.unlink(n.leases)
    assert addrs(n.ask("www")) == ["10.77.0.5"]
    n.set_leases({"c9": {"name": "other", "ip4": "10.77.0.10"}})
    assert addrs(n.ask("other")) == ["10.77.0.10"]
    assert n.ask("web.hutch").rcode() == dns.rcode.NXDOMAIN
    assert R.reload(n.dir)["errors"] == []
    with open(os.path.join(n.dir, "resolver.log")) as f:
        assert "last good copy" in f.read()


# --- DNS: forwarding --------------------------------------------------------------------
def test_other_names_go_upstream_with_the_client_id_udp_and_tcp(net, upstream):
    n = net(upstream_port=upstream.port)
    r = n.ask("example.test", qid=4242)
    assert r.id == 4242 and addrs(r) == ["192.0.2.7"]
    assert upstream.seen[-1][:2] == ("udp", "example.test.")
    r = n.ask("example.test", tcp=True, qid=777)
    assert r.id == 777 and addrs(r) == ["192.0.2.7"]
    assert upstream.seen[-1][:2] == ("tcp", "example.test.")
    assert n.ask("missing.test").rcode() == dns.rcode.NXDOMAIN
    # local names over TCP, several queries on one connection, answers by id
    s = socket.create_connection(("::1", n.port), timeout=5)
    try:
        wanted = {}
        for i, name in enumerate(("web", "example.test", "www.hutch")):
            q = dns.message.make_query(name, "A")
            q.id = 100 + i
            wanted[q.id] = name
            wire = q.to_wire()
            s.sendall(len(wire).to_bytes(2, "big") + wire)
        f = s.makefile("rb")
        got = {}
        for _ in wanted:
            r = dns.message.from_wire(f.read(int.from_bytes(f.read(2), "big")))
            got[r.id] = addrs(r)
        assert got == {100: ["10.77.0.5"], 101: ["192.0.2.7"], 102: ["10.77.0.5"]}
    finally:
        s.close()


def test_a_truncated_udp_answer_is_asked_again_over_tcp(net, upstream):
    n = net(upstream_port=upstream.port)
    r = n.ask("big.test", qid=5151)
    assert r.id == 5151 and not r.flags & dns.flags.TC and addrs(r) == ["192.0.2.8"]
    assert [p for p, name, _ in upstream.seen if name == "big.test."] == ["udp", "tcp"]


def test_resolv_conf_changes_are_seen_and_no_nameserver_is_servfail(net, upstream):
    n = net(upstream_port=upstream.port)
    assert addrs(n.ask("example.test")) == ["192.0.2.7"]
    write_json(n.resolv, "# nothing\nsearch example\n")
    t = time.monotonic()
    assert n.ask("example.test").rcode() == dns.rcode.SERVFAIL
    assert time.monotonic() - t < 1.0
    assert addrs(n.ask("web")) == ["10.77.0.5"]


def test_dead_upstreams_servfail_in_bounded_time_while_local_names_answer(net):
    hole = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)    # takes queries, never answers
    hole.bind(("127.0.0.1", 0))
    dead = hole.getsockname()[1]
    resolv = "".join(f"nameserver 127.0.0.{i}\n" for i in (1, 2, 3))
    n = net(resolv=resolv, upstream_port=dead)
    assert addrs(n.ask("web")) == ["10.77.0.5"]             # booted
    c = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        q = dns.message.make_query("example.test", "A")
        t0 = time.monotonic()
        c.sendto(q.to_wire(), ("127.0.0.1", n.port))
        time.sleep(0.2)
        for tcp in (False, True):                        # meanwhile, at once
            t = time.monotonic()
            assert addrs(n.ask("www", tcp=tcp, timeout=1.0)) == ["10.77.0.5"]
            assert time.monotonic() - t < 0.5
        c.settimeout(8)
        r = dns.message.from_wire(c.recv(4096))
        took = time.monotonic() - t0
        assert r.id == q.id and r.rcode() == dns.rcode.SERVFAIL
        assert 4.0 < took < 6.5         # 2 s each, 5 s for all three
    finally:
        c.close()
        hole.close()


def test_malformed_packets_are_answered_formerr_or_dropped(net):
    n = net()
    c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        c.settimeout(3)
        c.sendto(b"\x00", ("::1", n.port))
        c.sendto(b"\xff" * 600, ("::1", n.port))       # QR set: a "response", dropped
        # a header announcing one question, and no question
        c.sendto(b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00", ("::1", n.port))
        r = dns.message.from_wire(c.recv(4096))
        assert r.id == 0x1234 and r.rcode() == dns.rcode.FORMERR
    finally:
        c.close()
    s = socket.create_connection(("127.0.0.1", n.port), timeout=3)
    try:
        s.sendall(b"\x00\x05junk!")
        q = dns.message.make_query("web", "A")
        wire = q.to_wire()
        s.sendall(len(wire).to_bytes(2, "big") + wire)
        f = s.makefile("rb")
        r = dns.message.from_wire(f.read(int.from_bytes(f.read(2), "big")))
        assert r.id == q.id and addrs(r) == ["10.77.0.5"]
    finally:
        s.close()
    assert addrs(n.ask("web")) == ["10.77.0.5"]


# --- the port proxy ---------------------------------------------------------------------
class Echo:
    """A TCP (each chunk back, then "|bye" after the client's EOF) or UDP
    ("echo:" + datagram) server on ``ip``."""

    def __init__(self, ip, udp=False):
        family = socket.AF_INET6 if ":" in ip else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM if udp else socket.SOCK_STREAM)
        self.sock.bind((ip, 0))
        self.port = self.sock.getsockname()[1]
        if not udp:
            self.sock.listen(8)
        self.sock.settimeout(0.1)
        self.stopped = False
        self.thread = threading.Thread(target=self._udp if udp else self._tcp)
        self.thread.start()

    def _udp(self):
        while not self.stopped:
            try:
                data, addr = self.sock.recvfrom(4096)
            except socket.timeout:
                continue
            self.sock.sendto(b"echo:" + data, addr)

    def _tcp(self):
        while not self.stopped:
            try:
                conn, _ = self.sock.accept()
            except socket.timeout:
                continue
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    @staticmethod
    def _serve(conn):
        conn.settimeout(5)
        try:
            while True:
                data = conn.recv(4096)
                if not data:
                    break
                conn.sendall(data)
            conn.sendall(b"|bye")
        except OSError:
            pass
        finally:
            conn.close()

    def close(self):
        self.stopped = True
        self.thread.join()
        self.sock.close()


@pytest.fixture
def echoes():
    made = []

    def make(ip, udp=False):
        made.append(Echo(ip, udp))
        return made[-1]
    yield make
    for e in made:
        e.close()


def tcp_round_trip(host, port, payload=b"hello"):
    s = socket.create_connection((host, port), timeout=5)
    try:
        s.sendall(payload)
        s.shutdown(socket.SHUT_WR)          # the echo server answers "|bye" to EOF
        got = b""
        while True:
            chunk = s.recv(4096)
            if not chunk:
                return got
            got += chunk
    finally:
        s.close()


def test_tcp_proxy_to_ipv4_and_ipv6_containers_with_half_close(net, echoes):
    e4, e6 = echoes("127.0.0.1"), echoes("::1")
    h4, h6 = free_port(), free_port()
    n = net({"c4": {"name": "four", "ip4": "127.0.0.1",
                    "ports": [{"proto": "tcp", "host_ip": "", "host_port": h4,
                               "ctr_port": e4.port}]},
             "c6": {"name": "six", "ip4": "10.77.0.8", "ip6": "::1",
                    "ports": [{"proto": "tcp", "host_ip": "::", "host_port": h6,
                               "ctr_port": e6.port},
                              {"proto": "tcp", "host_ip": "0.0.0.0", "host_port": h6 + 1,
                               "ctr_port": e6.port}]}})
    reply = R.reload(n.dir)
    assert reply["errors"] == []
    assert sorted((p["listen"], p["host_port"], p["target"], p["ctr_port"])
                  for p in reply["proxies"]) == sorted(
        [("::", h4, "127.0.0.1", e4.port), ("::1", h6, "::1", e6.port)])
    assert tcp_round_trip("::1", h4) == b"hello|bye"
    big = os.urandom(1 << 20)
    assert tcp_round_trip("::1", h4, big) == big + b"|bye"
    assert tcp_round_trip("::1", h6, b"six") == b"six|bye"
    with pytest.raises(ConnectionRefusedError):       # only what DNAT cannot do
        socket.create_connection(("127.0.0.1", h4), timeout=2)


def test_udp_proxy_round_trip(net, echoes):
    e = echoes("127.0.0.1", udp=True)
    h = free_port()
    n = net({"u": {"name": "udp", "ip4": "127.0.0.1",
                   "ports": [{"proto": "udp", "host_ip": "::1", "host_port": h,
                              "ctr_port": e.port}]}})
    assert [p["listen"] for p in R.reload(n.dir)["proxies"]] == ["::1"]
    clients = [socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) for _ in range(2)]
    try:
        for i, c in enumerate(clients):
            c.settimeout(3)
            c.sendto(b"ping%d" % i, ("::1", h))
        for i, c in enumerate(clients):
            data, addr = c.recvfrom(4096)
            assert data == b"echo:ping%d" % i and addr[:2] == ("::1", h)
        clients[0].sendto(b"again", ("::1", h))
        assert clients[0].recvfrom(4096)[0] == b"echo:again"
    finally:
        for c in clients:
            c.close()


def test_wildcard_udp_proxy_answers_from_the_address_asked(net, echoes):
    e = echoes("127.0.0.1", udp=True)
    h = free_port()
    n = net({"u": {"name": "udp", "ip4": "127.0.0.1",
                   "ports": [{"proto": "udp", "host_ip": "", "host_port": h,
                              "ctr_port": e.port}]}})
    R.reload(n.dir)
    c = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    try:
        c.settimeout(3)
        c.sendto(b"x", ("::1", h))
        data, addr = c.recvfrom(4096)
        assert data == b"echo:x" and addr[:2] == ("::1", h)
    finally:
        c.close()


def test_reload_closes_listeners_of_removed_leases_and_reports_busy_ports(net, echoes):
    e = echoes("127.0.0.1")
    h, busy = free_port(), free_port()
    lease = {"name": "four", "ip4": "127.0.0.1",
             "ports": [{"proto": "tcp", "host_ip": "", "host_port": h, "ctr_port": e.port}]}
    n = net({"c4": lease})
    R.reload(n.dir)
    assert tcp_round_trip("::1", h) == b"hello|bye"
    blocker = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    blocker.bind(("::1", busy))
    blocker.listen(1)
    try:
        n.set_leases({"c5": {"name": "five", "ip4": "127.0.0.1", "ip6": "::1",
                             "ports": [{"proto": "tcp", "host_ip": "", "host_port": busy,
                                        "ctr_port": e.port}]}})
        reply = R.reload(n.dir)
        assert reply["t"] == "ok" and reply["proxies"] == []
        assert reply["errors"] == [f"port proxy: bind [::1]:{busy}/tcp: Address already "
                                   f"in use (errno 98)"]
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("::1", h), timeout=2)
        assert addrs(n.ask("five")) == ["127.0.0.1"]      # DNS goes on
    finally:
        blocker.close()
    reply = R.reload(n.dir)                       # the port is free now: it is retried
    assert reply["errors"] == [] and [p["host_port"] for p in reply["proxies"]] == [busy]


# --- start, reload and stop ---------------------------------------------------------------
def test_start_reports_a_busy_dns_port(tmp_path):
    port = free_port()
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", port))
    try:
        with pytest.raises(HutchError) as e:
            R.start(str(tmp_path), ["127.0.0.1"], port=port)
        assert str(e.value) == (f"dns responder: bind 127.0.0.1:{port}/udp: "
                                f"Address already in use (errno 98)")
        assert e.value.errno == 98
    finally:
        s.close()
    assert not os.path.exists(tmp_path / "resolver.pid")


def test_stop_ends_the_daemon_and_removes_its_files_twice_over(net):
    n = net()
    assert R.reload(n.dir)["t"] == "ok"
    with open(os.path.join(n.dir, "resolver.pid")) as f:
        assert json.load(f) == n.data
    with pytest.raises(HutchError, match="already running"):
        R.start(n.dir, [], port=n.port)
    R.stop(n.dir)
    assert gone(n.data)
    for name in ("resolver.pid", "resolver.sock"):
        assert not os.path.exists(os.path.join(n.dir, name))
    R.stop(n.dir)
    R.stop(n.dir, n.data)
    with pytest.raises(HutchError, match="dns responder of network testnet is not running"):
        R.reload(n.dir, timeout=0.5)


def test_stop_right_after_start_and_after_a_kill(net):
    n = net()
    R.stop(n.dir, n.data)               # most likely before its Python has booted
    assert gone(n.data)
    n = net()
    assert R.reload(n.dir)["t"] == "ok"
    os.kill(n.data["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not gone(n.data) and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(HutchError, match="is not running: pid .* has exited"):
        R.reload(n.dir, timeout=0.5)
    R.stop(n.dir)
    assert not os.path.exists(os.path.join(n.dir, "resolver.sock"))


def test_sigterm_stops_the_daemon_cleanly(net):
    n = net()
    R.reload(n.dir)
    os.kill(n.data["pid"], signal.SIGTERM)
    deadline = time.monotonic() + 5
    while not gone(n.data) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert gone(n.data)
    assert not os.path.exists(os.path.join(n.dir, "resolver.sock"))   # it removed its own
    R.stop(n.dir)
    assert not os.path.exists(os.path.join(n.dir, "resolver.pid"))


def test_the_log_starts_again_past_one_mib(tmp_path):
    with open(tmp_path / "resolver.log", "w") as f:
        f.write("x" * (R.LOG_LIMIT + 10))
    R._log(str(tmp_path), "one\nline")
    with open(tmp_path / "resolver.log") as f:
        text = f.read()
    assert len(text) < 100 and text.endswith(" one\\nline\n")
