"""hutch create [options] ID

Create a container from a bundle.  It returns once the container's init exists,
the pid file is written and the init is waiting for `hutch start`.

options:
  --bundle, -b DIR        the bundle (default: the current directory)
  --pid-file FILE         write the init's pid to FILE
  --console-socket PATH   send the terminal's master fd to this unix socket
  --no-pivot              use MS_MOVE + chroot instead of pivot_root
  --no-new-keyring        keep the caller's session keyring
  --preserve-fds N        pass N extra fds (from fd 3) to the container
"""

from . import args

SPEC = {
    "--bundle": ("bundle", "str"), "-b": ("bundle", "str"),
    "--pid-file": ("pid_file", "str"), "--console-socket": ("console_socket", "str"),
    "--no-pivot": ("no_pivot", "bool"), "--no-new-keyring": ("no_new_keyring", "bool"),
    "--preserve-fds": ("preserve_fds", "int"),
}


def keeper_hook(cfg, o, root, cid):
    """The annotations that ask for a keeper (docs/keeper.md) or a network
    (docs/networks.md): only a config that has them imports either."""
    ann = cfg.annotations or {}
    if "org.hutch.proc" in ann or "org.hutch.syslog" in ann:
        from ..keeper.oci import apply
        apply(cfg, o, root, cid)
    if "org.hutch.network" in ann or "org.hutch.publish" in ann:
        from ..network.oci import apply
        apply(cfg, o, root, cid)


def common(g, o):
    from ..errors import HutchError
    g.check_cgroup_driver()
    if (o["preserve_fds"] or 0) < 0:
        raise HutchError("--preserve-fds must not be negative")
    from ..container.create import CreateOptions
    return CreateOptions(console_socket=o["console_socket"], pid_file=o["pid_file"],
                         no_pivot=o["no_pivot"], no_new_keyring=o["no_new_keyring"],
                         preserve_fds=o["preserve_fds"] or 0, rootless=g.is_rootless(),
                         config_hooks=(keeper_hook,))


def run(g, argv):
    from ..container.create import create
    o, pos = args.parse(argv, SPEC, "create")
    cid = args.one_id(pos, "create")
    create(g.root, cid, o["bundle"] or ".", common(g, o))
    return 0
