"""hutch logs [options] ID

Print a detached sandbox's log: its stdout, stderr and what it sent to /dev/log
(stream syslog), oldest first, from the rotated files on.

options:
  -f, --follow            go on printing as it writes, across rotations, until
                          it stops
  --tail N                only the last N lines
  --since TIME            only what came after TIME (RFC 3339, or 10s, 5m, 1h30m ago)
  -t, --timestamps        prefix each line with its time (RFC 3339, nanoseconds)
  --stream NAME           stdout, stderr or syslog (repeatable; default all)
  --format FMT            text (default) or json (one object per line)
"""

from . import args

SPEC = {"-f": ("follow", "bool"), "--follow": ("follow", "bool"),
        "--tail": ("tail", "int"), "--since": ("since", "str"),
        "-t": ("timestamps", "bool"), "--timestamps": ("timestamps", "bool"),
        "--stream": ("stream", "list"), "--format": ("format", "str")}


def run(g, argv):
    from ..errors import HutchError
    from ..keeper import client
    o, pos = args.parse(argv, SPEC, "logs")
    cid = args.one_id(pos, "logs")
    fmt = o["format"] or "text"
    if fmt not in ("text", "json"):
        raise HutchError(f"logs: --format is text or json, not {fmt!r}")
    for s in o["stream"]:
        if s not in ("stdout", "stderr", "syslog"):
            raise HutchError(f"logs: --stream is stdout, stderr or syslog, not {s!r}")
    if o["tail"] is not None and o["tail"] < 0:
        raise HutchError("logs: --tail must not be negative")
    return client.logs(g.root, cid, follow=o["follow"], tail=o["tail"],
                       since=o["since"], timestamps=o["timestamps"],
                       streams=o["stream"] or None, fmt=fmt)
