"""hutch list [-q] [--format table|json]

List containers."""

import sys

from . import args

SPEC = {"--quiet": ("quiet", "bool"), "-q": ("quiet", "bool"),
        "--format": ("format", "str"), "-f": ("format", "str")}


def run(g, argv):
    from ..container.lifecycle import list_all
    from ..errors import HutchError
    o, pos = args.parse(argv, SPEC, "list")
    fmt = o["format"] or "table"
    if fmt not in ("table", "json"):
        raise HutchError(f"invalid format {fmt!r} (table or json)")
    items = list_all(g.root)
    if o["quiet"]:
        sys.stdout.write("".join(i["id"] + "\n" for i in items))
    elif fmt == "json":
        # runc's shape and key order, compact; no containers is null, as in runc
        from .. import jsonlite
        out = []
        for i in items:
            e = {"ociVersion": i.get("ociVersion", ""), "id": i["id"],
                 "pid": i.get("pid", 0), "status": i["status"], "bundle": i["bundle"],
                 "rootfs": i["rootfs"], "created": i["created"]}
            if i.get("annotations"):
                e["annotations"] = i["annotations"]
            e["owner"] = i["owner"] or "root"
            out.append(e)
        sys.stdout.write((jsonlite.dumps(out, compact=True) if out else "null") + "\n")
    else:
        rows = [("ID", "PID", "STATUS", "BUNDLE", "CREATED", "OWNER")]
        for i in items:
            rows.append((i["id"], str(i.get("pid", 0)), i["status"], i["bundle"],
                         i["created"], i["owner"] or "root"))
        # runc's tabwriter: columns at least 12 wide, 3 spaces of padding
        widths = [max(12, max(len(r[c]) for r in rows) + 3) for c in range(6)]
        for r in rows:
            sys.stdout.write("".join(v.ljust(w) for v, w in zip(r, widths)).rstrip()
                             + "\n")
    return 0
