"""CRIU's host side: what hutch prepares around a dump or a restore.

- the cgroup yard (every cgroup hierarchy bound into a small tmpfs, so that CRIU
  mounts none itself);
- the network lock decision;
- the external mounts' keys as CRIU names them, the masked files, the cgroup
  binds, and the mount points a restore needs in the root;
- the container's CRIU configuration file, and the checks of host settings.
"""

import errno
import os

from ..errors import HutchError
from ..linux.fs import unmount_dir

DESCRIPTORS = "descriptors.json"
NET_KEY = "extRootNetNS"
PIPE_MAX_FOR_LAZY = 4 << 20


def resolved_in(root, dest):
    """``dest`` as the mount really sits in the container whose root is
    ``root``: a destination through a symlink (/conf -> /real/conf) is mounted on
    its target, and CRIU names a mount by where it is.  Resolved with openat2
    inside the root; ``dest`` itself if it cannot be."""
    from ..linux import kernel as K
    try:
        rfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return dest
    try:
        fd = K.kernel().openat2(rfd, dest.lstrip("/") or ".", os.O_PATH | os.O_CLOEXEC,
                                0, K.RESOLVE_IN_ROOT | K.RESOLVE_NO_MAGICLINKS)
    except OSError:
        os.close(rfd)
        return dest
    try:
        top = os.readlink(f"/proc/self/fd/{rfd}").rstrip("/")
        where = os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return dest
    finally:
        os.close(fd)
        os.close(rfd)
    if where == top:
        return "/"
    return where[len(top):] if where.startswith(top + "/") else dest


def criu_config(annotations, opts):
    """A container-specific CRIU configuration file, as runc takes it: the
    org.criu.config annotation names one (its settings override hutch's), an
    empty value means none; without it, /etc/criu/hutch.conf if present."""
    conf = (annotations or {}).get("org.criu.config")
    if conf is None and os.path.exists("/etc/criu/hutch.conf"):
        conf = "/etc/criu/hutch.conf"
    if conf:
        opts["config_file"] = conf


def cgroup_binds(info, paths):
    """Without a cgroup namespace, a cgroup mount is a set of binds of the
    container's cgroup directories (see rootfs.setup): [(destination, source)]."""
    if info.cgroupns or not paths:
        return []
    out = []
    for dest in info.cgroup_mounts:
        if set(paths) <= {"unified"}:
            out.append((dest, paths["unified"]))
            continue
        for key, path in sorted(paths.items()):
            name = key[5:] if key.startswith("name=") else key
            out.append((f"{dest}/{name}", path))
    return out


def open_dir(path, what, create=False):
    if create:
        os.makedirs(path, 0o700, exist_ok=True)
    try:
        return os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise HutchError(f"{what} {path}: {e.strerror}", e.errno) from None


def lazy_pages_possible():
    try:
        with open("/proc/sys/fs/pipe-max-size") as f:
            size = int(f.read())
    except (OSError, ValueError):
        return
    if size < PIPE_MAX_FOR_LAZY:
        raise HutchError(f"--lazy-pages: CRIU moves lazy pages through pipes of 4 MiB, "
                         f"but fs.pipe-max-size is {size} here; run `sysctl -w "
                         f"fs.pipe-max-size={PIPE_MAX_FOR_LAZY}` first (hutch does not "
                         "change host settings by itself)", errno.EOPNOTSUPP)


def open_ns(path):
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as e:
        raise HutchError(f"restore: network namespace {path}: {e.strerror}",
                         e.errno) from None


def inode(path):
    try:
        return os.stat(path).st_ino
    except OSError as e:
        raise HutchError(f"namespace {path}: {e.strerror}", e.errno) from None


# devices the kernel creates in every network namespace once their module is
# loaded; they reach nothing until configured over another interface
_FALLBACK_DEVS = {"lo", "sit0", "tunl0", "ip6tnl0", "gre0", "gretap0", "erspan0",
                  "ip6gre0", "ip6erspan0", "ip_vti0", "ip6_vti0"}


def lock_for(own_netns, joined, interfaces):
    """The decision of :func:`network_lock`, from what it reads."""
    if joined or not own_netns:
        return None
    return "skip" if set(interfaces) <= _FALLBACK_DEVS else None


def network_lock(pid, join):
    """The network lock for dumping ``pid``'s container: "skip" when it has a
    network namespace of its own with no interface that reaches outside it (only
    loopback), since then no packet can arrive while it is frozen and nothing
    needs dropping; else None (CRIU's default, firewall rules that drop every
    packet until the restore is done).  Locking and unlocking an isolated
    namespace costs ~70 ms of restore time here (nftables commits), on the
    downtime of every migration.  The restore follows what the dump recorded."""
    try:
        own = os.stat(f"/proc/{pid}/ns/net").st_ino != os.stat("/proc/self/ns/net").st_ino
        with open(f"/proc/{pid}/net/dev") as f:
            names = {line.split(":", 1)[0].strip() for line in f if ":" in line}
    except OSError:
        return None
    return lock_for(own, "network" in join, names)


YARD = "criu-cgyard"


def cgroup_yard(where, proc_cgroup="/proc/self/cgroup"):
    """Makes ``where`` CRIU's cgroup yard: a small tmpfs in which each cgroup
    hierarchy of this host is bound under the name CRIU gives it ("cpu,cpuacct",
    "systemd" for name=systemd, "unified" for v2).  With it CRIU mounts no
    hierarchy itself: a cgroup2 mount waits for an RCU grace period here (the
    kernel re-applies the root's flags under the threadgroup rwsem), 7-15 ms of
    every dump and every restore; binds cost microseconds.  Returns ``where``, or
    None (and leaves nothing) when a hierarchy is not mounted whole, as inside a
    container whose cgroupfs shows only a subtree, or when mounting fails."""
    from ..cgroups import hierarchies
    from ..linux import kernel as K
    with open(proc_cgroup) as f:
        binds = yard_binds(hierarchies(), f.read())
    if binds is None:
        return None
    k = K.kernel()
    try:
        os.mkdir(where, 0o700)
    except OSError:
        return None
    try:
        k.mount("hutch-cgyard", where, "tmpfs", K.MS_NOSUID | K.MS_NODEV | K.MS_NOEXEC,
                "size=64k,mode=0700", what="mount a cgroup yard for CRIU")
        for name, source in binds.items():
            os.mkdir(os.path.join(where, name), 0o700)
            k.mount(source, os.path.join(where, name), None, K.MS_BIND,
                    what=f"bind {source} into CRIU's cgroup yard")
    except OSError:
        remove_yard(where)
        return None
    return where


def yard_binds(hs, proc_cgroup):
    """{yard name: mount point} for hierarchies ``hs`` and the text of
    /proc/self/cgroup, or None if a hierarchy is mounted only in part or one of
    ours is not mounted at all."""
    mounted = {}
    for h in hs:
        if h.root != "/":
            return None
        mounted[frozenset() if h.version == 2 else frozenset(h.controllers)] = \
            h.mountpoint
    binds = {}
    for line in proc_cgroup.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        ctrls = parts[1]
        key = frozenset(ctrls.split(",")) if ctrls else frozenset()
        if key not in mounted:
            return None
        name = ctrls[5:] if ctrls.startswith("name=") else (ctrls or "unified")
        binds[name] = mounted[key]
    return binds


def remove_yard(where):
    """Detaches a yard, its binds and whatever CRIU mounted in it, in one go."""
    unmount_dir(where)


def masked_files(pid, masked):
    out = []
    for p in masked:
        try:
            st = os.stat(f"/proc/{pid}/root{p}")
        except OSError:
            continue
        if not os.path.isdir(f"/proc/{pid}/root{p}") and (st.st_rdev == os.makedev(1, 3)):
            out.append(p)
    return out


def make_mountpoints(k, root, cfg, bundle, binds):
    """Mount points for bind mounts that are not under a tmpfs (CRIU restores a
    tmpfs with its content), created inside the root without leaving it.  A
    mount inside a bind mount needs its mount point in that bind's source (the
    container made it there; it may be gone since): made there too, resolved
    inside the source, as runc does."""
    def source(m):
        return os.path.join(bundle, m.source or "")
    binds = [(dest.rstrip("/"), src) for dest, src in binds if os.path.isdir(src)]
    tmpfs = [m.destination for m in cfg.mounts if m.type == "tmpfs"]
    rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for m in cfg.mounts:
            if any(m.destination.startswith(t + "/") for t in tmpfs) or \
                    m.type == "cgroup":
                continue
            is_file = m.type in ("bind", None) and m.source and \
                os.path.isfile(source(m))
            _mountpoint(k, rootfd, m.destination, is_file)
            for bdest, bsrc in binds:
                if m.destination.startswith(bdest + "/"):
                    sfd = os.open(bsrc, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                    try:
                        _mountpoint(k, sfd, m.destination[len(bdest):], is_file)
                    finally:
                        os.close(sfd)
    finally:
        os.close(rootfd)


def _mountpoint(k, topfd, path, is_file):
    """A directory, or an empty file, at ``path`` under ``topfd`` (resolved in
    it, never leaving it)."""
    from ..rootfs.paths import mkdir_all
    if not is_file:
        os.close(mkdir_all(k, topfd, path))
        return
    fd = mkdir_all(k, topfd, os.path.dirname(path))
    try:
        os.close(os.open(os.path.basename(path), os.O_CREAT | os.O_WRONLY |
                         os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=fd))
    except FileExistsError:
        pass
    finally:
        os.close(fd)


def cg_root(mgr):
    """CRIU's cg_root option: each hierarchy's container cgroup, relative to
    its mount."""
    out = []
    for key, path in mgr.paths.items():
        mp = (mgr.mountpoints or {}).get(key)
        if mp and path.startswith(mp):
            path = path[len(mp):] or "/"
        out.append({"ctrl": "" if key == "unified" else key, "path": path})
    return out
