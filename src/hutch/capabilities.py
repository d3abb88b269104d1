"""Linux capabilities: names, numbers, and applying the five sets.

What happens when the host cannot grant a capability (this host lacks
CAP_SYS_RESOURCE in every set, the bounding set included): hutch fails the
create with ``capability CAP_X is not available to hutch`` instead of silently
giving the container less than it asked for.  This matches runc, which also fails.
"""

NAMES = (
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_DAC_READ_SEARCH", "CAP_FOWNER", "CAP_FSETID",
    "CAP_KILL", "CAP_SETGID", "CAP_SETUID", "CAP_SETPCAP", "CAP_LINUX_IMMUTABLE",
    "CAP_NET_BIND_SERVICE", "CAP_NET_BROADCAST", "CAP_NET_ADMIN", "CAP_NET_RAW",
    "CAP_IPC_LOCK", "CAP_IPC_OWNER", "CAP_SYS_MODULE", "CAP_SYS_RAWIO", "CAP_SYS_CHROOT",
    "CAP_SYS_PTRACE", "CAP_SYS_PACCT", "CAP_SYS_ADMIN", "CAP_SYS_BOOT", "CAP_SYS_NICE",
    "CAP_SYS_RESOURCE", "CAP_SYS_TIME", "CAP_SYS_TTY_CONFIG", "CAP_MKNOD", "CAP_LEASE",
    "CAP_AUDIT_WRITE", "CAP_AUDIT_CONTROL", "CAP_SETFCAP", "CAP_MAC_OVERRIDE",
    "CAP_MAC_ADMIN", "CAP_SYSLOG", "CAP_WAKE_ALARM", "CAP_BLOCK_SUSPEND",
    "CAP_AUDIT_READ", "CAP_PERFMON", "CAP_BPF", "CAP_CHECKPOINT_RESTORE",
)
_NUM = {n: i for i, n in enumerate(NAMES)}

# what `hutch spec` and the sandbox grant: the runtime-spec example's set
DEFAULT = ["CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE"]


def number(name):
    """CAP_X (or X, any case) -> its number, or None if unknown."""
    n = name.upper()
    if not n.startswith("CAP_"):
        n = "CAP_" + n
    return _NUM.get(n)


def mask(names):
    m = 0
    for n in names:
        m |= 1 << number(n)
    return m


def last_cap():
    try:
        with open("/proc/sys/kernel/cap_last_cap") as f:
            return int(f.read())
    except OSError:
        return len(NAMES) - 1


def names_of(m):
    return [NAMES[i] if i < len(NAMES) else f"CAP_{i}" for i in range(64) if m >> i & 1]


def check_available(caps, available_bounding):
    """Raises if the config asks for a capability outside hutch's own bounding set."""
    import errno

    from .errors import HutchError
    want = 0
    for names in caps.values():
        want |= mask(names)
    missing = want & ~available_bounding
    if missing:
        raise HutchError("capability " + ", ".join(names_of(missing)) +
                         " is not available to hutch on this host (it is missing from "
                         "hutch's own bounding set), so the container cannot be "
                         "granted it", errno.EPERM)


def current_bounding():
    """Reads hutch's own bounding set."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapBnd:"):
                return int(line.split()[1], 16)
    return (1 << (last_cap() + 1)) - 1


def drop_bounding(k, keep_mask):
    """Drops every capability not in keep_mask from the bounding set."""
    for i in range(last_cap() + 1):
        if not keep_mask >> i & 1:
            k.prctl(24, i, what=f"drop {NAMES[i] if i < len(NAMES) else i} "
                    "from the bounding set")


def unraisable_ambient(caps):
    """The ambient capabilities the kernel will refuse to raise: those not in
    both the permitted and the inheritable set.  runc's default config asks for
    three of them with no inheritable set; runc and crun skip them silently, and
    so does hutch (see :func:`apply_sets`; the caller logs them at debug level)."""
    if not caps:
        return []
    both = mask(caps.get("permitted", ())) & mask(caps.get("inheritable", ()))
    return [n for n in caps.get("ambient", ()) if not both >> number(n) & 1]


def apply_sets(k, caps):
    """Sets effective, permitted and inheritable, then raises the ambient ones.

    Called after the switch to the container user (with keep-caps set).  An
    ambient capability the kernel refuses to raise (not permitted and
    inheritable, or SECBIT_NO_CAP_AMBIENT_RAISE) is skipped, as runc does: the
    process gets every ambient capability that can be raised, and no error."""
    eff, perm, inh = mask(caps.get("effective", ())), mask(caps.get("permitted", ())), \
        mask(caps.get("inheritable", ()))
    k.capset(eff, perm, inh)
    for n in caps.get("ambient", ()):
        if (perm & inh) >> number(n) & 1:
            try:
                k.prctl(47, 2, number(n), what=f"raise ambient capability {n}")
            except OSError:
                pass
