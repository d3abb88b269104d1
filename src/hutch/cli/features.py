"""hutch features

Print the OCI features document: exactly what this hutch supports."""

import sys


def features():
    from .. import OCI_VERSION, capabilities
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
            "seccomp": {"enabled": False},
            "apparmor": {"enabled": False},
            "selinux": {"enabled": False},
            "intelRdt": {"enabled": False},
            "mountExtensions": {"idmap": {"enabled": False}},
        },
        "annotations": {"org.opencontainers.runtime-spec.features": "hutch"},
    }


def run(g, argv):
    from .. import jsonlite
    from ..errors import HutchError
    if argv:
        raise HutchError('"features" takes no arguments')
    sys.stdout.write(jsonlite.dumps_pretty(features()) + "\n")
    return 0
