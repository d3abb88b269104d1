"""hutch features

Print the OCI features document: exactly what this hutch supports."""

import sys


def _seccomp():
    """What libseccomp (which hutch compiles profiles with) offers here."""
    from .. import seccomp
    try:
        seccomp.libseccomp()
    except Exception:   # noqa: BLE001 - reported as not enabled
        return {"enabled": False}
    arches = ["SCMP_ARCH_" + a.upper() for a in (
        "x86", "x86_64", "x32", "arm", "aarch64", "mips", "mips64", "mips64n32",
        "mipsel", "mipsel64", "mipsel64n32", "ppc", "ppc64", "ppc64le", "riscv64",
        "s390", "s390x")
        if seccomp.libseccomp().seccomp_arch_resolve_name(a.encode())]
    return {"enabled": True, "actions": sorted(seccomp.ACTIONS),
            "operators": sorted(seccomp.OPS), "archs": arches,
            "knownFlags": sorted(seccomp.FLAGS), "supportedFlags": sorted(seccomp.FLAGS)}


def _criu():
    """The CRIU checkpoint/restore would use, or why there is none."""
    from .. import criu
    try:
        path = criu.find()
        v = criu.check_version(path)
    except Exception as e:   # noqa: BLE001 - reported as the value
        return f"unavailable: {e}"
    return f"{'.'.join(map(str, v))} at {path}"


def features():
    from .. import OCI_VERSION, capabilities
    from .. import lsm
    from ..rootfs.mounts import _ATTRS, _ATIME, _PROPAGATION, _SB_FLAGS
    opts = sorted(set(_ATTRS) | {"r" + a for a in _ATTRS} | set(_ATIME) |
                  {"atime", "norelatime", "nostrictatime"} | set(_PROPAGATION) |
                  {"r" + p for p in _PROPAGATION} | set(_SB_FLAGS) | {"bind", "rbind"})
    return {
        "ociVersionMin": "1.0.0",
        "ociVersionMax": OCI_VERSION,
        "hooks": ["prestart", "createRuntime", "createContainer", "startContainer",
                  "poststart", "poststop"],
        "mountOptions": opts,
        "linux": {
            "namespaces": ["cgroup", "ipc", "mount", "network", "pid", "time", "user",
                           "uts"],
            "capabilities": list(capabilities.NAMES),
            "cgroup": {"v1": True, "v2": True, "systemd": False, "systemdUser": False,
                       "rdma": False},
            "seccomp": _seccomp(),
            "apparmor": {"enabled": lsm.apparmor_active()},
            "selinux": {"enabled": lsm.selinux_active()},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.opencontainers.runtime-spec.features": "hutch",
                        "org.hutch.criu": _criu()},
    }


def run(g, argv):
    from .. import jsonlite
    from ..errors import HutchError
    if argv:
        raise HutchError('"features" takes no arguments')
    sys.stdout.write(jsonlite.dumps_pretty(features()) + "\n")
    return 0
