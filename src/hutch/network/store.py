"""Where networks live on disk, and the address leases (IPAM).

* A network's **definition** is ``CONFIG_DIR/networks/NAME.json`` (`network
  create` writes it; ``default`` exists without one).  CONFIG_DIR is
  ``--config-dir``, else $HUTCH_CONFIG_DIR, else /etc/hutch for root and
  $XDG_CONFIG_HOME/hutch for other users.
* A network in use is **active**: its bridge, rules and DNS responder exist, and
  ``ROOT/.networks/NAME/leases.json`` records them with every container's lease
  (addresses, name, published ports).  The DNS responder reads that file.
  The first container to join activates a network; the last to leave removes
  it all (as netavark and aardvark-dns do), so nothing of a network outlives
  its containers.
* ``ROOT/.networks/lock`` is one flock that serialises every change to any
  network: definitions, activation and leases.  Creates that run at once get
  distinct addresses because each allocation reads and writes the lease file
  under it.  ``ROOT/.networks/forwarding.json`` keeps the host's ip_forward
  settings from before the first network, restored when the last one goes.
"""

import errno
import os

from .. import jsonlite
from ..errors import HutchError
from .spec import check_name

DEFAULT = "default"
DEFAULT_SUBNET = "10.77.0.0/16"
AUTO_BASE = "10.78.0.0/16"      # the /24s of created networks come from here
BRIDGE_PREFIX = "hutch"


def default_config_dir():
    env = os.environ.get("HUTCH_CONFIG_DIR")
    if env:
        return env
    if os.geteuid() == 0:
        return "/etc/hutch"
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return os.path.join(base, "hutch")


def _write_json(path, data, mode=0o644, pretty=True):
    tmp = f"{path}.{os.getpid()}.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        text = jsonlite.dumps_pretty(data) if pretty else jsonlite.dumps(data)
        os.write(fd, text.encode() + b"\n")
    finally:
        os.close(fd)
    os.rename(tmp, path)


def _read_json(path):
    try:
        with open(path, "rb") as f:
            return jsonlite.loads(f.read().decode())
    except FileNotFoundError:
        return None
    except ValueError as e:
        raise HutchError(f"{path}: invalid JSON: {e}", errno.EINVAL) from None


class Store:
    """The definitions under ``config_dir`` and the active networks under
    ``root``.  Use it as a context manager to hold the lock."""

    def __init__(self, root, config_dir=None):
        self.root = root
        self.config_dir = config_dir or default_config_dir()
        self.defs = os.path.join(self.config_dir, "networks")
        self.run = os.path.join(root, ".networks")    # hidden: not a container
        self._lock = -1
        self._depth = 0

    # --- the lock -------------------------------------------------------------------
    def __enter__(self):
        if self._depth == 0:
            import fcntl
            os.makedirs(self.run, mode=0o711, exist_ok=True)
            fd = os.open(os.path.join(self.run, "lock"),
                         os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            fcntl.flock(fd, fcntl.LOCK_EX)
            self._lock = fd
        self._depth += 1
        return self

    def __exit__(self, *exc):
        self._depth -= 1
        if self._depth == 0:
            os.close(self._lock)
            self._lock = -1

    # --- definitions ------------------------------------------------------------------
    def names(self):
        out = {DEFAULT}
        try:
            out.update(n[:-5] for n in os.listdir(self.defs) if n.endswith(".json"))
        except FileNotFoundError:
            pass
        return sorted(out)

    def get(self, name):
        """A network's definition; HutchError ENOENT if there is none."""
        check_name(name)
        d = _read_json(os.path.join(self.defs, name + ".json"))
        if d is None and name == DEFAULT:
            d = default_definition()
        if d is None:
            raise HutchError(f"network {name}: no such network (hutch network create "
                             f"{name} makes it)", errno.ENOENT)
        return d

    def define(self, name, subnet=None, gateway=None, ipv6=False, subnet6=None,
               gateway6=None, internal=False, mtu=None):
        """`network create`: checks, picks what was not given, writes the file."""
        check_name(name)
        with self:
            if name == DEFAULT or os.path.exists(os.path.join(self.defs, name + ".json")):
                raise HutchError(f"network {name}: it exists already", errno.EEXIST)
            others = [self.get(n) for n in self.names()]
            d = {"name": name, "driver": "bridge", "internal": bool(internal),
                 "mtu": int(mtu) if mtu else 1500,
                 "bridge": _free_bridge(others)}
            if d["mtu"] < 1280 and (ipv6 or subnet6) or not 68 <= d["mtu"] <= 65535:
                raise HutchError(f"network {name}: mtu {mtu} is out of range "
                                 "(68-65535, 1280 or more with IPv6)", errno.EINVAL)
            d["subnet"], d["gateway"] = _subnet(name, subnet, gateway, 4, others)
            if ipv6 or subnet6:
                d["subnet6"], d["gateway6"] = _subnet(name, subnet6, gateway6, 6, others)
            elif gateway6:
                raise HutchError(f"network {name}: --gateway6 needs --ipv6", errno.EINVAL)
            os.makedirs(self.defs, mode=0o755, exist_ok=True)
            _write_json(os.path.join(self.defs, name + ".json"), d)
        return d

    def undefine(self, name):
        """`network rm`: refused while containers use it."""
        with self:
            self.get(name)
            act = self.active(name)
            if act and act.get("leases"):
                ids = ", ".join(sorted(act["leases"]))
                raise HutchError(f"network {name} is in use by container(s) {ids}; "
                                 "delete them first", errno.EBUSY)
            if name == DEFAULT:
                raise HutchError("network default cannot be removed: it is built in",
                                 errno.EPERM)
            os.unlink(os.path.join(self.defs, name + ".json"))

    # --- active networks ------------------------------------------------------------------
    def run_dir(self, name):
        return os.path.join(self.run, name)

    def active(self, name):
        return _read_json(os.path.join(self.run_dir(name), "leases.json"))

    def active_names(self):
        try:
            return sorted(n for n in os.listdir(self.run)
                          if os.path.exists(os.path.join(self.run, n, "leases.json")))
        except FileNotFoundError:
            return []

    def save_active(self, name, act):
        os.makedirs(self.run_dir(name), mode=0o755, exist_ok=True)
        _write_json(os.path.join(self.run_dir(name), "leases.json"), act, pretty=False)

    def drop_active(self, name):
        """Removes the network's run directory (leases.json, the daemon's log
        and what it left)."""
        from ..linux.fs import rmtree
        rmtree(self.run_dir(name))

    def forwarding_path(self):
        return os.path.join(self.run, "forwarding.json")


def default_definition():
    return {"name": DEFAULT, "driver": "bridge", "internal": False, "mtu": 1500,
            "bridge": BRIDGE_PREFIX + "0", "subnet": DEFAULT_SUBNET,
            "gateway": "10.77.0.1"}


def _free_bridge(defs):
    used = {d.get("bridge") for d in defs}
    for i in range(1, 10000):
        if f"{BRIDGE_PREFIX}{i}" not in used:
            return f"{BRIDGE_PREFIX}{i}"
    raise HutchError("no free bridge name", errno.ENOSPC)


def _overlaps(net, defs):
    import ipaddress
    for d in defs:
        for key in ("subnet", "subnet6"):
            if d.get(key) and ipaddress.ip_network(d[key]).overlaps(net):
                return d["name"]
    return None


def _subnet(name, subnet, gateway, version, defs):
    import ipaddress
    flag = "--subnet" if version == 4 else "--subnet6"
    if subnet:
        try:
            net = ipaddress.ip_network(subnet, strict=True)
        except ValueError as e:
            raise HutchError(f"network {name}: {flag} {subnet!r}: {e}", errno.EINVAL) \
                from None
        if net.version != version:
            raise HutchError(f"network {name}: {flag} {subnet!r} is not IPv{version}",
                             errno.EINVAL)
        if net.num_addresses < 4 or (version == 6 and net.prefixlen > 120):
            raise HutchError(f"network {name}: {flag} {subnet} is too small",
                             errno.EINVAL)
        other = _overlaps(net, defs)
        if other:
            raise HutchError(f"network {name}: {flag} {subnet} overlaps network "
                             f"{other}", errno.EEXIST)
    elif version == 4:
        for net in ipaddress.ip_network(AUTO_BASE).subnets(new_prefix=24):
            if not _overlaps(net, defs):
                break
        else:
            raise HutchError("no free /24 left in 10.78.0.0/16; give --subnet",
                             errno.ENOSPC)
    else:
        import hashlib
        h = hashlib.sha256(name.encode()).digest()
        # a unique local /64 (RFC 4193): fd + 40 bits from the name, subnet 0
        net = ipaddress.ip_network(f"fd{h[0]:02x}:{h[1]:02x}{h[2]:02x}:{h[3]:02x}{h[4]:02x}"
                                   "::/64")
    if gateway:
        try:
            gw = ipaddress.ip_address(gateway)
        except ValueError as e:
            raise HutchError(f"network {name}: gateway {gateway!r}: {e}", errno.EINVAL) \
                from None
        if gw not in net or gw in (net.network_address, net.broadcast_address):
            raise HutchError(f"network {name}: gateway {gateway} is not a host address "
                             f"of {net}", errno.EINVAL)
    else:
        gw = net.network_address + 1
    return str(net), str(gw)


def _addr(text):
    """An address as (family, int); ValueError if it is none."""
    import _socket
    fam = _socket.AF_INET6 if ":" in text else _socket.AF_INET
    try:
        return fam, int.from_bytes(_socket.inet_pton(fam, text), "big")
    except OSError:
        raise ValueError(f"{text!r} is not an IP address") from None


def _text(fam, n):
    import _socket
    return _socket.inet_ntop(fam, n.to_bytes(16 if fam == _socket.AF_INET6 else 4,
                                             "big"))


def prefixlen(cidr):
    return int(cidr.rpartition("/")[2])


def allocate(defn, act, cid, want=None, version=4):
    """An address for ``cid`` from the definition's subnet of that version: the
    requested one (checked), else the lowest free host address.  The caller
    holds the lock and records the lease.  (Integer arithmetic on the
    addresses: ipaddress costs every create ~4 ms to import.)"""
    key, gkey = ("subnet", "gateway") if version == 4 else ("subnet6", "gateway6")
    cidr = defn[key]
    fam, base = _addr(cidr.partition("/")[0])
    bits = 32 if version == 4 else 128
    size = 1 << (bits - prefixlen(cidr))
    first, last = base + 1, base + size - (2 if version == 4 else 1)
    used = {_addr(defn[gkey])[1]}
    for c, lease in (act.get("leases") or {}).items():
        a = lease.get("ip4" if version == 4 else "ip6")
        if a and c != cid:
            used.add(_addr(a)[1])
    if want is not None:
        try:
            wfam, n = _addr(want)
        except ValueError:
            wfam, n = None, 0
        if wfam != fam or not first <= n <= last:
            raise HutchError(f"--ip {want}: not a host address of network "
                             f"{defn['name']} ({cidr})", errno.EINVAL)
        if n in used:
            raise HutchError(f"--ip {want}: in use on network {defn['name']}",
                             errno.EADDRINUSE)
        return _text(fam, n)
    n = first
    # the lowest free address; leases are few, so walk from the start
    while n <= last:
        if n not in used:
            return _text(fam, n)
        n += 1
    raise HutchError(f"network {defn['name']}: no free address left in {cidr}",
                     errno.ENOSPC)
