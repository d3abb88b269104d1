"""A container's networks, as one attachment of the core (:mod:`hutch.container.attach`).

``attach`` runs in the hutch command (or library process) once the container's
init has its new network namespace and before its rootfs is made; ``detach``
runs on `delete`, on a failed create, and on `delete -f` after a killed one.

For bridge networks (hutch's own), under the store's lock:

1. the network is activated if this is its first container: its bridge with
   the gateway addresses, its rules in the ``inet hutch`` table, ip_forward,
   and its DNS responder (:mod:`.resolver`);
2. the container gets a lease (addresses, its name and aliases, its published
   ports), written to the network's leases.json before anything else is made
   for it, so that the undo finds it whatever happens next;
3. a veth pair: the host end on the bridge, the other end ``ethN`` in the
   container with its addresses and (for its first network) default routes,
   and its bandwidth limit as tc rules: made by the network's daemon (which has
   pyroute2 loaded) while the init builds its rootfs, and waited for in
   ``settle``;
4. its published ports as DNAT rules; ::1 (and IPv6 to an IPv4-only container)
   through the responder's proxy;
5. its own /etc/resolv.conf and /etc/hosts, written in its state directory and
   bound read-only over the rootfs's (the rootfs's files are never edited).

For ``cni:`` networks the conflist's plugins run (:mod:`.cni`); for slirp4netns
and pasta, the tool starts (:mod:`.rootless`).

The undo removes the lease, the veth, the rules and the files; the last
container to leave a network takes the network's bridge, rules and responder
with it, and the last network restores ip_forward.  Every step of the undo
finds its object by the container's id or the network's name, so it needs no
data from ``attach`` and can run twice.
"""

import errno
import os

from ..errors import HutchError, failpoint
from . import spec as S

KIND = "hutch.network.attach:Network"


def link_names(cid, net):
    """The host end of a container's veth on a network, and its ifb device:
    derived from both names, so an undo without data finds them."""
    from _blake2 import blake2b     # (hashlib would load OpenSSL: ~3 ms)
    h = blake2b(f"{cid}\0{net}".encode(), digest_size=5).hexdigest()
    return "hv" + h, "hb" + h


class Network:
    """The attachment.  ``mode`` and ``names`` come from :func:`spec.parse_networks`;
    the rest is already parsed (:mod:`.spec`)."""

    kind = KIND

    def __init__(self, mode, names, *, config_dir=None, dns_name=None, aliases=(),
                 ip=None, ip6=None, dns=(), add_hosts=(), publish=(), bandwidth=None,
                 hostname=None):
        self.mode, self.names = mode, list(names)
        self.config_dir = config_dir
        self.dns_name, self.aliases = dns_name, list(aliases)
        self.ip, self.ip6 = ip, ip6
        self.dns, self.add_hosts = list(dns), list(add_hosts)
        self.publish, self.bandwidth = list(publish), bandwidth
        self.hostname = hostname

    # --- attach ----------------------------------------------------------------------
    def attach(self, ctx):
        state_dir = os.path.join(ctx.root, ctx.cid)
        files = os.path.join(state_dir, "network")
        os.makedirs(files, mode=0o755, exist_ok=True)
        if self.mode == "bridge":
            data = self._bridges(ctx)
        elif self.mode == "cni":
            data = self._cni(ctx)
        elif self.mode in S.ROOTLESS:
            data = self._rootless(ctx, state_dir)
        else:
            raise HutchError(f"network mode {self.mode!r} needs no attachment",
                             errno.EINVAL)
        data["files"] = files
        self._files(ctx, files, data)
        return data

    def _bridges(self, ctx):
        from ..container.record import proc_stat
        from .store import Store
        store = Store(ctx.root, self.config_dir)
        joined = []
        starttime = proc_stat(ctx.pid)[1]
        self._pending = []      # veths the daemons make while the init builds its rootfs
        try:
            with store:
                self._join(ctx, store, joined, starttime)
        except BaseException:
            # nothing may be left being made behind the undo's back
            for run_dir, s in self._pending:
                try:
                    from . import resolver
                    resolver.answer(run_dir, s)
                except HutchError:
                    pass
            self._pending = []
            raise
        return {"mode": "bridge", "networks": joined, "publish": self.publish,
                "config_dir": store.config_dir}

    def _join(self, ctx, store, joined, starttime):
        from . import nft
        from .store import allocate, prefixlen
        defs = [store.get(n) for n in self.names]
        for i, defn in enumerate(defs):
            act = activate(store, defn)
            name = defn["name"]
            host_if, ifb = link_names(ctx.cid, name)
            lease = {"name": self.dns_name or ctx.cid, "aliases": self.aliases,
                     "host_if": host_if, "ifname": f"eth{i}", "ports": [],
                     "ip4": None, "ip6": None}
            if defn.get("subnet"):
                lease["ip4"] = allocate(defn, act, ctx.cid,
                                        self.ip if i == 0 else None, 4)
            if defn.get("subnet6"):
                lease["ip6"] = allocate(defn, act, ctx.cid,
                                        self.ip6 if i == 0 else None, 6)
            if i == 0 and self.publish:
                if defn.get("internal"):
                    raise HutchError(f"publish: network {name} is internal (nothing "
                                     "comes in or goes out); publish from a network "
                                     "that is not", errno.EINVAL)
                self._check_ports(store, ctx.cid)
                lease["ports"] = self.publish
            act["leases"][ctx.cid] = lease
            store.save_active(name, act)
            failpoint("network:leased")
            addrs, gws = [], []
            for key, skey, gkey in (("ip4", "subnet", "gateway"),
                                    ("ip6", "subnet6", "gateway6")):
                if lease[key]:
                    addrs.append((lease[key], prefixlen(defn[skey])))
                    gws.append(defn[gkey])
            sock = do_links(store.run_dir(name), [{
                "op": "veth", "host_if": host_if, "bridge": defn["bridge"],
                "pid": ctx.pid, "starttime": starttime,
                "ifname": lease["ifname"], "addrs": addrs,
                "gateways": gws if i == 0 else None,
                "mtu": defn.get("mtu") or 1500, "bandwidth": self.bandwidth,
                "ifb": ifb}], reply=False)
            if sock is not None:
                self._pending.append((store.run_dir(name), sock))
            if lease["ports"]:
                nft.run(nft.publish_commands(ctx.cid, lease["ports"],
                                             lease["ip4"], lease["ip6"]),
                        f"publish the ports of {ctx.cid}")
                from . import resolver
                reply = resolver.reload(store.run_dir(name))
                mine = [e for e in reply.get("errors") or () if any(
                    f":{p['host_port']}/{p['proto']}" in e for p in lease["ports"])]
                if mine:
                    raise HutchError(f"publish on network {name}: {'; '.join(mine)}",
                                     errno.EADDRINUSE)
            joined.append({"network": name, "ifname": lease["ifname"],
                           "host_if": host_if, "ip4": lease["ip4"],
                           "ip6": lease["ip6"], "gateway4": defn.get("gateway"),
                           "gateway6": defn.get("gateway6"),
                           "internal": defn.get("internal", False)})

    def settle(self, ctx, data):
        """The veths the networks' daemons were making while the init built its
        rootfs: their answers (an error fails the create)."""
        from . import resolver
        pending, self._pending = getattr(self, "_pending", []), []
        errors = []
        for run_dir, s in pending:
            try:
                resolver.answer(run_dir, s)
            except HutchError as e:
                errors.append(e)
        if errors:
            raise errors[0]
        failpoint("network:veth")
        return data

    def _check_ports(self, store, cid):
        """A published host port must be free: neither another container's nor
        a host socket's (checked by binding it for a moment)."""
        if not self.publish:
            return
        import socket
        taken = {}
        for name in store.active_names():
            for other, lease in (store.active(name) or {}).get("leases", {}).items():
                if other != cid:
                    for p in lease.get("ports") or ():
                        taken[(p["proto"], p["host_port"])] = (other, p["host_ip"])
        for p in self.publish:
            key = (p["proto"], p["host_port"])
            if key in taken:
                other, hip = taken[key]
                if not hip or not p["host_ip"] or hip == p["host_ip"]:
                    raise HutchError(f"publish {p['host_port']}/{p['proto']}: the host "
                                     f"port is published by container {other}",
                                     errno.EADDRINUSE)
            hip = p["host_ip"]
            fam = socket.AF_INET6 if ":" in hip else socket.AF_INET
            kind = socket.SOCK_STREAM if p["proto"] == "tcp" else socket.SOCK_DGRAM
            s = socket.socket(fam, kind)
            try:
                s.bind((hip or "0.0.0.0", p["host_port"]))
            except OSError as e:
                if e.errno == errno.EADDRINUSE:
                    raise HutchError(f"publish {p['host_port']}/{p['proto']}: the host "
                                     "port is in use by a program on the host",
                                     errno.EADDRINUSE) from None
                if e.errno != errno.EADDRNOTAVAIL:
                    raise HutchError.from_os(f"publish {hip or '*'}:{p['host_port']}",
                                             e) from None
                raise HutchError(f"publish {hip}:{p['host_port']}: {hip} is not an "
                                 "address of this host", errno.EADDRNOTAVAIL) from None
            finally:
                s.close()

    def _cni(self, ctx):
        from . import cni
        from .store import default_config_dir
        conf = cni.find(self.names[0], (os.path.join(
            self.config_dir or default_config_dir(), "cni"), "/etc/cni/net.d"))
        netns = f"/proc/{ctx.pid}/ns/net"
        mappings = [{"hostPort": p["host_port"], "containerPort": p["ctr_port"],
                     "protocol": p["proto"], "hostIP": p["host_ip"]}
                    for p in self.publish]
        cache = os.path.join(ctx.root, ".networks", "cni-cache")
        result = cni.add(conf, ctx.cid, netns, "eth0", cache_dir=cache,
                         port_mappings=mappings)
        failpoint("network:cni")
        ips = [i["address"].partition("/")[0] for i in result.get("ips") or ()]
        dns = result.get("dns") or {}
        return {"mode": "cni", "conflist": conf, "ips": ips,
                "nameservers": dns.get("nameservers") or [], "publish": self.publish}

    def _rootless(self, ctx, state_dir):
        from . import rootless
        data = rootless.start(self.mode, ctx.pid, os.path.join(state_dir, "network"),
                              self.publish)
        return {"mode": self.mode, "tool": data, "publish": self.publish,
                "resolv": rootless.resolv_conf(self.mode, data)}

    # --- /etc/resolv.conf and /etc/hosts ------------------------------------------------------
    def _files(self, ctx, files, data):
        hostname = self.hostname or (ctx.cfg.hostname if ctx.cfg else None) or ctx.cid
        names = " ".join(dict.fromkeys([n for n in (self.dns_name, hostname) if n]
                                       + self.aliases))
        hosts = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        servers = list(self.dns)
        if data["mode"] == "bridge":
            for n in data["networks"]:
                for key in ("ip4", "ip6"):
                    if n[key]:
                        hosts.append(f"{n[key]}\t{names}")
            first = data["networks"][0]
            if first["gateway4"]:
                hosts.append(f"{first['gateway4']}\thost.hutch.internal")
            if not servers:
                servers = [g for g in (first["gateway4"], first["gateway6"]) if g]
            resolv = "".join(f"nameserver {s}\n" for s in servers)
        elif data["mode"] == "cni":
            for ip in data["ips"]:
                hosts.append(f"{ip}\t{names}")
            servers = servers or data["nameservers"]
            resolv = "".join(f"nameserver {s}\n" for s in servers) if servers else \
                _host_resolv()
        else:
            resolv = "".join(f"nameserver {s}\n" for s in servers) if servers else \
                data["resolv"]
        hosts += [f"{ip}\t{name}" for name, ip in self.add_hosts]
        for fname, text, dest in (("resolv.conf", resolv, "/etc/resolv.conf"),
                                  ("hosts", "\n".join(hosts) + "\n", "/etc/hosts")):
            path = os.path.join(files, fname)
            with open(path, "w") as f:
                f.write(text)
            os.chmod(path, 0o644)
            ctx.mounts.append((path, dest))

    # --- detach ----------------------------------------------------------------------
    @staticmethod
    def detach(ctx, data):
        mode = (data or {}).get("mode")
        errors = []
        if mode in (None, "bridge"):
            errors += _detach_bridges(ctx, data)
        if mode in (None, "cni"):
            _detach_cni(ctx, data, errors)
        if mode in S.ROOTLESS or (mode is None and os.path.exists(os.path.join(
                ctx.root, ctx.cid, "network", "rootless-net.json"))):
            from . import rootless
            try:
                rootless.stop(os.path.join(ctx.root, ctx.cid, "network"),
                              (data or {}).get("tool"))
            except HutchError as e:
                errors.append(str(e))
        if errors:
            raise HutchError("; ".join(errors))
        from ..linux.fs import rmtree
        rmtree(os.path.join(ctx.root, ctx.cid, "network"))

    @staticmethod
    def checkpoint_refusal(data):
        return ("the container is on a hutch network; CRIU cannot carry its veth "
                "and lease yet (checkpoint containers with --network none, loopback "
                "or host)")

    @staticmethod
    def annotations(state_dir, data):
        """`hutch state` shows the addresses: org.hutch.network.NAME: IP[,IP6]."""
        out = {}
        for n in (data or {}).get("networks") or ():
            out[f"org.hutch.network.{n['network']}"] = ",".join(
                a for a in (n["ip4"], n["ip6"]) if a)
        if (data or {}).get("mode") == "cni":
            out["org.hutch.network.cni"] = ",".join(data["ips"])
        return out


def _host_resolv():
    try:
        with open("/etc/resolv.conf") as f:
            return f.read()
    except OSError:
        return ""


def _detach_cni(ctx, data, errors):
    """CNI's DEL for the container: for its conflist, or (an undo without data:
    the create was cut short) for each conflist its cached ADDs name."""
    from . import cni
    cache = os.path.join(ctx.root, ".networks", "cni-cache")
    confs = [data["conflist"]] if data else _cached_conflists(cache, ctx.cid)
    netns = f"/proc/{ctx.pid}/ns/net" if ctx.pid else ""
    if netns and not os.path.exists(netns):
        netns = ""
    for conf in confs:
        try:
            cni.delete(conf, ctx.cid, netns, "eth0", cache_dir=cache)
        except HutchError as e:
            errors.append(str(e))


def _cached_conflists(cache, cid):
    from .. import jsonlite
    tail, out = f"+{cid}+eth0.json", []
    try:
        names = os.listdir(cache)
    except FileNotFoundError:
        return out
    for n in names:
        if n.endswith(tail):
            try:
                with open(os.path.join(cache, n)) as f:
                    path = jsonlite.loads(f.read()).get("path")
            except (OSError, ValueError):
                continue
            if path:
                out.append(path)
    return out


def _exists(ifname):
    """Whether a link exists in this network namespace (no netlink needed: the
    kernel removes a veth with its container's namespace, often before this)."""
    import _socket
    try:
        _socket.if_nametoindex(ifname)
        return True
    except OSError:
        return False


def do_links(run_dir, ops, wait=True, reply=True):
    """Link work (:func:`hutch.network.nl.apply`) done by the network's daemon,
    which has pyroute2 loaded; by this process when no daemon runs.  With
    ``reply`` False, returns the request's socket (None if the work was done
    here): resolver.answer reads how it went."""
    from . import resolver
    try:
        return resolver.links(run_dir, ops, wait=wait, reply=reply)
    except HutchError as e:
        if e.errno != errno.ENOTCONN:
            raise
        from . import nl
        nl.apply(ops)


def _detach_bridges(ctx, data):
    from . import nft
    from .store import Store
    config_dir = (data or {}).get("config_dir")
    store = Store(ctx.root, config_dir)
    errors = []
    with store:
        if not os.path.isdir(store.run):
            return errors
        try:
            # a container that published nothing has no rules (an undo without
            # data looks anyway)
            rules = nft.list_table() if data is None or data.get("publish") else None
            gone = nft.delete_commented({f"ctr:{ctx.cid}"}, rules) if rules else []
            if gone:
                nft.run(gone, f"remove the rules of {ctx.cid}")
        except HutchError as e:
            errors.append(str(e))
        for name in store.active_names():
            act = store.active(name)
            lease = (act or {}).get("leases", {}).get(ctx.cid)
            if lease is None:
                continue
            host_if, ifb = link_names(ctx.cid, name)
            left = [n for n in (host_if, ifb) if _exists(n)]
            try:
                if left:
                    do_links(store.run_dir(name), [{"op": "delete", "names": left}],
                             wait=False)
            except HutchError as e:
                errors.append(str(e))
                continue
            del act["leases"][ctx.cid]
            store.save_active(name, act)
            try:
                if not act["leases"]:
                    deactivate(store, name, act)
                elif lease.get("ports"):
                    from . import resolver
                    resolver.reload(store.run_dir(name))
            except HutchError as e:
                errors.append(str(e))
        for name in store.active_names():
            # a network whose activation was cut short before its first lease
            act = store.active(name)
            if act is not None and not act.get("leases"):
                try:
                    deactivate(store, name, act)
                except HutchError as e:
                    errors.append(str(e))
    return errors


# --- activation ---------------------------------------------------------------------
def _netns_id():
    return os.stat("/proc/thread-self/ns/net").st_ino


def activate(store, defn):
    """The network's bridge, rules, responder and ip_forward, once; returns its
    leases record.  The caller holds the store's lock."""
    from .. import jsonlite
    from . import nft, nl, resolver
    name = defn["name"]
    run_dir = store.run_dir(name)
    act = store.active(name)
    here = _netns_id()
    if act is not None:
        if act.get("netns") != here:
            raise HutchError(f"network {name} is active in another network namespace "
                             f"(net:[{act.get('netns')}]); hutch commands using one "
                             "--root must share a network namespace", errno.EXDEV)
        if not resolver.running(act.get("resolver")):
            # it died (killed, OOM): the network's names come back with a new one
            resolver.stop(store.run_dir(name), act.get("resolver"))
            act["resolver"] = resolver.start(store.run_dir(name), [
                a for a in (act.get("gateway4"), act.get("gateway6")) if a])
            store.save_active(name, act)
            if any(lease.get("ports") for lease in act["leases"].values()):
                resolver.reload(store.run_dir(name))
        return act
    fwd = store.forwarding_path()
    if not store.active_names() and not os.path.exists(fwd):
        saved = {"ipv4": nl.sysctl("net/ipv4/ip_forward"),
                 "ipv6": nl.sysctl("net/ipv6/conf/all/forwarding")}
        with open(fwd + ".tmp", "w") as f:
            f.write(jsonlite.dumps(saved))
        os.rename(fwd + ".tmp", fwd)
    act = {"network": name, "bridge": defn["bridge"], "netns": here,
           "gateway4": defn.get("gateway"), "gateway6": defn.get("gateway6"),
           "subnet4": defn.get("subnet"), "subnet6": defn.get("subnet6"),
           "internal": defn.get("internal", False), "leases": {}, "resolver": None}
    store.save_active(name, act)        # first: an undo finds what may follow
    import ipaddress
    addrs, subnets = [], []
    for skey, gkey in (("subnet", "gateway"), ("subnet6", "gateway6")):
        if defn.get(skey):
            net = ipaddress.ip_network(defn[skey])
            subnets.append(net)
            addrs.append((defn[gkey], net.prefixlen))
    # the daemon first (its DNS sockets bind with IP_FREEBIND before the bridge
    # has the addresses); it makes the bridge, with pyroute2 loaded already
    act["resolver"] = resolver.start(run_dir, [a for a, _ in addrs])
    store.save_active(name, act)
    do_links(run_dir, [{"op": "bridge", "name": defn["bridge"],
                        "mtu": defn.get("mtu") or 1500, "addrs": addrs}])
    # on for internal networks too: their forward rules drop what leaves them
    nl.sysctl("net/ipv4/ip_forward", 1)
    if defn.get("subnet6"):
        nl.sysctl("net/ipv6/conf/all/forwarding", 1)
    rules = nft.list_table()
    nft.run(nft.base_commands() + nft.delete_commented({f"net:{name}"}, rules or [])
            + nft.network_commands(name, defn["bridge"], subnets, act["internal"]),
            f"add the rules of network {name}")
    return act


def deactivate(store, name, act):
    """Undoes :func:`activate` (when its last container left)."""
    from .. import jsonlite
    from . import nft, nl, resolver
    rules = nft.list_table()
    if rules is not None:
        nft.run(nft.delete_commented({f"net:{name}"}, rules),
                f"remove the rules of network {name}")
    if _exists(act["bridge"]):
        # queued after the veths' removals; the daemon finishes both before
        # it exits (stop below waits for that)
        do_links(store.run_dir(name), [{"op": "delete", "names": [act["bridge"]]}],
                 wait=False)
    resolver.stop(store.run_dir(name), act.get("resolver"))
    store.drop_active(name)
    if not store.active_names():
        nft.delete_table()
        fwd = store.forwarding_path()
        try:
            with open(fwd) as f:
                saved = jsonlite.loads(f.read())
        except FileNotFoundError:
            return
        nl.sysctl("net/ipv4/ip_forward", saved["ipv4"])
        nl.sysctl("net/ipv6/conf/all/forwarding", saved["ipv6"])
        os.unlink(fwd)
