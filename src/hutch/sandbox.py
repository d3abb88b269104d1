"""The front door: run a command in a throw-away container, no image needed.

By default the container's root is the host's own filesystem, read-only, with
private /tmp, /proc, /dev and /run, and new pid, ipc, uts, mount and network
namespaces (loopback only).  Usable as a library::

    from hutch.sandbox import Sandbox
    code = Sandbox(["echo", "hi"], binds=[("/data", "/data", True)]).run()
"""

import os

from .spec.config import parse_config
from .spec.defaults import MASKED, READONLY, default_mounts

ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


class Sandbox:
    def __init__(self, args, rootfs=None, binds=(), hostname="sandbox", env=(),
                 cwd=None, root=None, rootless=None):
        self.args = list(args)
        if rootless is None:
            rootless = os.geteuid() != 0
        self.rootless = rootless
        self.rootfs = os.path.abspath(rootfs) if rootfs else "/"
        self.binds = list(binds)        # (source, destination, readonly)
        self.hostname = hostname
        self.env = list(env)
        self.cwd = cwd
        self.root = root

    def config(self):
        env = [ENV_PATH, "TERM=" + os.environ.get("TERM", "xterm")]
        keys = {e.split("=", 1)[0] for e in self.env}
        env = [e for e in env if e.split("=", 1)[0] not in keys] + self.env
        cwd = self.cwd
        if cwd is None:
            # the caller's directory, when the sandbox shows the host's copy of it:
            # /tmp, /run, /dev and /proc are private inside, so their paths are not
            here = os.getcwd()
            private = ("/tmp", "/run", "/dev", "/proc", "/sys")
            shared = not any(here == p or here.startswith(p + "/") for p in private)
            cwd = here if self.rootfs == "/" and shared else "/"
        # the spec's default mounts (no cgroup mount), plus private /tmp and /run
        mounts = [m for m in default_mounts() if m["type"] != "cgroup"] + [
            {"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=1777"]},
            {"destination": "/run", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "mode=755"]},
        ]
        for src, dst, ro in self.binds:
            mounts.append({"destination": dst, "type": "bind",
                           "source": os.path.abspath(src),
                           "options": ["rbind", "nosuid", "nodev"] +
                                      (["ro"] if ro else [])})
        caps = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE", "CAP_CHOWN",
                "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID", "CAP_SETUID",
                "CAP_SETGID", "CAP_SETPCAP", "CAP_NET_RAW", "CAP_SYS_CHROOT"]
        cfg = {
            "ociVersion": "1.2.0",
            "process": {"terminal": False, "user": {"uid": 0, "gid": 0},
                        "args": self.args, "env": env, "cwd": cwd,
                        "capabilities": {k: caps for k in
                                         ("bounding", "effective", "permitted")},
                        "noNewPrivileges": True},
            "root": {"path": self.rootfs, "readonly": True},
            "hostname": self.hostname,
            "mounts": mounts,
            "linux": {
                "namespaces": [{"type": t} for t in
                               ("pid", "network", "ipc", "uts", "mount", "cgroup")],
                "maskedPaths": MASKED, "readonlyPaths": READONLY,
            },
        }
        if self.rootless:
            # the caller's own uid and gid are root inside; no cgroups
            lin = cfg["linux"]
            lin["namespaces"] = [n for n in lin["namespaces"] if n["type"] != "cgroup"]
            lin["namespaces"].append({"type": "user"})
            lin["uidMappings"] = [{"containerID": 0, "hostID": os.geteuid(), "size": 1}]
            lin["gidMappings"] = [{"containerID": 0, "hostID": os.getegid(), "size": 1}]
            for m in cfg["mounts"]:
                if m["type"] == "devpts":      # gid 5 is not mapped
                    m["options"] = [o for o in m["options"] if o != "gid=5"]
        return cfg

    def run(self):
        """Runs the command; returns its exit status (128+N for signal N)."""
        from .container.create import CreateOptions
        from .container.record import default_root
        from .container.run import run
        root = self.root or default_root()
        cid = f"sandbox-{os.getpid()}-{os.urandom(3).hex()}"
        cfg = parse_config(self.config(), "sandbox")
        return run(root, cid, "/", CreateOptions(rootless=self.rootless), cfg=cfg)
