"""The network options' parsing, the definitions and the address leases (no root)."""

import ipaddress
import threading

import pytest

from hutch.errors import HutchError
from hutch.network import nft
from hutch.network import spec as S
from hutch.network.store import Store, allocate


def test_parse_networks():
    assert S.parse_networks(None) == ("loopback", [])
    assert S.parse_networks("host") == ("host", [])
    assert S.parse_networks("a,b") == ("bridge", ["a", "b"])
    assert S.parse_networks("cni:/x/y.conflist") == ("cni", ["/x/y.conflist"])
    assert S.parse_networks("pasta") == ("pasta", [])
    for bad in ("a,host", "a,a", "cni:", "cni:a,b", "-x", "a/b", "x" * 64):
        with pytest.raises(HutchError):
            S.parse_networks(bad)


def test_parse_publish():
    assert S.parse_publish(["8080:80"]) == [
        {"proto": "tcp", "host_ip": "", "host_port": 8080, "ctr_port": 80}]
    ps = S.parse_publish(["127.0.0.1:5000-5002:6000-6002/udp", "[::1]:53:53/udp"])
    assert [(p["host_ip"], p["host_port"], p["ctr_port"], p["proto"]) for p in ps] == [
        ("127.0.0.1", 5000, 6000, "udp"), ("127.0.0.1", 5001, 6001, "udp"),
        ("127.0.0.1", 5002, 6002, "udp"), ("::1", 53, 53, "udp")]
    for bad in ("80", "1:2:3:4", "x:80", "0:80", "70000:80", "80:80/sctp",
                "1-3:1-2", "::1:80:80", "999.1.1.1:80:80"):
        with pytest.raises(HutchError):
            S.parse_publish([bad])
    with pytest.raises(HutchError, match="twice"):
        S.parse_publish(["80:80", "80:81"])


def test_parse_rate_hosts_dns():
    assert S.parse_rate("10mbit") == 10_000_000
    assert S.parse_rate("1mbps") == 8_000_000
    assert S.parse_rate("500kbit") == 500_000
    for bad in ("fast", "10 parsecs", "1bit"):
        with pytest.raises(HutchError):
            S.parse_rate(bad)
    assert S.parse_add_host(["db:10.0.0.5", "v6:[fd00::1]", "x:fd00::2"]) == [
        ("db", "10.0.0.5"), ("v6", "fd00::1"), ("x", "fd00::2")]
    with pytest.raises(HutchError):
        S.parse_add_host(["nocolon"])
    assert S.parse_dns(["1.1.1.1", "::1"]) == ["1.1.1.1", "::1"]


def test_definitions(tmp_path):
    st = Store(str(tmp_path / "run"), str(tmp_path / "cfg"))
    assert st.names() == ["default"]
    a = st.define("a")
    b = st.define("b", ipv6=True, internal=True, mtu=9000)
    assert a["subnet"] == "10.78.0.0/24" and b["subnet"] == "10.78.1.0/24"
    assert a["bridge"] != b["bridge"] and b["internal"] and b["mtu"] == 9000
    assert ipaddress.ip_network(b["subnet6"]).prefixlen == 64
    assert b["gateway6"].endswith("::1")
    with pytest.raises(HutchError, match="exists"):
        st.define("a")
    with pytest.raises(HutchError, match="overlaps"):
        st.define("c", subnet="10.78.0.128/25")
    with pytest.raises(HutchError, match="not a host address"):
        st.define("c", subnet="192.168.5.0/24", gateway="192.168.6.1")
    with pytest.raises(HutchError, match="no such network"):
        st.get("zzz")
    st.undefine("a")
    assert st.names() == ["b", "default"]
    with pytest.raises(HutchError, match="built in"):
        st.undefine("default")


def test_undefine_refused_in_use(tmp_path):
    st = Store(str(tmp_path / "run"), str(tmp_path / "cfg"))
    st.define("a")
    st.save_active("a", {"leases": {"ctr1": {"ip4": "10.78.0.2"}}})
    with pytest.raises(HutchError, match="in use by container.*ctr1"):
        st.undefine("a")


def test_allocate():
    d = {"name": "n", "subnet": "10.0.0.0/29", "gateway": "10.0.0.1"}
    act = {"leases": {}}
    got = []
    for i in range(5):
        ip = allocate(d, act, f"c{i}")
        act["leases"][f"c{i}"] = {"ip4": ip}
        got.append(ip)
    assert got == ["10.0.0.2", "10.0.0.3", "10.0.0.4", "10.0.0.5", "10.0.0.6"]
    with pytest.raises(HutchError, match="no free address"):
        allocate(d, act, "c9")
    del act["leases"]["c1"]
    assert allocate(d, act, "c9") == "10.0.0.3"
    with pytest.raises(HutchError, match="in use"):
        allocate(d, act, "c9", want="10.0.0.4")
    with pytest.raises(HutchError, match="not a host address"):
        allocate(d, act, "c9", want="10.0.0.7")
    d6 = {"name": "n", "subnet6": "fd00::/64", "gateway6": "fd00::1"}
    assert allocate(d6, {"leases": {}}, "c", version=6) == "fd00::2"


def test_store_lock_serialises(tmp_path):
    """Threads allocating under the store's lock get distinct addresses (each
    Store has its own open file description, as separate processes would)."""
    root, cfg = str(tmp_path / "run"), str(tmp_path / "cfg")
    d = Store(root, cfg).get("default")
    Store(root, cfg).save_active("default", {"leases": {}})
    out = []

    def one(i):
        st = Store(root, cfg)
        with st:
            act = st.active("default")
            ip = allocate(d, act, f"c{i}")
            act["leases"][f"c{i}"] = {"ip4": ip}
            st.save_active("default", act)
            out.append(ip)
    ts = [threading.Thread(target=one, args=(i,)) for i in range(20)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert len(set(out)) == 20


def test_publish_rules_shape():
    ports = S.parse_publish(["8080:80", "127.0.0.1:53:53/udp", "[::1]:9:9", "[::]:7:7"])
    cmds = nft.publish_commands("c1", ports, "10.77.0.2", None)
    rules = [c["add"]["rule"] for c in cmds]
    assert all(r["comment"] == "ctr:c1" and r["chain"] == "publish" for r in rules)
    # 8080 to the v4 address only (no v6 address), 53 with its daddr, ::1 and
    # [::] left to the proxy
    dnats = [r["expr"][-1]["dnat"] for r in rules]
    assert dnats == [{"family": "ip", "addr": "10.77.0.2", "port": 80},
                     {"family": "ip", "addr": "10.77.0.2", "port": 53}]
    cmds = nft.publish_commands("c1", ports[:1], "10.77.0.2", "fd00::2")
    assert [c["add"]["rule"]["expr"][-1]["dnat"]["family"] for c in cmds] == ["ip", "ip6"]
