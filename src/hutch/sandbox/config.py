"""What a sandbox is made of: its settings (the library's and `hutch sandbox`'s
arguments, checked once) and the OCI config built from them.

A sandbox is an ordinary hutch container.  Its root is the host's filesystem
read-only (or ``rootfs``), with private /tmp, /run, /dev, /proc and /sys.  The
host's filesystem is shown as a bind of each of its top-level entries onto a
small skeleton directory (:func:`host_view`), not as a bind of the host's whole
mount tree: the host's own /proc, /sys, /dev, /run and /tmp, with everything
mounted below them, are then not in the sandbox at all, not even hidden under
its own (and CRIU can save the sandbox's mounts).  It has new
pid, ipc, uts, mount, network (loopback only) and cgroup namespaces, and by
default a user namespace too:

* a caller that is not root gets its own uid and gid as root inside (rootless);
* root gets an unprivileged mapping: the sandbox's ids 0-65535 are host ids
  from :data:`ID_BASE` on, which own nothing on the host, unless
  ``user="root-host"`` asks for the host's root explicitly.

Its PID 1 is catatonit (Debian's ``catatonit``), bound read-only at
:data:`INIT_PATH`: a minimal reaper.  No hutch or Python code runs inside.
"""

import copy
import errno
import os

from ..errors import HutchError
from ..spec.defaults import MASKED, READONLY, default_mounts

ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
INIT_CANDIDATES = ("/usr/bin/catatonit", "/usr/libexec/podman/catatonit")
INIT_PATH = "/run/hutch-init"
ID_BASE = 0x70000000        # root's sandboxes: ids 0-65535 are host 1879048192+
ID_SIZE = 65536
OWN_DIRS = ("dev", "proc", "run", "sys", "tmp")   # the sandbox's own, never the host's


def parse_size(value, what):
    """``256m``, ``1g``, ``512k``, ``1048576`` (bytes, binary units) -> int."""
    if isinstance(value, int) and not isinstance(value, bool):
        n = value
    else:
        text = str(value).strip().lower()
        for suffix in ("ib", "b"):
            if text.endswith(suffix) and text[:-len(suffix)][-1:].isalpha():
                text = text[:-len(suffix)]
                break
        mult = 1
        if text[-1:] in "kmgt" and text[-1:]:
            mult = 1 << (10 * ("kmgt".index(text[-1]) + 1))
            text = text[:-1]
        if text.endswith("b"):
            text = text[:-1]
        try:
            n = int(float(text) * mult)
        except ValueError:
            raise HutchError(f"invalid {what} {value!r}: expected a size such as "
                             "256m, 1g or 1048576", errno.EINVAL) from None
    if n <= 0:
        raise HutchError(f"invalid {what} {value!r}: must be positive", errno.EINVAL)
    return n


def find_init():
    for path in INIT_CANDIDATES:
        if os.access(path, os.X_OK):
            return path
    raise HutchError("a sandbox needs catatonit as its minimal init, and none was "
                     f"found ({', '.join(INIT_CANDIDATES)}): install Debian's "
                     "catatonit package (setup.sh does)", errno.ENOENT)


def _as_list(v):
    return [v] if isinstance(v, str) else list(v or ())


class Settings:
    """A sandbox's arguments, checked.  ``volumes``: (src, dst[, "ro"|"rw"]);
    ``env``: a dict or KEY=VALUE strings."""

    def __init__(self, rootfs=None, volumes=(), env=None, workdir="/",
                 hostname="sandbox", memory=None, memory_swap=None, cpus=None,
                 cpuset_cpus=None, pids=None, network="none", publish=(), user=None,
                 rootless=None, seccomp="default", cap_add=(), cap_drop=(),
                 proc=None, dns=(), add_hosts=(), ip=None, ip6=None, aliases=(),
                 bandwidth=None, config_dir=None):
        self.euid = os.geteuid()
        self.rootless = (self.euid != 0) if rootless is None else bool(rootless)
        self.rootfs = os.path.abspath(rootfs) if rootfs else "/"
        if not os.path.isdir(self.rootfs):
            raise HutchError(f"rootfs {self.rootfs}: not a directory", errno.ENOTDIR)
        self.volumes = [_volume(v) for v in volumes]
        if env is None:
            env = {}
        if isinstance(env, dict):
            env = [f"{k}={v}" for k, v in env.items()]
        for e in env:
            if "=" not in e or e.startswith("="):
                raise HutchError(f"invalid env {e!r}: expected KEY=VALUE", errno.EINVAL)
        self.env = list(env)
        if not workdir.startswith("/"):
            raise HutchError(f"invalid workdir {workdir!r}: not an absolute path",
                             errno.EINVAL)
        self.workdir = workdir
        self.hostname = hostname
        self.memory = parse_size(memory, "memory") if memory is not None else None
        if memory_swap is not None and str(memory_swap) == "-1":
            self.memory_swap = -1
        elif memory_swap is not None:
            self.memory_swap = parse_size(memory_swap, "memory_swap")
            if self.memory is None or self.memory_swap < self.memory:
                raise HutchError("memory_swap is memory plus swap: it needs memory, "
                                 "and must be at least as large", errno.EINVAL)
        else:
            self.memory_swap = None
        if cpus is not None:
            try:
                cpus = float(cpus)
            except (TypeError, ValueError):
                cpus = -1
            if cpus <= 0:
                raise HutchError("invalid cpus: expected a positive number such as "
                                 "0.5 or 2", errno.EINVAL)
        self.cpus = cpus
        self.cpuset_cpus = str(cpuset_cpus) if cpuset_cpus is not None else None
        if pids is not None and (not isinstance(pids, int) or pids <= 0):
            raise HutchError(f"invalid pids {pids!r}: expected a positive integer",
                             errno.EINVAL)
        self.pids = pids
        self.network = network or "none"
        self._network(publish, dns, add_hosts, ip, ip6, aliases, bandwidth, config_dir)
        self.user = user
        self.uid = self.gid = 0
        self.userns = True
        if user == "root-host":
            if self.euid != 0:
                raise HutchError("user='root-host' needs a caller that is root",
                                 errno.EPERM)
            self.userns = False
        elif user is not None:
            self.uid, self.gid = _parse_user(user)
            if self.rootless and (self.uid, self.gid) != (0, 0):
                raise HutchError(f"user {user!r}: a rootless sandbox maps only the "
                                 "caller's own ids, which are 0 inside", errno.EINVAL)
            if max(self.uid, self.gid) >= ID_SIZE:
                raise HutchError(f"user {user!r}: the sandbox maps ids 0-{ID_SIZE - 1}",
                                 errno.ERANGE)
        self.seccomp = _seccomp(seccomp)
        # the /proc and /sys views of its own limits: asked for, or with a limit
        if proc not in (None, "virtual", "host"):
            raise HutchError(f"invalid proc {proc!r}: 'virtual' or 'host'", errno.EINVAL)
        if proc == "virtual" and self.rootless:
            raise HutchError("proc='virtual': the views show the sandbox's own cgroup, "
                             "and a rootless sandbox has none here (the cgroup tree is "
                             f"not delegated to uid {self.euid})", errno.EOPNOTSUPP)
        self.views = proc == "virtual" or (proc is None and not self.rootless and
                                           self.wants_limits())
        from .profile import capabilities
        self.caps = capabilities(cap_add, cap_drop)
        self.init = find_init()

    # --- the ids ------------------------------------------------------------------
    def host_ids(self):
        """The host uid and gid of the sandbox's root."""
        if not self.userns:
            return 0, 0
        if self.rootless:
            return os.geteuid(), os.getegid()
        return ID_BASE, ID_BASE

    def process_host_ids(self):
        """The host uid and gid the sandbox's processes run as (file ownership)."""
        u, g = self.host_ids()
        return u + self.uid, g + self.gid

    def resources(self):
        r = {}
        if self.memory is not None:
            mem = {"limit": self.memory}
            # no swap beyond the limit unless asked: an OOM is then an OOM
            mem["swap"] = self.memory if self.memory_swap is None else self.memory_swap
            r["memory"] = mem
        cpu = {}
        if self.cpus is not None:
            cpu["period"] = 100000
            cpu["quota"] = max(1000, int(self.cpus * 100000))
        if self.cpuset_cpus is not None:
            cpu["cpus"] = self.cpuset_cpus
        if cpu:
            r["cpu"] = cpu
        if self.pids is not None:
            r["pids"] = {"limit": self.pids}
        return r

    def wants_limits(self):
        return bool(self.resources())

    # --- the OCI config -----------------------------------------------------------
    def _network(self, publish, dns, add_hosts, ip, ip6, aliases, bandwidth,
                 config_dir):
        """The network settings, parsed (hutch.network.spec): a bridge network
        (NAME[,NAME]), cni:CONFLIST, slirp4netns or pasta gets an attachment."""
        self.net_mode, self.net_names = self.network, []
        self.publish, self.dns, self.add_hosts, self.aliases = [], [], [], []
        self.ip = self.ip6 = self.bandwidth = None
        self.config_dir = config_dir
        if self.network in ("none", "loopback", "host") and not any(
                (publish, dns, add_hosts, ip, ip6, aliases, bandwidth)):
            return      # nothing to parse: no networking code is imported
        from ..network import spec as S
        self.net_mode, self.net_names = S.parse_networks(self.network)
        self.publish = S.parse_publish(_as_list(publish))
        self.dns = S.parse_dns(_as_list(dns))
        self.add_hosts = S.parse_add_host(_as_list(add_hosts))
        self.aliases = _as_list(aliases)
        for a in self.aliases:
            S.check_name(a)
        self.ip = S.parse_dns([ip])[0] if ip else None
        self.ip6 = S.parse_dns([ip6])[0] if ip6 else None
        self.bandwidth = S.parse_rate(str(bandwidth)) if bandwidth else None
        mode = self.net_mode
        if mode in ("none", "loopback", "host"):
            extra = [n for n, v in (("publish", self.publish), ("dns", self.dns),
                                    ("add_hosts", self.add_hosts), ("ip", self.ip),
                                    ("ip6", self.ip6), ("bandwidth", self.bandwidth),
                                    ("aliases", self.aliases)) if v]
            if extra:
                why = "the sandbox's ports are the host's" if mode == "host" else \
                    "it has only loopback"
                raise HutchError(f"{', '.join(extra)}: need a network (--network NAME, "
                                 f"cni:CONFLIST, slirp4netns or pasta); with network "
                                 f"{mode!r} {why}", errno.EINVAL)
        if mode == "bridge" and self.rootless:
            raise HutchError(f"network {self.network!r}: bridge networks need root (a "
                             "veth on a host bridge); a rootless sandbox uses "
                             "slirp4netns or pasta", errno.EPERM)
        if mode in S.ROOTLESS and (self.ip or self.ip6 or self.aliases):
            raise HutchError(f"ip, ip6 and aliases are for hutch networks, not "
                             f"{mode}", errno.EINVAL)
        if mode == "cni" and (self.ip or self.ip6 or self.bandwidth):
            raise HutchError("ip, ip6 and bandwidth of a cni: network are its "
                             "conflist's business (host-local ranges, the bandwidth "
                             "plugin)", errno.EINVAL)

    def network_attachment(self, cid):
        """The Network attachment the sandbox needs, or None (none, loopback, host)."""
        if self.net_mode in ("none", "loopback", "host"):
            return None
        from ..network.attach import Network
        return Network(**self.network_kwargs(cid))

    def network_kwargs(self, cid):
        return dict(mode=self.net_mode, names=self.net_names, config_dir=self.config_dir,
                    dns_name=cid, aliases=self.aliases, ip=self.ip, ip6=self.ip6,
                    dns=self.dns, add_hosts=self.add_hosts, publish=self.publish,
                    bandwidth=self.bandwidth, hostname=self.hostname)

    def config(self, args, state_root, cwd=None, extra_env=(), extra_mounts=(),
               cid=None):
        """The OCI config of a sandbox whose init runs ``args`` (``state_root``:
        hutch's --root, where the skeleton of the host's view is kept)."""
        env = [ENV_PATH, "HOME=/root" if self.uid == 0 else "HOME=/",
               "HOSTNAME=" + self.hostname]
        for extra in (self.env, list(extra_env)):
            keys = {e.split("=", 1)[0] for e in extra}
            env = [e for e in env if e.split("=", 1)[0] not in keys] + extra
        mounts = [m for m in default_mounts() if m["type"] != "cgroup"] + [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=755"]},
            {"destination": INIT_PATH, "type": "bind", "source": self.init,
             "options": ["bind", "ro", "nosuid", "nodev"]},
        ]
        root_dir = self.rootfs
        if self.rootfs == "/":
            # a cache shared by all sandboxes, kept where any sandbox's root can
            # reach it (not the --root, which may be in a private directory)
            from ..container.record import default_root
            root_dir, view = host_view(default_root())
            mounts = view + mounts
        elif self.userns:
            _check_reachable(root_dir, *self.host_ids())
        points = list(self.volumes)
        if self.rootfs != "/" and self.net_mode not in ("none", "loopback", "host"):
            # the network's own /etc/resolv.conf and /etc/hosts go over these
            # (made here: the sandbox's root may not write the rootfs's /etc)
            points += [("/dev/null", d, True) for d in ("/etc/resolv.conf",
                                                        "/etc/hosts")]
        make_mountpoints(root_dir, points, self.rootfs == "/")
        for src, dst, ro in self.volumes:
            mounts.append({"destination": dst, "type": "bind", "source": src,
                           "options": ["rbind", "nosuid", "nodev"] +
                                      (["ro"] if ro else [])})
        mounts.extend(extra_mounts)
        caps = list(self.caps)
        namespaces = ["pid", "ipc", "uts", "mount"]
        if self.network != "host":
            namespaces.append("network")
        if not self.rootless:
            namespaces.append("cgroup")
        if self.userns:
            namespaces.append("user")
        cfg = {
            "ociVersion": "1.2.0",
            "process": {"terminal": False, "user": {"uid": self.uid, "gid": self.gid},
                        "args": list(args), "env": env, "cwd": cwd or self.workdir,
                        "capabilities": {k: caps for k in
                                         ("bounding", "effective", "permitted")},
                        "noNewPrivileges": True},
            "root": {"path": root_dir, "readonly": True},
            "hostname": self.hostname,
            "mounts": mounts,
            "linux": {
                # nothing propagates in from the host (and CRIU can then save
                # the sandbox's mounts: no master outside it)
                "rootfsPropagation": "rprivate",
                "namespaces": [{"type": t} for t in namespaces],
                "maskedPaths": MASKED, "readonlyPaths": READONLY,
                "resources": self.resources(),
            },
        }
        lin = cfg["linux"]
        if self.seccomp is not None:
            lin["seccomp"] = copy.deepcopy(self.seccomp)
        if self.views and cid is not None:
            # sysinfo(2) answered by the keeper from the same views (its listener)
            from ..keeper.attach import keeper_dir
            from ..keeper.sysinfo import add_rule, allow_all_but_sysinfo
            from ..keeper.viewsvc import listener_path
            listener = listener_path(keeper_dir(os.path.join(state_root, cid)))
            if "seccomp" in lin:
                add_rule(lin["seccomp"], listener)
            else:
                lin["seccomp"] = allow_all_but_sysinfo(listener)
        if self.userns:
            u, g = self.host_ids()
            size = 1 if self.rootless else ID_SIZE
            lin["uidMappings"] = [{"containerID": 0, "hostID": u, "size": size}]
            lin["gidMappings"] = [{"containerID": 0, "hostID": g, "size": size}]
            if self.rootless:
                for m in cfg["mounts"]:
                    if m["type"] == "devpts":      # gid 5 is not mapped
                        m["options"] = [o for o in m["options"] if o != "gid=5"]
        if self.network == "host":
            # the host's network: its /sys/class/net is not the sandbox's business
            cfg["mounts"] = [m for m in cfg["mounts"] if m["destination"] != "/sys"] \
                if self.userns else cfg["mounts"]
            if self.userns:
                cfg["mounts"].append({"destination": "/sys", "type": "bind",
                                      "source": "/sys",
                                      "options": ["rbind", "ro", "nosuid", "nodev",
                                                  "noexec"]})
        return cfg


def host_view(state_root):
    """The skeleton directory that stands for the host's root, and the bind
    mounts (read-only, recursive) of the host's top-level entries onto it.  The
    skeleton holds an empty directory (or file) for each, the top-level
    symlinks (``bin -> usr/bin``) as they are, and the sandbox's own
    directories.  It is shared by the sandboxes of one state root and made
    again when the host's top level changes (its name is a digest of it)."""
    import stat
    import zlib
    entries = []
    for name in sorted(os.listdir("/")):
        if name in OWN_DIRS:
            continue
        try:
            st = os.lstat("/" + name)
        except FileNotFoundError:
            continue
        if stat.S_ISLNK(st.st_mode):
            entries.append(("l", name, os.readlink("/" + name)))
        elif stat.S_ISDIR(st.st_mode):
            entries.append(("d", name, ""))
        elif stat.S_ISREG(st.st_mode):
            entries.append(("f", name, ""))
    digest = zlib.crc32(repr(entries).encode())
    path = os.path.join(state_root, f".sandbox-root-{digest:08x}")
    if not os.path.isdir(path):
        _make_skeleton(state_root, path, entries)
    mounts = [{"destination": "/" + name, "type": "bind", "source": "/" + name,
               "options": ["rbind", "ro", "nosuid", "nodev"]}
              for kind, name, _ in entries if kind in "df"]
    return path, mounts


def _make_skeleton(state_root, path, entries):
    os.makedirs(state_root, 0o711, exist_ok=True)
    tmp = f"{path}.{os.getpid()}.{os.urandom(3).hex()}"
    os.mkdir(tmp, 0o755)
    try:
        for name in OWN_DIRS:
            os.mkdir(os.path.join(tmp, name), 0o755)
        for kind, name, target in entries:
            where = os.path.join(tmp, name)
            if kind == "d":
                os.mkdir(where, 0o755)
            elif kind == "f":
                os.close(os.open(where, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
            else:
                os.symlink(target, where)
        os.rename(tmp, path)
    except OSError as e:
        from ..linux.fs import rmtree
        rmtree(tmp)
        if e.errno in (errno.EEXIST, errno.ENOTEMPTY) and os.path.isdir(path):
            return      # another sandbox made it meanwhile
        raise HutchError(f"make the sandbox's root {path}: {e.strerror}",
                         e.errno) from None


def make_mountpoints(root_dir, volumes, host_root):
    """The volumes' mount points, made on the host side before the sandbox
    exists: inside, its root (the host's, or ``rootfs``'s owner) may not write
    the root directory.  In the skeleton of the host's view only a new top-level
    name can be made; below it is the host's own filesystem, read-only."""
    from ..linux.kernel import kernel
    from ..rootfs.paths import mkdir_all
    k = kernel()
    rootfd = os.open(root_dir, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for src, dst, _ro in volumes:
            parts = [p for p in dst.split("/") if p]
            if not parts or parts[0] in ("proc", "sys", "dev"):
                raise HutchError(f"volume destination {dst}: not over the sandbox's "
                                 "/, /proc, /sys or /dev", errno.EINVAL)
            if host_root and len(parts) > 1 and parts[0] not in OWN_DIRS and \
                    not os.path.exists(dst):
                raise HutchError(f"volume destination {dst}: the sandbox shows the "
                                 f"host's /{parts[0]} read-only, and {dst} does not "
                                 "exist there; choose an existing directory or a new "
                                 "top-level one", errno.ENOENT)
            if parts[0] in OWN_DIRS or (host_root and len(parts) > 1):
                continue    # made inside the sandbox's own tmpfs, or exists
            is_dir = os.path.isdir(src)
            try:
                if is_dir:
                    os.close(mkdir_all(k, rootfd, dst))
                else:
                    parent = mkdir_all(k, rootfd, os.path.dirname(dst))
                    try:
                        os.close(os.open(parts[-1], os.O_CREAT | os.O_WRONLY |
                                         os.O_NOFOLLOW | os.O_CLOEXEC, 0o644,
                                         dir_fd=parent))
                    finally:
                        os.close(parent)
            except OSError as e:
                if e.errno in (errno.EEXIST, errno.EISDIR):
                    continue
                raise HutchError(f"make the mount point of volume {dst}: "
                                 f"{e.strerror}", e.errno) from None
    finally:
        os.close(rootfd)


def _check_reachable(path, uid, gid):
    """The sandbox's root binds its rootfs from inside its user namespace: as
    host uid ``uid``, which needs to search every directory on the way."""
    import stat
    d = path
    while True:
        st = os.stat(d)
        if st.st_uid == uid:
            ok = st.st_mode & stat.S_IXUSR
        elif st.st_gid == gid:
            ok = st.st_mode & stat.S_IXGRP
        else:
            ok = st.st_mode & stat.S_IXOTH
        if not ok:
            raise HutchError(f"rootfs {path}: the sandbox's root (host uid {uid}) "
                             f"cannot reach it: {d} is mode {st.st_mode & 0o7777:o}; "
                             "make it searchable (chmod o+x) or use user='root-host'",
                             errno.EACCES)
        if d == "/":
            return
        d = os.path.dirname(d)


def _volume(v):
    if isinstance(v, str):
        parts = v.split(":")
    else:
        parts = list(v)
    if len(parts) == 2:
        src, dst, mode = parts[0], parts[1], "rw"
    elif len(parts) == 3:
        src, dst, mode = parts
        if mode is True or mode is False:
            mode = "ro" if mode else "rw"
    else:
        raise HutchError(f"invalid volume {v!r}: use (SRC, DST) or (SRC, DST, 'ro')",
                         errno.EINVAL)
    if mode not in ("ro", "rw"):
        raise HutchError(f"invalid volume {v!r}: the mode is 'ro' or 'rw'", errno.EINVAL)
    if not str(dst).startswith("/"):
        raise HutchError(f"invalid volume {v!r}: the destination must be absolute",
                         errno.EINVAL)
    src = os.path.abspath(src)
    if not os.path.exists(src):
        raise HutchError(f"volume source {src}: no such file or directory", errno.ENOENT)
    return src, dst, mode == "ro"


def _parse_user(user):
    u, _, g = str(user).partition(":")
    try:
        uid = int(u)
        gid = int(g) if g else uid
    except ValueError:
        raise HutchError(f"invalid user {user!r}: expected UID[:GID] (numbers) or "
                         "'root-host'", errno.EINVAL) from None
    if uid < 0 or gid < 0:
        raise HutchError(f"invalid user {user!r}: ids are not negative", errno.EINVAL)
    return uid, gid


def _seccomp(value):
    if value in (None, "unconfined"):
        return None
    if value == "default":
        from .profile import default_seccomp
        return default_seccomp()
    if isinstance(value, dict):
        return value
    from .. import jsonlite
    try:
        with open(value, "rb") as f:
            return jsonlite.loads(f.read())
    except OSError as e:
        raise HutchError(f"seccomp profile {value}: {e.strerror}", e.errno) from None
    except ValueError as e:
        raise HutchError(f"seccomp profile {value}: invalid JSON: {e}",
                         errno.EINVAL) from None
