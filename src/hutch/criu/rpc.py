"""CRIU's RPC messages (images/rpc.proto, proto2), encoded and decoded by hand.

The protocol is a protobuf message per SOCK_SEQPACKET datagram.  Only the wire
format's varint and length-delimited types occur in it, so a table of fields is
all hutch needs: no protobuf package, no generated code.

Each schema maps a field name to (number, kind, repeated), where kind is one of
"int32", "uint32", "bool", "string", "enum", or the name of another schema.
"""

SCHEMAS = {
    "page_server_info": {"address": (1, "string", False), "port": (2, "int32", False),
                         "pid": (3, "int32", False), "fd": (4, "int32", False)},
    "ext_mount_map": {"key": (1, "string", False), "val": (2, "string", False)},
    "join_namespace": {"ns": (1, "string", False), "ns_file": (2, "string", False),
                       "extra_opt": (3, "string", False)},
    "inherit_fd": {"key": (1, "string", False), "fd": (2, "int32", False)},
    "cgroup_root": {"ctrl": (1, "string", False), "path": (2, "string", False)},
    "opts": {
        "images_dir_fd": (1, "int32", False), "pid": (2, "int32", False),
        "leave_running": (3, "bool", False), "ext_unix_sk": (4, "bool", False),
        "tcp_established": (5, "bool", False), "evasive_devices": (6, "bool", False),
        "shell_job": (7, "bool", False), "file_locks": (8, "bool", False),
        "log_level": (9, "int32", False), "log_file": (10, "string", False),
        "ps": (11, "page_server_info", False), "notify_scripts": (12, "bool", False),
        "root": (13, "string", False), "parent_img": (14, "string", False),
        "track_mem": (15, "bool", False), "auto_dedup": (16, "bool", False),
        "work_dir_fd": (17, "int32", False), "link_remap": (18, "bool", False),
        "cpu_cap": (20, "uint32", False), "force_irmap": (21, "bool", False),
        "exec_cmd": (22, "string", True), "ext_mnt": (23, "ext_mount_map", True),
        "manage_cgroups": (24, "bool", False), "cg_root": (25, "cgroup_root", True),
        "rst_sibling": (26, "bool", False), "inherit_fd": (27, "inherit_fd", True),
        "auto_ext_mnt": (28, "bool", False), "ext_sharing": (29, "bool", False),
        "ext_masters": (30, "bool", False), "skip_mnt": (31, "string", True),
        "enable_fs": (32, "string", True), "manage_cgroups_mode": (34, "enum", False),
        "ghost_limit": (35, "uint32", False), "irmap_scan_paths": (36, "string", True),
        "external": (37, "string", True), "empty_ns": (38, "uint32", False),
        "join_ns": (39, "join_namespace", True), "cgroup_props": (41, "string", False),
        "cgroup_props_file": (42, "string", False),
        "cgroup_dump_controller": (43, "string", True),
        "freeze_cgroup": (44, "string", False), "timeout": (45, "uint32", False),
        "tcp_skip_in_flight": (46, "bool", False), "weak_sysctls": (47, "bool", False),
        "lazy_pages": (48, "bool", False), "status_fd": (49, "int32", False),
        "orphan_pts_master": (50, "bool", False), "config_file": (51, "string", False),
        "tcp_close": (52, "bool", False), "lsm_profile": (53, "string", False),
        "cgroup_yard": (60, "string", False), "network_lock": (64, "enum", False),
    },
    "features": {"mem_track": (1, "bool", False), "lazy_pages": (2, "bool", False)},
    "req": {"type": (1, "enum", False), "opts": (2, "opts", False),
            "notify_success": (3, "bool", False), "keep_open": (4, "bool", False),
            "features": (5, "features", False), "pid": (6, "uint32", False)},
    "dump_resp": {"restored": (1, "bool", False)},
    "restore_resp": {"pid": (1, "int32", False)},
    "notify": {"script": (1, "string", False), "pid": (2, "int32", False)},
    "version": {"major_number": (1, "int32", False), "minor_number": (2, "int32", False),
                "gitid": (3, "string", False), "sublevel": (4, "int32", False),
                "extra": (5, "int32", False), "name": (6, "string", False)},
    # images/pagemap.proto
    "pagemap_entry": {"vaddr": (1, "uint64", False), "nr_pages": (2, "uint32", False),
                      "flags": (4, "uint32", False)},
    "resp": {"type": (1, "enum", False), "success": (2, "bool", False),
             "dump": (3, "dump_resp", False), "restore": (4, "restore_resp", False),
             "notify": (5, "notify", False), "ps": (6, "page_server_info", False),
             "cr_errno": (7, "int32", False), "features": (8, "features", False),
             "cr_errmsg": (9, "string", False), "version": (10, "version", False),
             "status": (11, "int32", False)},
}

# criu_req_type
EMPTY, DUMP, RESTORE, CHECK, PRE_DUMP, PAGE_SERVER, NOTIFY = range(7)
CPUINFO_DUMP, CPUINFO_CHECK, FEATURE_CHECK, VERSION, WAIT_PID, PAGE_SERVER_CHLD = \
    range(7, 13)
# criu_cg_mode
CG_MODES = {"ignore": 0, "none": 1, "props": 2, "soft": 3, "full": 4, "strict": 5,
            "default": 6}

# criu_network_lock_method
NETWORK_LOCK = {"iptables": 1, "nftables": 2, "skip": 3}

_VARINT, _LEN = 0, 2


def _varint(n):
    if n < 0:
        n += 1 << 64          # int32/int64 negatives: ten bytes, two's complement
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def encode(schema, msg):
    """``msg``: a dict of field name -> value (lists for repeated fields)."""
    fields = SCHEMAS[schema]
    out = bytearray()
    for name, value in msg.items():
        if value is None:
            continue
        num, kind, repeated = fields[name]
        for v in (value if repeated else (value,)):
            if kind == "string":
                data = v.encode() if isinstance(v, str) else bytes(v)
                out += _varint(num << 3 | _LEN) + _varint(len(data)) + data
            elif kind in ("int32", "uint32", "uint64", "enum", "bool"):
                out += _varint(num << 3 | _VARINT) + _varint(int(v))
            else:
                data = encode(kind, v)
                out += _varint(num << 3 | _LEN) + _varint(len(data)) + data
    return bytes(out)


def _read_varint(buf, i):
    n = shift = 0
    while True:
        if i >= len(buf):
            raise ValueError("truncated varint")
        b = buf[i]
        i += 1
        n |= (b & 0x7F) << shift
        if not b & 0x80:
            return n, i
        shift += 7
        if shift > 63:
            raise ValueError("varint too long")


def decode(schema, buf):
    fields = {num: (name, kind, rep) for name, (num, kind, rep) in
              SCHEMAS[schema].items()}
    out = {}
    i = 0
    while i < len(buf):
        key, i = _read_varint(buf, i)
        num, wire = key >> 3, key & 7
        if wire == _VARINT:
            val, i = _read_varint(buf, i)
        elif wire == _LEN:
            size, i = _read_varint(buf, i)
            val = bytes(buf[i:i + size])
            if len(val) != size:
                raise ValueError("truncated field")
            i += size
        elif wire == 1:
            val, i = int.from_bytes(buf[i:i + 8], "little"), i + 8
        elif wire == 5:
            val, i = int.from_bytes(buf[i:i + 4], "little"), i + 4
        else:
            raise ValueError(f"unsupported wire type {wire}")
        if num not in fields:
            continue            # a newer CRIU's field: ignored, as protobuf does
        name, kind, rep = fields[num]
        if kind == "string":
            val = val.decode(errors="replace")
        elif kind == "bool":
            val = bool(val)
        elif kind == "int32":
            val = val - (1 << 64) if val >= 1 << 63 else val
        elif kind not in ("uint32", "uint64", "enum"):
            val = decode(kind, val)
        if rep:
            out.setdefault(name, []).append(val)
        else:
            out[name] = val
    return out
