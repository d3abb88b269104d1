"""The device allow/deny list on cgroup v2: an eBPF program hutch assembles itself.

cgroup v2 has no devices.allow/deny files.  Instead a BPF_PROG_TYPE_CGROUP_DEVICE
program attached to the cgroup decides each access: its context is
``struct bpf_cgroup_dev_ctx { u32 access_type; u32 major; u32 minor; }`` where
access_type = (access << 16) | type, type 1 = block, 2 = char, access bits
1 = mknod, 2 = read, 4 = write.  It returns 1 to allow, 0 to deny.

The rules keep v1's meaning: they apply in order, so the *last* rule that matches an
access decides.  The program therefore checks the rules from last to first and the
first match returns.  An allow rule matches when every requested access bit is in
its access set; a deny rule matches when any requested bit is.  With no match the
answer is deny (the list starts from deny-all, as engines send it).
"""

import errno
import os
import struct

from ..errors import HutchError

BPF_PROG_LOAD = 5
BPF_PROG_ATTACH = 8
BPF_PROG_DETACH = 9
BPF_PROG_GET_FD_BY_ID = 13
BPF_PROG_QUERY = 16
BPF_PROG_TYPE_CGROUP_DEVICE = 15
BPF_CGROUP_DEVICE = 6
BPF_F_ALLOW_MULTI = 2

ACC = {"m": 1, "r": 2, "w": 4}
TYPE = {"b": 1, "c": 2}

# registers and opcodes used
R0, R1, R2, R3, R4, R5, R6 = range(7)
LDX_W = 0x61        # BPF_LDX | BPF_MEM | BPF_W
AND32_K = 0x54      # BPF_ALU | BPF_AND | BPF_K
RSH32_K = 0x74      # BPF_ALU | BPF_RSH | BPF_K
MOV32_X = 0xbc      # BPF_ALU | BPF_MOV | BPF_X
MOV64_K = 0xb7      # BPF_ALU64 | BPF_MOV | BPF_K
JNE_K = 0x55        # BPF_JMP | BPF_JNE | BPF_K
JEQ_K = 0x15        # BPF_JMP | BPF_JEQ | BPF_K
JSET_K = 0x45       # BPF_JMP | BPF_JSET | BPF_K
EXIT = 0x95


def ins(code, dst=0, src=0, off=0, imm=0):
    return struct.pack("<BBhi", code, (src << 4) | dst, off, imm)


def _access_bits(access):
    bits = 0
    for ch in access or "rwm":
        if ch not in ACC:
            raise HutchError(f"linux.resources.devices: access {access!r} may only use "
                             "r, w and m", errno.EINVAL)
        bits |= ACC[ch]
    return bits


def _rule_block(rule):
    """Instructions for one rule; the jumps to 'next rule' are relative to the end
    of the block, so each block is self-contained."""
    t = rule.get("type") or "a"
    if t not in ("a", "b", "c"):
        raise HutchError(f"linux.resources.devices: type {t!r} must be a, b or c",
                         errno.EINVAL)
    acc = _access_bits(rule.get("access"))
    allow = bool(rule.get("allow"))
    major, minor = rule.get("major"), rule.get("minor")
    checks = []     # (code, dst, imm) conditional jumps to next-rule, or "deny-acc"
    if t != "a":
        checks.append((JNE_K, R2, TYPE[t]))
    if allow:
        if acc != 7:
            checks.append((JSET_K, R3, (~acc) & 7))     # asks for more than allowed
    else:
        checks.append("deny-acc")
    if t != "a" and major is not None and major >= 0:
        checks.append((JNE_K, R4, major))
    if t != "a" and minor is not None and minor >= 0:
        checks.append((JNE_K, R5, minor))
    # lay out: each check is 1 insn, except deny-acc (3: mov, and, jeq)
    sizes = [3 if c == "deny-acc" else 1 for c in checks]
    total = sum(sizes) + 2      # + mov r0 + exit
    out = []
    pos = 0
    for c, size in zip(checks, sizes):
        remaining = total - (pos + size)    # jump target: just past this block
        if c == "deny-acc":
            out.append(ins(MOV32_X, R6, R3))
            out.append(ins(AND32_K, R6, imm=acc))
            out.append(ins(JEQ_K, R6, off=remaining, imm=0))
        else:
            code, dst, imm = c
            out.append(ins(code, dst, off=remaining, imm=imm))
        pos += size
    out.append(ins(MOV64_K, R0, imm=1 if allow else 0))
    out.append(ins(EXIT))
    return out


def assemble(rules):
    """The program (bytes) for the rules, in order, last match wins."""
    prog = [
        ins(LDX_W, R2, R1, 0),          # r2 = access_type
        ins(AND32_K, R2, imm=0xffff),   # r2 = type
        ins(LDX_W, R3, R1, 0),
        ins(RSH32_K, R3, imm=16),       # r3 = access
        ins(LDX_W, R4, R1, 4),          # r4 = major
        ins(LDX_W, R5, R1, 8),          # r5 = minor
    ]
    for rule in reversed(rules):
        prog += _rule_block(rule)
    prog += [ins(MOV64_K, R0, imm=0), ins(EXIT)]
    return b"".join(prog)


def full_rules(rules):
    """The container's list: deny-all, the spec's rules, then the defaults."""
    from .v1 import DEFAULT_ALLOW
    out = [{"allow": False, "type": "a", "access": "rwm"}] + list(rules)
    for r in DEFAULT_ALLOW:
        t, mm, acc = r.split()
        ma, mi = mm.split(":")
        out.append({"allow": True, "type": t, "major": int(ma),
                    "minor": -1 if mi == "*" else int(mi), "access": acc})
    return out


def load(prog):
    """Loads the program; returns its fd.  The verifier's log is in the error."""
    import ctypes
    from ..linux.kernel import kernel
    insns = ctypes.create_string_buffer(prog, len(prog))
    lic = ctypes.create_string_buffer(b"Apache-2.0")
    log = ctypes.create_string_buffer(65536)
    attr = struct.pack("<IIQQIIQII16sII", BPF_PROG_TYPE_CGROUP_DEVICE, len(prog) // 8,
                       ctypes.addressof(insns), ctypes.addressof(lic), 1, len(log),
                       ctypes.addressof(log), 0, 0, b"hutch_devices", 0,
                       BPF_CGROUP_DEVICE)
    attr = attr.ljust(128, b"\0")
    try:
        return kernel().bpf(BPF_PROG_LOAD, attr, what="load the device filter")
    except OSError as e:
        detail = log.value.decode(errors="replace").strip().splitlines()
        raise HutchError(f"load the cgroup v2 device filter: {e.strerror or e}"
                         + (f" (verifier: {detail[-1]})" if detail else ""),
                         e.errno) from None


def attached(cgroup_fd):
    """Ids of the device programs attached to the cgroup itself."""
    import ctypes
    from ..linux.kernel import kernel
    ids = (ctypes.c_uint32 * 64)()
    attr = struct.pack("<IIIIQI", cgroup_fd, BPF_CGROUP_DEVICE, 0, 0,
                       ctypes.addressof(ids), 64).ljust(64, b"\0")
    buf = ctypes.create_string_buffer(attr, len(attr))      # the kernel writes prog_cnt
    r = kernel().syscall("bpf", BPF_PROG_QUERY, buf, len(attr))
    if r < 0:
        return []
    count = struct.unpack_from("<I", buf.raw, 24)[0]
    return list(ids[:count])


def apply_v2(path, rules):
    """Attaches a program for the rules to the cgroup, then detaches the ones it
    replaces, so that there is never a moment without a filter."""
    from ..linux.kernel import kernel
    k = kernel()
    prog_fd = load(assemble(full_rules(rules)))
    try:
        cg = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        os.close(prog_fd)
        raise HutchError(f"open cgroup {path}: {e.strerror}", e.errno) from None
    try:
        old = attached(cg)
        attr = struct.pack("<IIIII", cg, prog_fd, BPF_CGROUP_DEVICE, BPF_F_ALLOW_MULTI, 0)
        try:
            k.bpf(BPF_PROG_ATTACH, attr.ljust(32, b"\0"), what="attach the device filter")
        except OSError as e:
            raise HutchError(f"attach the device filter to {path}: {e.strerror or e}",
                             e.errno) from None
        for pid in old:
            try:
                ofd = k.bpf(BPF_PROG_GET_FD_BY_ID, struct.pack("<I", pid).ljust(16, b"\0"))
            except OSError:
                continue
            try:
                k.bpf(BPF_PROG_DETACH, struct.pack("<IIII", cg, ofd, BPF_CGROUP_DEVICE,
                                                   0).ljust(32, b"\0"))
            except OSError:
                pass
            finally:
                os.close(ofd)
    finally:
        os.close(cg)
        os.close(prog_fd)
