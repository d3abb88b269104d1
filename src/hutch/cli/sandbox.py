"""hutch sandbox [options] -- CMD [ARGS...]

Run CMD in a throw-away container and exit with its status.  The container sees the
host's filesystem read-only (or --rootfs), with private /tmp, /proc, /dev and /run,
and its own pid, ipc, uts, mount and network namespaces (loopback only).

options:
  --rootfs DIR            use DIR as the root instead of the host's /
  -v, --volume SRC:DST[:ro]   bind SRC onto DST (read-only with :ro)
  --hostname NAME         the container's hostname (default: sandbox)
  -e, --env KEY=VALUE     set an environment variable
  -w, --workdir DIR       the working directory (default: the current one)
"""

from . import args

SPEC = {"--rootfs": ("rootfs", "str"), "-v": ("volume", "list"),
        "--volume": ("volume", "list"), "--hostname": ("hostname", "str"),
        "-e": ("env", "list"), "--env": ("env", "list"), "-w": ("workdir", "str"),
        "--workdir": ("workdir", "str")}


def parse_volume(v):
    from ..errors import HutchError
    parts = v.split(":")
    if len(parts) == 2:
        return parts[0], parts[1], False
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        return parts[0], parts[1], parts[2] == "ro"
    raise HutchError(f"invalid volume {v!r}: use SRC:DST or SRC:DST:ro")


def run(g, argv):
    from ..errors import HutchError
    from ..sandbox import Sandbox
    o, cmd = args.parse(argv, SPEC, "sandbox", stop_at_positional=True)
    if not cmd:
        raise HutchError("sandbox: give a command to run, e.g. hutch sandbox -- sh")
    for e in o["env"]:
        if "=" not in e:
            raise HutchError(f"invalid --env {e!r}: use KEY=VALUE")
    g.check_cgroup_driver()
    sb = Sandbox(cmd, rootfs=o["rootfs"], binds=[parse_volume(v) for v in o["volume"]],
                 hostname=o["hostname"] or "sandbox", env=o["env"], cwd=o["workdir"],
                 root=g.root, rootless=g.is_rootless())
    return sb.run()
