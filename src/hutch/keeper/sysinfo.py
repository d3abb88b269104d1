"""sysinfo(2) answered from the container's own limits, through seccomp user
notification: what busybox's ``free`` and ``uptime`` (and anything else that
asks the kernel rather than reading /proc) see.

The container's seccomp filter sends sysinfo to a listener (its profile gains a
``SCMP_ACT_NOTIFY`` rule and ``listenerPath``: :func:`add_rule`).  hutch passes
each filter's notify fd (the init's, and each exec's) to that path with the
runtime-spec's seccomp-agent message; the keeper holds them all.  For each
notification it fills the caller's ``struct sysinfo`` from the views (total and
free memory from the cgroup, swap, uptime since the container started, its own
load averages, its task count), writing it into the caller's memory through
/proc/PID/mem, after checking that the notification is still alive (so a pid
that died and was reused is never written to), and answers 0.

If the keeper dies, the kernel answers the container's sysinfo with ENOSYS at
once; nothing hangs.
"""

import errno
import os
import struct

from ..seccomp import KEEPER_METADATA

# <linux/seccomp.h>: struct seccomp_notif (80 bytes), seccomp_notif_resp (24)
NOTIF = struct.Struct("=QIIiIQ6Q")
RESP = struct.Struct("=QqiI")
NOTIF_RECV = 0xC0502100
NOTIF_SEND = 0xC0182101
NOTIF_ID_VALID = 0x40082102
RESP_CONTINUE = 1       # SECCOMP_USER_NOTIF_FLAG_CONTINUE

SYSINFO = {"x86_64": 99, "aarch64": 179}.get(os.uname().machine, 99)
# struct sysinfo on 64-bit Linux: uptime, loads[3], 6 memory fields, procs (and a
# pad), totalhigh, freehigh, mem_unit; 112 bytes with the tail padding
SYSINFO_STRUCT = struct.Struct("@l3L6LHH2LI")
SYSINFO_SIZE = 112
LOAD_SHIFT = 16          # SI_LOAD_SHIFT: loads in 1/65536


def add_rule(profile, listener):
    """``profile`` (an OCI seccomp dict, changed in place) sends sysinfo to the
    listener at ``listener``.  sysinfo leaves any rule that named it without
    arguments (one action per syscall).  Returns False, changing nothing, if the
    profile has a listener of its own (an engine's seccomp agent)."""
    if profile.get("listenerPath"):
        return False
    rules = []
    for rule in profile.get("syscalls") or ():
        names = rule.get("names") or []
        if "sysinfo" in names and not rule.get("args"):
            rule = dict(rule, names=[n for n in names if n != "sysinfo"])
            if not rule["names"]:
                continue
        rules.append(rule)
    rules.append({"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"})
    profile["syscalls"] = rules
    profile["listenerPath"] = listener
    profile["listenerMetadata"] = KEEPER_METADATA
    return True


def allow_all_but_sysinfo(listener):
    """A profile that only sends sysinfo to the listener (seccomp='unconfined'
    with the views on)."""
    return {"defaultAction": "SCMP_ACT_ALLOW", "listenerPath": listener,
            "listenerMetadata": KEEPER_METADATA,
            "syscalls": [{"names": ["sysinfo"], "action": "SCMP_ACT_NOTIFY"}]}


def receive_fd(listen_sock):
    """Accepts one seccomp-agent connection; returns the notify fd it carries,
    or -1."""
    import _socket
    from ..linux.fdpass import unpack_fds
    try:
        from .sock import accept
        conn = accept(listen_sock)
    except BlockingIOError:
        return -1
    try:
        conn.settimeout(2.0)
        _msg, anc, _flags, _addr = conn.recvmsg(1 << 16, _socket.CMSG_SPACE(4 * 4))
        fds = [fd for level, kind, data in anc if level == _socket.SOL_SOCKET and
               kind == _socket.SCM_RIGHTS for fd in unpack_fds(data)]
        for extra in fds[1:]:
            os.close(extra)
        return fds[0] if fds else -1
    except OSError:
        return -1
    finally:
        conn.close()


def handle(fd, views):
    """Answers one notification on ``fd``.  Returns False if the filter is gone
    (every process that had it exited): the caller then drops the fd."""
    import fcntl
    try:
        raw = fcntl.ioctl(fd, NOTIF_RECV, bytes(NOTIF.size))
    except OSError as e:
        if e.errno in (errno.ENOENT, errno.EINTR, errno.EAGAIN):
            return True         # the caller went away meanwhile
        return False
    nid, pid, _flags, nr, _arch, _ip, *args = NOTIF.unpack(raw)
    if nr != SYSINFO:
        _send(fd, nid, 0, 0, RESP_CONTINUE)
        return True
    try:
        data = info(views)
        mem = os.open(f"/proc/{pid}/mem", os.O_WRONLY | os.O_CLOEXEC)
        try:
            fcntl.ioctl(fd, NOTIF_ID_VALID, struct.pack("=Q", nid))
            os.pwrite(mem, data, args[0])
        finally:
            os.close(mem)
    except OSError as e:
        _send(fd, nid, 0, -(e.errno or errno.EFAULT), 0)
        return True
    _send(fd, nid, 0, 0, 0)
    return True


def _send(fd, nid, val, error, flags):
    import fcntl
    try:
        fcntl.ioctl(fd, NOTIF_SEND, RESP.pack(nid, val, error, flags))
    except OSError:
        pass        # the caller was interrupted or went away: nothing to answer


def info(views):
    """The container's struct sysinfo, from its views (mem_unit 1)."""
    fields = {}
    for line in views.meminfo().decode().splitlines():
        name, _, rest = line.partition(":")
        try:
            fields[name] = int(rest.split()[0]) * 1024
        except (IndexError, ValueError):
            pass
    up = float(views.uptime().split()[0])
    la = views.loadavg().split()
    loads = [int(float(x) * (1 << LOAD_SHIFT)) for x in la[:3]]
    try:
        procs = int(la[3].split(b"/")[1])
    except (IndexError, ValueError):
        procs = 0
    packed = SYSINFO_STRUCT.pack(
        int(up), *loads, fields.get("MemTotal", 0), fields.get("MemFree", 0),
        fields.get("Shmem", 0), fields.get("Buffers", 0), fields.get("SwapTotal", 0),
        fields.get("SwapFree", 0), min(procs, 0xFFFF), 0, 0, 0, 1)
    return packed + bytes(SYSINFO_SIZE - len(packed))

