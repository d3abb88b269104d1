"""The confinement a sandbox for untrusted code gets by default: a seccomp
profile and a small capability set.

The profile is a deny list over an allow-by-default filter (OCI's
``linux.seccomp`` shape, compiled by :mod:`hutch.seccomp` like any config's).
It refuses, with EPERM, what container runtimes refuse because it reaches the
kernel's least-hardened surfaces or the host: the kernel keyring, BPF, perf,
module loading, kexec, mounts and the new mount API, new user namespaces (by
``unshare``, ``clone``; ``clone3``, whose flags a filter cannot read, answers
ENOSYS so that libc falls back to ``clone``), ptrace and cross-process memory
access, userfaultfd, the clock, swap, reboot, accounting, quotas, the kernel
log and handle-based opens.  ``setns`` stays allowed: joining needs capabilities in the target's owning user
namespace, which a sandbox never has.

The sandbox's user namespace already keeps most of these from the host; the
filter also keeps hostile code from the kernel code paths behind them.
"""

import copy

# CLONE_NEWUSER: refused in unshare(2)'s flags and clone(2)'s (both arg 0 on
# x86-64 and arm64, the architectures hutch runs on)
CLONE_NEWUSER = 0x10000000

DENIED = (
    # the keyring, BPF, perf, kernel modules and kexec
    "add_key", "keyctl", "request_key", "bpf", "perf_event_open",
    "init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
    # mounts, old and new API, and the root
    "mount", "umount", "umount2", "pivot_root", "fsopen", "fsconfig",
    "fsmount", "fspick", "open_tree", "move_mount", "mount_setattr",
    # other processes' memory and ptrace
    "ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
    "userfaultfd",
    # the host's clock, swap, power, accounting, quotas, log and handles
    "settimeofday", "clock_settime", "clock_settime64", "clock_adjtime",
    "clock_adjtime64", "adjtimex", "stime", "swapon", "swapoff", "reboot", "acct",
    "quotactl", "quotactl_fd", "syslog", "open_by_handle_at", "name_to_handle_at",
    "lookup_dcookie", "nfsservctl", "uselib", "vhangup", "iopl", "ioperm",
    "fanotify_init",
)

_PROFILE = None


def _profile():
    rules = [{"names": list(DENIED), "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    rules.append({"names": ["unshare"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                  "args": [{"index": 0, "value": CLONE_NEWUSER,
                            "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]})
    rules.append({"names": ["clone"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1,
                  "args": [{"index": 0, "value": CLONE_NEWUSER,
                            "valueTwo": CLONE_NEWUSER, "op": "SCMP_CMP_MASKED_EQ"}]})
    rules.append({"names": ["clone3"], "action": "SCMP_ACT_ERRNO", "errnoRet": 38})
    return {"defaultAction": "SCMP_ACT_ALLOW", "syscalls": rules}


def default_seccomp():
    """The default profile, a fresh copy (OCI ``linux.seccomp``)."""
    global _PROFILE
    if _PROFILE is None:
        _PROFILE = _profile()
    return copy.deepcopy(_PROFILE)


# Docker's default set without CAP_NET_RAW and CAP_MKNOD (raw sockets and device
# nodes are not what untrusted code needs); inside the sandbox's user namespace
# they act on what the namespace owns only
DEFAULT_CAPS = ("CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FOWNER", "CAP_FSETID",
                "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP",
                "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_AUDIT_WRITE")


def capabilities(add=(), drop=()):
    """The capability set with ``add`` and ``drop`` applied (names with or
    without the CAP_ prefix, any case; "ALL" in drop empties the set first)."""
    from ..errors import HutchError
    from .. import capabilities as C
    import errno

    def norm(c):
        name = c.upper()
        if name == "ALL":
            return name
        if not name.startswith("CAP_"):
            name = "CAP_" + name
        if C.number(name) is None:
            raise HutchError(f"unknown capability {c!r}", errno.EINVAL)
        return name
    drop = [norm(c) for c in drop]
    add = [norm(c) for c in add]
    caps = [] if "ALL" in drop else [c for c in DEFAULT_CAPS if c not in drop]
    if "ALL" in add:
        add = list(C.NAMES)
    for c in add:
        if c not in caps:
            caps.append(c)
    return caps
