"""The starter config.json that `hutch spec` writes (the shape runc's has)."""

from .. import OCI_VERSION
from ..capabilities import DEFAULT as DEFAULT_CAPS

MASKED = ["/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
          "/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware",
          "/proc/scsi", "/sys/devices/virtual/powercap"]
READONLY = ["/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger"]


def default_mounts():
    return [
        {"destination": "/proc", "type": "proc", "source": "proc"},
        {"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
         "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]},
        {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
         "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620",
                     "gid=5"]},
        {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
         "options": ["nosuid", "noexec", "nodev", "mode=1777", "size=65536k"]},
        {"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
         "options": ["nosuid", "noexec", "nodev"]},
        {"destination": "/sys", "type": "sysfs", "source": "sysfs",
         "options": ["nosuid", "noexec", "nodev", "ro"]},
        {"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
         "options": ["nosuid", "noexec", "nodev", "relatime", "ro"]},
    ]


def _pure_v2():
    from ..cgroups import hierarchies, layout
    try:
        return layout(hierarchies()) == "v2"
    except OSError:
        return False


def spec(rootless=False, uid=0, gid=0):
    caps = list(DEFAULT_CAPS)
    cfg = {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": True,
            "user": {"uid": 0, "gid": 0},
            "args": ["sh"],
            "env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                    "TERM=xterm"],
            "cwd": "/",
            "capabilities": {k: list(caps) for k in
                             ("bounding", "effective", "permitted")},
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": True},
        "hostname": "hutch",
        "mounts": default_mounts(),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            # a cgroup namespace only where the host is cgroup v2 alone, as runc
            # spec does: on v1 and hybrid hosts engines and tools expect the
            # host's cgroup paths inside (exec's cgroup checks, CRIU's cgroupns)
            "namespaces": [{"type": t} for t in
                           ("pid", "network", "ipc", "uts", "mount") +
                           (("cgroup",) if _pure_v2() else ())],
            "maskedPaths": list(MASKED),
            "readonlyPaths": list(READONLY),
        },
    }
    if rootless:
        lin = cfg["linux"]
        lin.pop("resources")
        lin["namespaces"] = [{"type": t} for t in ("pid", "ipc", "uts", "mount", "user")]
        lin["uidMappings"] = [{"containerID": 0, "hostID": uid, "size": 1}]
        lin["gidMappings"] = [{"containerID": 0, "hostID": gid, "size": 1}]
        mounts = []
        for m in cfg["mounts"]:
            if m["type"] == "cgroup":
                continue
            if m["type"] == "sysfs":
                m = {"destination": "/sys", "type": "none", "source": "/sys",
                     "options": ["rbind", "nosuid", "noexec", "nodev", "ro"]}
            if m["type"] == "devpts":
                m["options"] = [o for o in m["options"] if o != "gid=5"]
            mounts.append(m)
        cfg["mounts"] = mounts
    return cfg
