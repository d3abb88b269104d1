"""The kernel side of a bridge network, through pyroute2 (netlink): bridges,
veth pairs, addresses, routes, tc bandwidth limits, and the few sysctls a
network needs.

Everything host-side is made in the network namespace of the calling thread
(the hutch command's).  The container's end is configured through a netlink
socket opened inside the container's network namespace: the calling thread
enters it with setns, opens the socket and comes back at once, so no process
is forked and other threads of a library caller are not affected (setns of a
network namespace is per thread).
"""

import errno
import os

from ..errors import HutchError

import threading

IFA_F_NODAD = 0x02
_LOCAL = threading.local()      # a netlink socket per thread (pyroute2's are not shared)


def _nlerr(what, e):
    code = getattr(e, "code", None) or getattr(e, "errno", None) or errno.EIO
    return HutchError(f"{what}: {os.strerror(code)}", code)


def ipr():
    """This thread's netlink socket, in its network namespace (kept open)."""
    s = getattr(_LOCAL, "ipr", None)
    if s is None:
        from pyroute2 import IPRoute
        s = _LOCAL.ipr = IPRoute()
    return s


def index(name, sock=None):
    found = (sock or ipr()).link_lookup(ifname=name)
    return found[0] if found else None


def sysctl(path, value=None):
    """Reads (and writes, if value is given) /proc/sys/PATH in this network
    namespace; returns the old value."""
    full = "/proc/sys/" + path
    try:
        with open(full) as f:
            old = f.read().strip()
        if value is not None and old != str(value):
            with open(full, "w") as f:
                f.write(str(value))
    except OSError as e:
        raise HutchError.from_os(f"sysctl {path.replace('/', '.')}", e) from None
    return old


def ensure_bridge(name, mtu, addrs):
    """The network's bridge, up, with its gateway ``addrs`` [(ip, prefixlen)].
    Re-used if it exists (an earlier hutch was killed part-way)."""
    s = ipr()
    try:
        idx = index(name)
        if idx is None:
            s.link("add", ifname=name, kind="bridge", mtu=mtu)
            idx = index(name)
        have = {a.get_attr("IFA_ADDRESS") for a in s.get_addr(index=idx)}
        for ip, plen in addrs:
            if ip not in have:
                kw = {"flags": IFA_F_NODAD} if ":" in ip else {}
                s.addr("add", index=idx, address=ip, prefixlen=plen, **kw)
        s.link("set", index=idx, state="up")
    except HutchError:
        raise
    except Exception as e:      # pyroute2's NetlinkError carries the errno in .code
        raise _nlerr(f"make bridge {name}", e) from None
    # 127.0.0.1:PORT published ports are DNATed out of this bridge
    sysctl(f"net/ipv4/conf/{name}/route_localnet", 1)
    return idx


def delete_link(name):
    """Deletes a link if it exists (a veth takes its peer with it)."""
    s = ipr()
    try:
        idx = index(name)
        if idx is not None:
            s.link("del", index=idx)
    except Exception as e:
        if getattr(e, "code", None) == errno.ENODEV:
            return
        raise _nlerr(f"delete link {name}", e) from None


def container_socket(pid, k):
    """A netlink socket inside the network namespace of process ``pid``."""
    from pyroute2 import IPRoute

    from ..linux import kernel as K
    target = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        k.setns(target, K.CLONE_NEWNET, what="the container's network namespace")
        try:
            sock = IPRoute()
        finally:
            k.setns(home, K.CLONE_NEWNET, what="back to hutch's network namespace")
    finally:
        os.close(target)
        os.close(home)
    return sock


def add_veth(host_if, bridge, pid, ifname, addrs, gateways, mtu, csock):
    """A veth pair: ``host_if`` on ``bridge`` here, ``ifname`` in the container
    (through ``csock``, a socket in its namespace) with ``addrs`` [(ip, plen)]
    and default routes via ``gateways`` (None for a network that is not the
    container's first)."""
    import socket
    s = ipr()
    what = f"make veth {host_if} for {ifname}"
    if index(host_if) is not None:
        delete_link(host_if)    # a stale one of this name (its removal is queued)
    try:
        nsfd = os.open(f"/proc/{pid}/ns/net", os.O_RDONLY | os.O_CLOEXEC)
        try:
            s.link("add", ifname=host_if, kind="veth", mtu=mtu,
                   peer={"ifname": ifname, "net_ns_fd": nsfd, "mtu": mtu})
        finally:
            os.close(nsfd)
        hidx = index(host_if)
        s.link("set", index=hidx, master=index(bridge), state="up")
        what = f"configure {ifname} in the container"
        cidx = index(ifname, csock)
        for ip, plen in addrs:
            kw = {"flags": IFA_F_NODAD} if ":" in ip else {}
            csock.addr("add", index=cidx, address=ip, prefixlen=plen, **kw)
        csock.link("set", index=cidx, state="up")
        for gw in gateways or ():
            if ":" in gw:
                csock.route("add", dst="::/0", gateway=gw, family=socket.AF_INET6)
            else:
                csock.route("add", dst="0.0.0.0/0", gateway=gw)
    except HutchError:
        raise
    except Exception as e:
        raise _nlerr(what, e) from None


def limit(host_if, ifb, bits):
    """``--bandwidth``: a token bucket each way, both on the host side where
    the container cannot reach them.  Towards the container: tbf on the host
    end's egress.  From the container: its packets arrive on the host end's
    ingress, are redirected (mirred) to the ifb device ``ifb``, and shaped by a
    tbf on that device's egress."""
    s = ipr()
    rate = bits // 8                        # bytes per second
    burst = max(rate // 50, 16 * 1024)      # 20 ms of traffic, at least 16 KiB
    try:
        hidx = index(host_if)
        s.tc("add", "tbf", hidx, handle=0x10000, rate=rate, burst=burst, latency=50000)
        s.link("add", ifname=ifb, kind="ifb")
        iidx = index(ifb)
        s.link("set", index=iidx, state="up")
        s.tc("add", "tbf", iidx, handle=0x10000, rate=rate, burst=burst, latency=50000)
        s.tc("add", "ingress", hidx, handle=0xFFFF0000)
        # u32 matching everything (this kernel has no matchall classifier)
        s.tc("add-filter", "u32", hidx, parent=0xFFFF0000, prio=1, protocol=0x0003,
             target=0x10001, keys=["0x0/0x0+0"],
             action={"kind": "mirred", "direction": "egress", "action": "redirect",
                     "ifindex": iidx})
    except Exception as e:
        raise _nlerr(f"limit {host_if} to {bits} bit/s", e) from None


def apply(ops):
    """Link operations as data, so that the network's daemon can run them for
    a hutch command (resolver.links):

    * ``{"op": "bridge", "name", "mtu", "addrs": [[ip, plen]]}``
    * ``{"op": "veth", "host_if", "bridge", "pid", "starttime", "ifname",
      "addrs", "gateways", "mtu", "bandwidth", "ifb"}``: the container's init
      is checked by its start time, so a reused pid is never configured
    * ``{"op": "delete", "names": [...]}``
    """
    from ..container.record import proc_stat
    from ..linux.kernel import kernel
    for op in ops:
        kind = op["op"]
        if kind == "bridge":
            ensure_bridge(op["name"], op["mtu"], [tuple(a) for a in op["addrs"]])
        elif kind == "veth":
            st = proc_stat(op["pid"])
            if st is None or st[1] != op["starttime"]:
                raise HutchError(f"make veth {op['host_if']}: the container's init "
                                 f"(pid {op['pid']}) is gone", errno.ESRCH)
            csock = container_socket(op["pid"], kernel())
            try:
                add_veth(op["host_if"], op["bridge"], op["pid"], op["ifname"],
                         [tuple(a) for a in op["addrs"]], op["gateways"], op["mtu"],
                         csock)
            finally:
                csock.close()
            if op.get("bandwidth"):
                limit(op["host_if"], op["ifb"], op["bandwidth"])
        elif kind == "delete":
            for name in op["names"]:
                delete_link(name)
        else:
            raise HutchError(f"unknown link operation {kind!r}", errno.EINVAL)
