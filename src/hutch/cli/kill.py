"""hutch kill [--all] ID [SIGNAL]

Send a signal (default SIGTERM), by name (TERM, SIGTERM) or number, to the
container's init, or with --all (-a) to every process in its cgroup."""

from . import args

SPEC = {"--all": ("all", "bool"), "-a": ("all", "bool")}


_NAMES = {
    "HUP": 1, "INT": 2, "QUIT": 3, "ILL": 4, "TRAP": 5, "ABRT": 6, "IOT": 6, "BUS": 7,
    "FPE": 8, "KILL": 9, "USR1": 10, "SEGV": 11, "USR2": 12, "PIPE": 13, "ALRM": 14,
    "TERM": 15, "STKFLT": 16, "CHLD": 17, "CLD": 17, "CONT": 18, "STOP": 19,
    "TSTP": 20, "TTIN": 21, "TTOU": 22, "URG": 23, "XCPU": 24, "XFSZ": 25,
    "VTALRM": 26, "PROF": 27, "WINCH": 28, "IO": 29, "POLL": 29, "PWR": 30, "SYS": 31,
    "RTMIN": 34, "RTMAX": 64,
}


def parse_signal(s):
    """A signal by number, or by name with or without SIG (RTMIN+n, RTMAX-n too)."""
    from ..errors import HutchError
    n = None
    if s.isdigit():
        n = int(s)
    else:
        name = s.upper()
        if name.startswith("SIG"):
            name = name[3:]
        n = _NAMES.get(name)
        for base, sign in (("RTMIN+", 1), ("RTMAX-", -1)):
            if name.startswith(base) and name[6:].isdigit():
                n = _NAMES[base[:5]] + sign * int(name[6:])
    if n is None or not 0 <= n <= 64:     # 0: does the init still exist?
        import errno
        raise HutchError(f"unknown signal {s!r}", errno.EINVAL)
    return n


def run(g, argv):
    from ..container.lifecycle import kill
    from ..errors import HutchError
    o, pos = args.parse(argv, SPEC, "kill")
    if not 1 <= len(pos) <= 2:
        raise HutchError('"kill" requires 1 or 2 arguments: ID [SIGNAL]')
    sig = parse_signal(pos[1]) if len(pos) == 2 else 15
    kill(g.root, pos[0], sig, o["all"])
    return 0
