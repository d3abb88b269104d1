"""hutch ps [--format table|json] ID [PS_OPTIONS...]

List the processes in the container's cgroup.  --format json prints the host pids
as a JSON array (what containerd reads); table runs ps(1) with PS_OPTIONS (default
-ef) and keeps the lines of the container's processes."""

import sys

from . import args

SPEC = {"--format": ("format", "str"), "-f": ("format", "str")}


def run(g, argv):
    from .. import jsonlite
    from ..container.cgroupverbs import pids as container_pids
    from ..errors import HutchError
    o, pos = args.parse(argv, SPEC, "ps", stop_at_positional=True)
    if not pos:
        raise args.Usage('"ps" requires at least 1 argument (the container id)')
    fmt = o["format"] or "table"
    if fmt not in ("table", "json"):
        raise args.Usage(f"invalid format option {fmt!r} (table or json)")
    pids = container_pids(g.root, pos[0])
    if fmt == "json":
        # runc's encoding: compact, and null for none
        sys.stdout.write((jsonlite.dumps(pids, compact=True) if pids else "null") +
                         "\n")
        return 0
    import subprocess
    try:
        out = subprocess.run(["ps"] + (pos[1:] or ["-ef"]), capture_output=True,
                             text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        raise HutchError(f"ps: run ps(1): {e}") from None
    lines = out.splitlines()
    if not lines:
        return 0
    header = lines[0].split()
    if "PID" not in header:
        raise HutchError("ps: the ps(1) output has no PID column")
    col = header.index("PID")
    want = set(pids)
    sys.stdout.write(lines[0] + "\n")
    for line in lines[1:]:
        f = line.split()
        if len(f) > col and f[col].isdigit() and int(f[col]) in want:
            sys.stdout.write(line + "\n")
    sys.stdout.flush()
    return 0
