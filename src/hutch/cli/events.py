"""hutch events [--stats] [--interval DURATION] ID

With --stats, print the container's resource statistics once, as one JSON object
in runc's shape.  Otherwise stream JSON events, one per line, until the container
stops: {"type":"oom"} when a process is OOM-killed, and {"type":"stats"} every
--interval (default 5s; "0" turns stats off)."""

import errno
import sys

from . import args

SPEC = {"--stats": ("stats", "bool"), "--interval": ("interval", "str")}


def parse_duration(s):
    """Go-style durations: 5s, 500ms, 1m, 1m30s, or plain seconds."""
    from ..errors import HutchError
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1, "m": 60, "h": 3600}
    try:
        return float(s)
    except ValueError:
        pass
    total, num, i = 0.0, "", 0
    while i < len(s):
        c = s[i]
        if c.isdigit() or c == ".":
            num += c
            i += 1
            continue
        unit = next((u for u in ("ns", "us", "µs", "ms", "s", "m", "h") if s.startswith(u, i)),
                    None)
        if unit is None or not num:
            raise HutchError(f"invalid duration {s!r}", errno.EINVAL)
        total += float(num) * units[unit]
        num, i = "", i + len(unit)
    if num:
        raise HutchError(f"invalid duration {s!r}: missing unit", errno.EINVAL)
    return total


def run(g, argv):
    from .. import jsonlite
    from ..container import cgroupverbs as container
    o, pos = args.parse(argv, SPEC, "events")
    cid = args.one_id(pos, "events")
    if o["stats"]:
        sys.stdout.write(jsonlite.dumps(container.stats(g.root, cid), compact=True) +
                         "\n")
        return 0
    interval = parse_duration(o["interval"] or "5s")

    def emit(ev):
        sys.stdout.write(jsonlite.dumps(ev, compact=True) + "\n")
        sys.stdout.flush()
    container.events(g.root, cid, interval, emit, stats_every=interval > 0)
    return 0
