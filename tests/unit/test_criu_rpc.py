"""CRIU's RPC messages: the hand-written protobuf codec against known encodings."""

import pytest

from hutch.criu import rpc


def test_encodes_like_protobuf():
    # criu_req{type: DUMP(1), opts{images_dir_fd: 5, pid: 300, leave_running: true}}
    data = rpc.encode("req", {"type": rpc.DUMP, "opts": {
        "images_dir_fd": 5, "pid": 300, "leave_running": True}})
    assert data == bytes([0x08, 0x01, 0x12, 0x07, 0x08, 0x05, 0x10, 0xAC, 0x02,
                          0x18, 0x01])


def test_negative_int32_takes_ten_bytes_and_round_trips():
    data = rpc.encode("resp", {"type": rpc.DUMP, "success": False, "cr_errno": -2})
    assert data[-10:] == bytes([0xFE] + [0xFF] * 8 + [0x01])
    assert rpc.decode("resp", data) == {"type": 1, "success": False, "cr_errno": -2}


def test_nested_repeated_and_strings_round_trip():
    opts = {"images_dir_fd": 3, "root": "/var/lib/x", "ext_mnt": [
        {"key": "/data", "val": "/srv/data"}, {"key": "/dev/null", "val": "/dev/null"}],
        "external": ["net[4026531992]:extRootNetNS"], "manage_cgroups_mode": 3,
        "ps": {"address": "10.0.0.2", "port": 7000}, "cg_root": [{"ctrl": "memory",
                                                               "path": "/x"}]}
    back = rpc.decode("opts", rpc.encode("opts", opts))
    assert back == opts


def test_unknown_fields_are_skipped_and_truncation_is_an_error():
    # field 99 (varint) then success=true
    data = bytes([0x98, 0x06, 0x07, 0x10, 0x01])
    assert rpc.decode("resp", data) == {"success": True}
    with pytest.raises(ValueError):
        rpc.decode("resp", bytes([0x4A, 0x05, 0x61]))     # cr_errmsg cut short


def test_a_restore_response():
    data = rpc.encode("resp", {"type": rpc.RESTORE, "success": True,
                               "restore": {"pid": 4242}})
    assert rpc.decode("resp", data)["restore"] == {"pid": 4242}


def test_network_lock_and_cgroup_yard_fields_encode_at_their_numbers():
    # opts{cgroup_yard (60): "/y", network_lock (64): SKIP (3)}
    data = rpc.encode("opts", {"cgroup_yard": "/y", "network_lock": 3})
    assert data == bytes([0xE2, 0x03, 0x02, 0x2F, 0x79, 0x80, 0x04, 0x03])
    assert rpc.NETWORK_LOCK == {"iptables": 1, "nftables": 2, "skip": 3}


def test_lazy_pages_are_counted_from_the_pagemap(tmp_path):
    """A pagemap image: two magics, then size-prefixed messages (head, entries);
    only entries flagged PE_LAZY count."""
    import os
    import struct
    from hutch import criu as C

    def msg(schema, m):
        data = rpc.encode(schema, m)
        return struct.pack("<I", len(data)) + data
    head = bytes([0x08, 0x01])                         # pagemap_head{pages_id: 1}
    img = struct.pack("<II", C.IMG_COMMON_MAGIC, C.PAGEMAP_MAGIC) + \
        struct.pack("<I", len(head)) + head + \
        msg("pagemap_entry", {"vaddr": 0x400000, "nr_pages": 3, "flags": 4}) + \
        msg("pagemap_entry", {"vaddr": 0x7f0000000000, "nr_pages": 1000,
                              "flags": C.PE_LAZY}) + \
        msg("pagemap_entry", {"vaddr": 0x7ffff000, "nr_pages": 5, "flags": 6})
    (tmp_path / "pagemap-1.img").write_bytes(img)
    (tmp_path / "pagemap-shmem-9.img").write_bytes(img)   # not a task's
    assert C.lazy_bytes(str(tmp_path)) == 1005 * os.sysconf("SC_PAGE_SIZE")

