"""hutch's nftables table, ``inet hutch``, through libnftables' JSON API.

Why libnftables (ctypes on libnftables.so.1) and not ``nft -j``: a container's
rules go in as one JSON batch, one atomic transaction, in the calling process;
a ``nft`` process per change would cost 3-5 ms each and the same parser.  The
JSON is built as Python data and encoded by ``_json`` (hutch.jsonlite);
libnftables parses it.

hutch never touches another table.  Its table holds:

* ``prerouting`` (nat, dstnat) and ``output`` (nat, -100): packets to a local
  address jump to ``publish``, where each container's published ports are DNAT
  rules commented with the container's id;
* ``postrouting`` (nat, srcnat): per network, masquerade of egress (unless
  internal), of hairpin traffic (a container reaching a published port of its
  own network) and of 127.0.0.1 traffic DNATed onto the bridge;
* ``forward`` (filter): per network, egress allowed (dropped when internal),
  replies and published ports in, everything else into the bridge dropped.

Network rules carry the comment ``net:NAME``, container rules ``ctr:ID``; they
are removed by comment, so the undo needs no saved handle.
"""

import ctypes
import errno

from .. import jsonlite
from ..errors import HutchError

TABLE = "hutch"
FAMILY = "inet"
_JSON, _HANDLE = 1 << 4, 1 << 3     # NFT_CTX_OUTPUT_JSON, NFT_CTX_OUTPUT_HANDLE

_lib = None


def _load():
    global _lib
    if _lib is None:
        try:
            lib = ctypes.CDLL("libnftables.so.1", use_errno=True)
        except OSError as e:
            raise HutchError(f"nftables: libnftables.so.1 is not installed (Debian "
                             f"package libnftables1): {e}", errno.ENOENT) from None
        lib.nft_ctx_new.restype = ctypes.c_void_p
        lib.nft_ctx_new.argtypes = [ctypes.c_uint32]
        for name in ("nft_ctx_buffer_output", "nft_ctx_buffer_error"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
        lib.nft_ctx_output_set_flags.argtypes = [ctypes.c_void_p, ctypes.c_uint]
        lib.nft_run_cmd_from_buffer.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
        for name in ("nft_ctx_get_output_buffer", "nft_ctx_get_error_buffer"):
            getattr(lib, name).argtypes = [ctypes.c_void_p]
            getattr(lib, name).restype = ctypes.c_char_p
        lib.nft_ctx_free.argtypes = [ctypes.c_void_p]
        _lib = lib
    return _lib


def run(commands, what):
    """Runs a list of JSON nftables commands as one transaction; returns the
    parsed output (for list commands), or None."""
    lib = _load()
    ctx = lib.nft_ctx_new(0)
    if not ctx:
        raise HutchError(f"{what}: nft_ctx_new failed", errno.ENOMEM)
    try:
        lib.nft_ctx_output_set_flags(ctx, _JSON | _HANDLE)
        lib.nft_ctx_buffer_output(ctx)
        lib.nft_ctx_buffer_error(ctx)
        doc = jsonlite.dumps({"nftables": commands}, compact=True).encode()
        rc = lib.nft_run_cmd_from_buffer(ctx, doc)
        out = lib.nft_ctx_get_output_buffer(ctx) or b""
        err = (lib.nft_ctx_get_error_buffer(ctx) or b"").decode(errors="replace")
    finally:
        lib.nft_ctx_free(ctx)
    if rc != 0:
        # the message, without the batch libnftables echoes after it
        first = " ".join(err.split("{\"nftables\"")[0].split())[:300] or \
            "libnftables refused the batch"
        code = errno.ENOENT if "No such file" in err else \
            errno.EPERM if "Operation not permitted" in err else errno.EINVAL
        raise HutchError(f"{what}: nftables: {first}", code)
    return jsonlite.loads(out.decode()) if out.strip() else None


# --- building blocks ---------------------------------------------------------------
def _t():
    return {"family": FAMILY, "table": TABLE}


def _chain(name, **base):
    c = dict(_t(), name=name)
    c.update(base)
    return {"add": {"chain": c}}


def _rule(chain, expr, comment):
    return {"add": {"rule": dict(_t(), chain=chain, expr=expr, comment=comment)}}


def _match(left, right, op="=="):
    return {"match": {"op": op, "left": left, "right": right}}


def _meta(key):
    return {"meta": {"key": key}}


def _payload(proto, field):
    return {"payload": {"protocol": proto, "field": field}}


def _prefix(net):
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


def _fam(ip):
    return "ip6" if ":" in str(ip) else "ip"


def base_commands():
    """The table and its base chains (idempotent: add is a no-op when they exist)."""
    local = [_match({"fib": {"result": "type", "flags": ["daddr"]}}, "local"),
             {"jump": {"target": "publish"}}]
    return [
        {"add": {"table": {"family": FAMILY, "name": TABLE}}},
        _chain("publish"),
        _chain("prerouting", type="nat", hook="prerouting", prio=-100, policy="accept"),
        _chain("output", type="nat", hook="output", prio=-100, policy="accept"),
        _chain("postrouting", type="nat", hook="postrouting", prio=100, policy="accept"),
        _chain("forward", type="filter", hook="forward", prio=0, policy="accept"),
        # the jumps go in once: flush and refill the two dstnat chains
        {"flush": {"chain": dict(_t(), name="prerouting")}},
        {"flush": {"chain": dict(_t(), name="output")}},
        _rule("prerouting", local, "hutch"),
        _rule("output", local, "hutch"),
    ]


def network_commands(name, bridge, subnets, internal):
    """The rules of one network (``subnets``: ipaddress networks, v4 and/or v6)."""
    c = f"net:{name}"
    br_in, br_out = _match(_meta("iifname"), bridge), _match(_meta("oifname"), bridge)
    not_in = _match(_meta("iifname"), bridge, "!=")
    not_out = _match(_meta("oifname"), bridge, "!=")
    ct_dnat = _match({"ct": {"key": "status"}}, "dnat", "in")
    cmds = []
    if internal:
        cmds.append(_rule("forward", [br_in, not_out, {"drop": None}], c))
        cmds.append(_rule("forward", [br_out, not_in, {"drop": None}], c))
    else:
        cmds.append(_rule("forward", [br_in, not_out, {"accept": None}], c))
        cmds.append(_rule("forward", [br_out, _match({"ct": {"key": "state"}},
                                                     ["established", "related"], "in"),
                                      {"accept": None}], c))
        cmds.append(_rule("forward", [br_out, ct_dnat, {"accept": None}], c))
        cmds.append(_rule("forward", [br_out, not_in, {"drop": None}], c))
    for net in subnets:
        fam = "ip6" if net.version == 6 else "ip"
        src = _match(_payload(fam, "saddr"), _prefix(net))
        if not internal:
            cmds.append(_rule("postrouting", [src, not_out, {"masquerade": None}], c))
        # hairpin: a container reaching a published port of its own network
        cmds.append(_rule("postrouting", [src, br_out, ct_dnat, {"masquerade": None}], c))
        if net.version == 4:
            # 127.0.0.1:PORT DNATed onto the bridge (route_localnet is on for it)
            cmds.append(_rule("postrouting", [
                _match(_payload("ip", "saddr"),
                       {"prefix": {"addr": "127.0.0.0", "len": 8}}),
                br_out, {"masquerade": None}], c))
    return cmds


def publish_commands(cid, ports, ip4, ip6):
    """DNAT rules for a container's published ports.  A port published on every
    address goes to each family the container has; one on an address goes to
    the container's address of that family (an IPv6 host address with an
    IPv4-only container is the proxy's business, see resolver.py)."""
    cmds = []
    for p in ports:
        hip = p["host_ip"]
        if hip == "::1":
            continue        # no DNAT from IPv6 loopback: the proxy serves it
        fams = {"": ("ip", "ip6"), "0.0.0.0": ("ip",), "::": ("ip6",)}.get(
            hip, (_fam(hip),))
        for fam in fams:
            target = ip4 if fam == "ip" else ip6
            if target is None:
                continue
            expr = [_match(_meta("nfproto"), "ipv4" if fam == "ip" else "ipv6"),
                    _match(_meta("l4proto"), p["proto"]),
                    _match(_payload("th", "dport"), p["host_port"])]
            if hip not in ("", "0.0.0.0", "::"):
                expr.append(_match(_payload(fam, "daddr"), hip))
            elif fam == "ip6":
                # not ::1: IPv6 has no route_localnet, so DNAT from loopback
                # fails; the responder's proxy listens there instead
                expr.append(_match(_payload("ip6", "daddr"), "::1", "!="))
            expr.append({"dnat": {"family": fam, "addr": target, "port": p["ctr_port"]}})
            cmds.append(_rule("publish", expr, f"ctr:{cid}"))
    return cmds


def list_table():
    """The table's rules as JSON objects, or None when there is no table."""
    try:
        out = run([{"list": {"table": {"family": FAMILY, "name": TABLE}}}], "list table inet hutch")
    except HutchError as e:
        if e.errno == errno.ENOENT:
            return None
        raise
    return [o for o in out["nftables"] if "rule" in o] if out else []


def delete_commented(comments, rules=None):
    """Commands deleting every rule whose comment is in ``comments``."""
    rules = list_table() if rules is None else rules
    cmds = []
    for o in rules or ():
        r = o["rule"]
        if r.get("comment") in comments:
            cmds.append({"delete": {"rule": dict(_t(), chain=r["chain"],
                                                 handle=r["handle"])}})
    return cmds


def delete_table():
    try:
        run([{"delete": {"table": {"family": FAMILY, "name": TABLE}}}], "delete table inet hutch")
    except HutchError as e:
        if e.errno != errno.ENOENT:
            raise
