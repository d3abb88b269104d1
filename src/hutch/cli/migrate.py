"""hutch migrate [options] ID HOST:PORT

Move a running container to another host, where `hutch receive` listens.  The
bundle and rootfs travel first (unless --shared-storage), then the memory through
CRIU's page server while the container is frozen, then the rest of the images;
the destination restores it, and the source lets go.  Prints the downtime and the
bytes moved.  A failure at any step leaves the container running here.

options:
  --shared-storage      both hosts see the rootfs at the same path: do not copy it
  --tcp-established     move established TCP connections too
  --lazy-pages          post-copy: restore at once, pull memory on demand afterwards
                        (userfaultfd; needs fs.pipe-max-size >= 4 MiB here)
  --json                print the report as JSON
"""

from . import args

SPEC = {"--shared-storage": ("shared", "bool"), "--tcp-established": ("tcp", "bool"),
        "--lazy-pages": ("lazy", "bool"),
        "--json": ("json", "bool")}


def run(g, argv):
    import sys
    from ..migrate.source import migrate
    o, pos = args.parse(argv, SPEC, "migrate")
    if len(pos) != 2:
        raise args.Usage('"migrate" requires 2 arguments: ID HOST:PORT')
    r = migrate(g.root, pos[0], pos[1], o["shared"], o["tcp"], g.criu, out=sys.stdout,
                lazy_pages=o["lazy"])
    if o["json"]:
        from .. import jsonlite
        sys.stdout.write(jsonlite.dumps(r, compact=True) + "\n")
    else:
        moved = r["bytes"] + r.get("page_bytes", 0)
        mem = r.get("page_bytes", 0) / (1 << 20)
        how = (f"{mem:.1f} MiB of memory, pulled after the restore; all there "
               f"{r['pages_pulled_ms'] / 1000:.1f} s after the freeze"
               if "pages_pulled_ms" in r else f"{mem:.1f} MiB of memory")
        sys.stdout.write(f"migrated {r['id']} to {r['destination']}: downtime "
                         f"{r['downtime_ms']:.0f} ms, {moved / (1 << 20):.1f} MiB moved "
                         f"({how})\n")
    return 0
