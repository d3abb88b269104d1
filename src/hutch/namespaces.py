"""Namespaces: which to create, which to join, in what order, and the per-namespace
settings (id maps, time offsets, sysctls).

Order, as the kernel needs it:
  1. join the user namespace given by path (it owns the others), then every other
     namespace given by path (the fds were opened before anything changed);
  2. create the user namespace; the parent writes its uid/gid maps;
  3. create every other new namespace in one unshare().  pid and time apply to
     children, so the container's init is the next fork.
"""

import errno
import os

from .errors import HutchError
from .spec.config import NAMESPACES

JOIN_ORDER = ("user", "mount", "pid", "network", "ipc", "uts", "cgroup", "time")

# sysctl prefixes and the namespace that must be private for each
_IPC_SYSCTLS = ("kernel.msgmax", "kernel.msgmnb", "kernel.msgmni", "kernel.sem",
                "kernel.shmall", "kernel.shmmax", "kernel.shmmni",
                "kernel.shm_rmid_forced")


def sysctl_namespace(key):
    """The namespace a sysctl key belongs to, or None if it is not namespaced."""
    k = key.replace("/", ".")
    if k in _IPC_SYSCTLS or k.startswith("fs.mqueue."):
        return "ipc"
    if k.startswith("net."):
        return "network"
    if k in ("kernel.hostname", "kernel.domainname"):
        return "uts"
    return None


def check_sysctls(sysctl, namespaces):
    for key in sysctl:
        ns = sysctl_namespace(key)
        if ns is None:
            raise HutchError(f"sysctl {key!r} is not namespaced, so a container may not "
                             "set it", errno.EPERM)
        if ns not in namespaces:
            raise HutchError(f"sysctl {key!r} needs a private {ns} namespace, and the "
                             f"container shares the host's", errno.EPERM)
        if ".." in key.replace(".", "/").split("/"):
            raise HutchError(f"sysctl {key!r} is not a valid key")


def write_sysctls(sysctl):
    for key, val in sysctl.items():
        path = "/proc/sys/" + key.replace(".", "/")
        try:
            with open(path, "w") as f:
                f.write(val)
        except OSError as e:
            raise HutchError(f"set sysctl {key}={val}: {e.strerror}", e.errno) from None


def open_join_fds(namespaces):
    """Opens every namespace given by path.  Returns [(type, fd)] in join order."""
    out = []
    try:
        for t in JOIN_ORDER:
            path = namespaces.get(t)
            if path:
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
                except OSError as e:
                    raise HutchError(f"open {t} namespace {path}: {e.strerror}",
                                     e.errno) from None
                out.append((t, fd))
                _check_ns_type(t, fd, path)
    except BaseException:
        for _, fd in out:
            os.close(fd)
        raise
    return out


def _check_ns_type(t, fd, path):
    from .linux import kernel as K
    try:
        got = K.kernel().ioctl(fd, K.NS_GET_NSTYPE, what=f"the type of {path}")
    except OSError:
        raise HutchError(f"{path} is not a namespace file", errno.EINVAL) from None
    if got != NAMESPACES[t]:
        names = {v: k for k, v in NAMESPACES.items()}
        raise HutchError(f"{path} is not a {t} namespace (it is a "
                         f"{names.get(got, hex(got))} namespace)", errno.EINVAL)


def id_map_text(mappings):
    return "".join(f"{c} {h} {s}\n" for c, h, s in mappings)


def write_id_maps(pid, uid_mappings, gid_mappings, rootless=False):
    """Written by the parent for the child that created the user namespace.

    Root writes any map.  Rootless, an unprivileged user may map only its own
    uid and gid (one id each, and only after denying setgroups); anything more
    goes through newuidmap/newgidmap (the uidmap package), which map the ranges
    /etc/subuid and /etc/subgid grant the user."""
    if rootless:
        _rootless_map(pid, "uid", uid_mappings, os.geteuid())
        _rootless_map(pid, "gid", gid_mappings, os.getegid())
        return
    try:
        with open(f"/proc/{pid}/uid_map", "w") as f:
            f.write(id_map_text(uid_mappings))
        with open(f"/proc/{pid}/gid_map", "w") as f:
            f.write(id_map_text(gid_mappings))
    except OSError as e:
        raise HutchError(f"write the user namespace id maps: {e.strerror}",
                         e.errno) from None


def _rootless_map(pid, kind, mappings, own):
    if [tuple(m[1:]) for m in mappings] == [(own, 1)]:
        try:
            if kind == "gid":
                with open(f"/proc/{pid}/setgroups", "w") as f:
                    f.write("deny")
            with open(f"/proc/{pid}/{kind}_map", "w") as f:
                f.write(id_map_text(mappings))
        except OSError as e:
            raise HutchError(f"write the user namespace {kind} map: {e.strerror}",
                             e.errno) from None
        return
    import shutil
    import subprocess
    tool = shutil.which(f"new{kind}map")
    if tool is None:
        raise HutchError(f"rootless: linux.{kind}Mappings maps more than your own "
                         f"{kind} ({own}), which needs new{kind}map from the uidmap "
                         f"package; install it, or map only {own}", errno.ENOENT)
    argv = [tool, str(pid)] + [str(x) for m in mappings for x in m]
    p = subprocess.run(argv, capture_output=True, text=True)
    if p.returncode != 0:
        why = (p.stderr.strip().splitlines() or ["failed"])[-1]
        raise HutchError(f"rootless: new{kind}map refused linux.{kind}Mappings "
                         f"({id_map_text(mappings).strip()!r}): {why} (see /etc/sub"
                         f"{kind} for the ranges granted to you)", errno.EPERM)


def time_offsets_text(offsets):
    return "".join(f"{clock} {s} {ns}\n" for clock, (s, ns) in offsets.items())


def new_flags(namespaces, exclude_user=True):
    f = 0
    for t, path in namespaces.items():
        if not path and not (exclude_user and t == "user"):
            f |= NAMESPACES[t]
    return f


IFF_UP = 0x1


def loopback_up(k):
    import _socket
    import struct

    from .linux import kernel as K
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", k.ioctl(s.fileno(), K.SIOCGIFFLAGS, req,
                                                 what="get the flags of lo"))[1]
        k.ioctl(s.fileno(), K.SIOCSIFFLAGS,
                struct.pack("16sH14x", b"lo", flags | IFF_UP), what="set the flags of lo")
    except OSError as e:
        raise HutchError(f"bring up the loopback interface: {os.strerror(e.errno)}",
                         e.errno) from None
    finally:
        s.close()
