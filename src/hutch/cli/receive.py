"""hutch receive [options]

Wait for a container that `hutch migrate` sends from another host, restore it
here, and exit (or keep serving with --serve).

options:
  --listen HOST:PORT     where to listen (default 0.0.0.0:7391)
  --bundle-dir DIR       where received bundles go (default /var/lib/hutch/bundles)
  --cgroup-parent PATH   put received containers under PATH/ID in the cgroup tree
  --serve                keep serving after the first migration
"""

from . import args

SPEC = {"--listen": ("listen", "str"), "--bundle-dir": ("bundle_dir", "str"),
        "--cgroup-parent": ("cgroup_parent", "str"), "--serve": ("serve", "bool")}


def run(g, argv):
    from ..migrate.destination import receive
    import sys
    o, pos = args.parse(argv, SPEC, "receive")
    if pos:
        raise args.Usage('"receive" takes no arguments')
    g.check_cgroup_driver()
    receive(g.root, o["listen"] or "0.0.0.0:7391",
            o["bundle_dir"] or "/var/lib/hutch/bundles", o["cgroup_parent"],
            not o["serve"], g.criu, log=lambda m: sys.stderr.write(f"hutch: {m}\n"))
    return 0
