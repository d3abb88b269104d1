"""hutch network COMMAND [options] [NAME]

Container networks: a bridge per network, a veth per container, NAT, published
ports and names (docs/networks.md).  `default` exists without being created.

commands:
  create NAME   --subnet CIDR --gateway IP --ipv6 --subnet6 CIDR --gateway6 IP
                --internal (no traffic in or out of the network) --mtu N
  ls            --format table|json (also: list)
  inspect NAME  the definition, and the containers attached with their addresses
  rm NAME       refused while containers are attached (also: remove)

Definitions are in --config-dir (default /etc/hutch) under networks/; what a
network in use has made is recorded under --root.
"""

import sys

from . import args

CREATE = {"--subnet": ("subnet", "str"), "--gateway": ("gateway", "str"),
          "--ipv6": ("ipv6", "bool"), "--subnet6": ("subnet6", "str"),
          "--gateway6": ("gateway6", "str"), "--internal": ("internal", "bool"),
          "--mtu": ("mtu", "int")}
LS = {"--format": ("format", "str"), "-q": ("quiet", "bool"), "--quiet": ("quiet", "bool")}


def run(g, argv):
    from ..network.store import Store
    if not argv:
        raise args.Usage("network: a command is needed (create, ls, inspect, rm); "
                         "see hutch network --help")
    cmd, rest = argv[0], argv[1:]
    store = Store(g.root, g.config_dir)
    if cmd == "create":
        o, pos = args.parse(rest, CREATE, "network create")
        name = _one(pos, "create")
        store.define(name, subnet=o["subnet"], gateway=o["gateway"], ipv6=o["ipv6"],
                     subnet6=o["subnet6"], gateway6=o["gateway6"],
                     internal=o["internal"], mtu=o["mtu"])
        sys.stdout.write(name + "\n")
        return 0
    if cmd in ("ls", "list"):
        o, pos = args.parse(rest, LS, "network ls")
        if pos:
            raise args.Usage("network ls: takes no arguments")
        return _ls(store, o)
    if cmd == "inspect":
        _, pos = args.parse(rest, {}, "network inspect")
        if not pos:
            raise args.Usage("network inspect: a network name is needed")
        import json
        out = [inspect(store, n) for n in pos]
        sys.stdout.write(json.dumps(out, indent=2) + "\n")
        return 0
    if cmd in ("rm", "remove"):
        _, pos = args.parse(rest, {}, "network rm")
        if not pos:
            raise args.Usage("network rm: a network name is needed")
        for n in pos:
            with store:
                act = store.active(n)
                if act is not None and not act.get("leases"):
                    # active without containers (a hutch killed part-way): its
                    # bridge, rules and daemon go with it
                    from ..network.attach import deactivate
                    deactivate(store, n, act)
                store.undefine(n)
            sys.stdout.write(n + "\n")
        return 0
    raise args.Usage(f"network: unknown command {cmd!r} (create, ls, inspect, rm)")


def _one(pos, verb):
    if len(pos) != 1:
        raise args.Usage(f"network {verb}: exactly one network name is needed")
    return pos[0]


def inspect(store, name):
    d = dict(store.get(name))
    act = store.active(name)
    d["active"] = act is not None
    d["containers"] = {cid: {k: lease.get(k) for k in ("name", "aliases", "ip4", "ip6",
                                                         "ifname", "host_if", "ports")}
                       for cid, lease in ((act or {}).get("leases") or {}).items()}
    return d


def _ls(store, o):
    fmt = o["format"] or "table"
    rows = [inspect(store, n) for n in store.names()]
    if o["quiet"]:
        sys.stdout.write("".join(r["name"] + "\n" for r in rows))
    elif fmt == "json":
        import json
        sys.stdout.write(json.dumps(rows, indent=2) + "\n")
    elif fmt == "table":
        w = max([4] + [len(r["name"]) for r in rows])
        lines = [f"{'NAME':<{w}}  {'BRIDGE':<9} {'SUBNET':<18} {'SUBNET6':<24} "
                 "INTERNAL  CONTAINERS"]
        for r in rows:
            lines.append(f"{r['name']:<{w}}  {r['bridge']:<9} {r.get('subnet') or '-':<18} "
                         f"{r.get('subnet6') or '-':<24} "
                         f"{'yes' if r.get('internal') else 'no':<9} "
                         f"{len(r['containers'])}")
        sys.stdout.write("\n".join(lines) + "\n")
    else:
        raise args.Usage(f"network ls: --format {fmt!r} is table or json")
    return 0

