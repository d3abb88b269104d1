"""The network options as users write them, parsed into plain data: the
``--network`` value, ``-p/--publish``, ``--add-host``, ``--dns`` and
``--bandwidth``.  No kernel work here, and nothing heavy to import: the
sandbox's settings and the OCI annotations both parse through this module."""

import errno

from ..errors import HutchError

# modes that stand alone (no bridge network beside them)
ALONE = ("none", "loopback", "host", "slirp4netns", "pasta")
ROOTLESS = ("slirp4netns", "pasta")
_ALNUM = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")
_NAME_CHARS = _ALNUM | frozenset("_.-")
MAX_PORTS = 1024        # one container's published ports, ranges expanded


def bad(msg):
    return HutchError(msg, errno.EINVAL)


def check_name(name):
    """A network's name: what `network create` accepts."""
    ok = bool(name) and len(name) <= 63 and name[0] in _ALNUM and \
        set(name) <= _NAME_CHARS        # (no re: it costs a verb ~2.5 ms to import)
    if not ok or name in ALONE or name.startswith("cni"):
        raise bad(f"invalid network name {name!r}: 1-63 letters, digits, '_', '.' or "
                  "'-', starting with a letter or digit, and not one of "
                  f"{', '.join(ALONE)} or cni*")
    return name


def parse_networks(value):
    """``--network``: returns ``(mode, names)``: mode is one of ALONE, "cni"
    (names is [conflist]) or "bridge" (names are hutch networks, in order:
    the first gives the default route)."""
    value = (value or "loopback").strip()
    if value in ALONE:
        return value, []
    if value.startswith("cni:"):
        conflist = value[4:]
        if not conflist or "," in conflist:
            raise bad(f"--network {value!r}: cni: takes one conflist (a path or a "
                      "network name), e.g. cni:mynet")
        return "cni", [conflist]
    names = [n.strip() for n in value.split(",")]
    for n in names:
        if n in ALONE or n.startswith("cni:"):
            raise bad(f"--network {value!r}: {n} stands alone; only hutch networks "
                      "can be combined (NAME,NAME)")
        check_name(n)
    if len(set(names)) != len(names):
        raise bad(f"--network {value!r}: a network is named twice")
    return "bridge", names


def _port_range(text, what, spec):
    lo, sep, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi) if sep else int(lo)
    except ValueError:
        raise bad(f"--publish {spec!r}: {what} {text!r} is not a port or a range "
                  "(N or N-M)") from None
    if not (1 <= a <= b <= 65535):
        raise bad(f"--publish {spec!r}: {what} {text!r} is out of 1-65535 or reversed")
    return a, b


def parse_publish(specs):
    """``-p [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]`` (HOSTIP in brackets for IPv6;
    ports may be equal-sized ranges N-M).  Returns the ports one by one:
    ``[{"proto", "host_ip", "host_port", "ctr_port"}]``; host_ip "" is every
    address of the host."""
    out, seen = [], set()
    for spec in specs or ():
        s, _, proto = spec.strip().partition("/")
        proto = proto or "tcp"
        if proto not in ("tcp", "udp"):
            raise bad(f"--publish {spec!r}: protocol {proto!r} is tcp or udp")
        host_ip = ""
        if s.startswith("["):
            end = s.find("]:")
            if end < 0:
                raise bad(f"--publish {spec!r}: an IPv6 host address goes in brackets, "
                          "e.g. [::1]:8080:80")
            host_ip, s = s[1:end], s[end + 2:]
        else:
            parts = s.split(":")
            if len(parts) == 3:
                host_ip, s = parts[0], ":".join(parts[1:])
            elif len(parts) != 2:
                raise bad(f"--publish {spec!r}: the form is [HOSTIP:]HOSTPORT:CTRPORT"
                          "[/tcp|/udp]")
        if host_ip:
            import ipaddress
            try:
                host_ip = str(ipaddress.ip_address(host_ip))
            except ValueError:
                raise bad(f"--publish {spec!r}: {host_ip!r} is not an IP address") \
                    from None
        hp, _, cp = s.partition(":")
        h0, h1 = _port_range(hp, "host port", spec)
        c0, c1 = _port_range(cp, "container port", spec)
        if h1 - h0 != c1 - c0:
            raise bad(f"--publish {spec!r}: the host and container ranges differ in size")
        for i in range(h1 - h0 + 1):
            key = (proto, host_ip, h0 + i)
            if key in seen:
                raise bad(f"--publish {spec!r}: host port {h0 + i}/{proto} is "
                          "published twice")
            seen.add(key)
            out.append({"proto": proto, "host_ip": host_ip, "host_port": h0 + i,
                        "ctr_port": c0 + i})
        if len(out) > MAX_PORTS:
            raise bad(f"--publish: more than {MAX_PORTS} ports")
    return out


def parse_add_host(specs):
    """``--add-host NAME:IP`` -> [(name, ip)]."""
    out = []
    for spec in specs or ():
        name, sep, ip = spec.partition(":")
        if ip.startswith("[") and ip.endswith("]"):
            ip = ip[1:-1]
        import ipaddress
        try:
            ip = str(ipaddress.ip_address(ip))
        except ValueError:
            ip = None
        if not sep or ip is None or not name or name[0] not in _ALNUM or \
                not set(name) <= _ALNUM | frozenset(".-"):
            raise bad(f"--add-host {spec!r}: the form is NAME:IP")
        out.append((name, ip))
    return out


def parse_dns(specs):
    out = []
    for s in specs or ():
        import ipaddress
        try:
            out.append(str(ipaddress.ip_address(s)))
        except ValueError:
            raise bad(f"--dns {s!r}: not an IP address") from None
    return out


_UNITS = {"bit": 1, "kbit": 1000, "mbit": 10**6, "gbit": 10**9,
          "bps": 8, "kbps": 8000, "mbps": 8 * 10**6, "gbps": 8 * 10**9,
          "k": 1000, "m": 10**6, "g": 10**9, "": 1}


def parse_rate(text):
    """``--bandwidth RATE`` in tc's units (10mbit, 500kbit, 1gbit; kbps and
    mbps are bytes) -> bits per second."""
    t = (text or "").strip().lower()
    i = len(t)
    while i and t[i - 1].isalpha():
        i -= 1
    number, unit = t[:i].strip(), t[i:]
    try:
        value = float(number) if number.replace(".", "", 1).isdigit() else None
    except ValueError:
        value = None
    if value is None or unit not in _UNITS:
        raise bad(f"--bandwidth {text!r}: a rate such as 10mbit, 500kbit or 1gbit")
    bits = int(value * _UNITS[unit])
    if not 8000 <= bits <= 100 * 10**9:
        raise bad(f"--bandwidth {text!r}: out of 8kbit-100gbit")
    return bits
