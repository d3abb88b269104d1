"""hutch sandbox [options] -- CMD [ARGS...]

Run CMD in a throw-away sandbox and exit with its status (124 when --timeout
ended it, 137 when the memory limit did, 128+N for signal N).  The sandbox sees
the host's filesystem read-only (or --rootfs), with private /tmp, /proc, /dev and
/run, its own pid, ipc, uts, mount and network namespaces (loopback only), a user
namespace whose root is unprivileged on the host, a seccomp filter and a small
capability set.

options:
  --rootfs DIR            use DIR as the root instead of the host's /
  -v, --volume SRC:DST[:ro]   bind SRC onto DST (read-only with :ro)
  --hostname NAME         the sandbox's hostname (default: sandbox)
  -e, --env KEY=VALUE     set an environment variable
  -w, --workdir DIR       the working directory (default: the current one)
  --name NAME             the container's id, and its name on its networks
                          (default: sandbox-PID-RANDOM)
  --network MODE          none or loopback (loopback only; the default), host,
                          NAME[,NAME...] (hutch networks; `default` always
                          exists), cni:CONFLIST, slirp4netns or pasta (rootless)
  -p, --publish [HOSTIP:]HOSTPORT:CTRPORT[/tcp|/udp]   publish a port (ranges
                          N-M:N-M; IPv6 host addresses in brackets)
  --ip IP, --ip6 IP       its address on its first network
  --dns IP                its resolver (default: the network's DNS responder)
  --add-host NAME:IP      a line of its /etc/hosts
  --network-alias NAME    another name it answers to on its networks
  --bandwidth RATE        limit its traffic each way (10mbit, 500kbit, 1gbit)
  --memory SIZE           memory limit (256m, 1g)
  --memory-swap SIZE      memory plus swap (default: the memory limit; -1: no limit)
  --cpus N                CPU time, in CPUs (0.5, 2)
  --cpuset-cpus LIST      the CPUs it may use (0-1, 3)
  --pids-limit N          at most N processes
  --timeout SECONDS       kill it all after SECONDS (exit 124)
  --user UID[:GID]        the user inside (default 0), or root-host: the host's
                          root, without a user namespace
  --rootless              run as if not root (own ids mapped, no cgroups)
  --seccomp PROFILE       default, unconfined, or an OCI seccomp JSON file
  --cap-add CAP           add a capability (repeatable; ALL)
  --cap-drop CAP          drop a capability (repeatable; ALL)
  --proc virtual|host     /proc and /sys that show the sandbox's own limits
                          (meminfo, cpuinfo, stat, uptime, loadavg, cpu online...),
                          served by a keeper; the default when a limit is set
  -d, --detach            run it in the background and print its id; a keeper
                          process logs its stdout, stderr and /dev/log (hutch
                          logs), records its exit code (hutch wait) and goes
                          with `hutch delete`
  -t, --tty               with -d: give it a terminal, held by its keeper
                          (hutch attach ID; Ctrl-P Ctrl-Q detaches)
  --log-max-size SIZE     rotate the log at SIZE (default 10m)
  --log-max-files N       keep N log files, the rotated ones gzipped (default 5)
"""

from . import args

SPEC = {"--rootfs": ("rootfs", "str"), "-v": ("volume", "list"),
        "--volume": ("volume", "list"), "--hostname": ("hostname", "str"),
        "-e": ("env", "list"), "--env": ("env", "list"), "-w": ("workdir", "str"),
        "--workdir": ("workdir", "str"), "--name": ("name", "str"),
        "--network": ("network", "str"), "--memory": ("memory", "str"),
        "-m": ("memory", "str"), "--memory-swap": ("memory_swap", "str"),
        "--cpus": ("cpus", "str"), "--cpuset-cpus": ("cpuset_cpus", "str"),
        "--pids-limit": ("pids", "int"), "--timeout": ("timeout", "str"),
        "--user": ("user", "str"), "-u": ("user", "str"),
        "--rootless": ("rootless", "bool"), "--seccomp": ("seccomp", "str"),
        "--cap-add": ("cap_add", "list"), "--cap-drop": ("cap_drop", "list"),
        "-d": ("detach", "bool"), "--detach": ("detach", "bool"),
        "--proc": ("proc", "str"), "-t": ("tty", "bool"), "--tty": ("tty", "bool"),
        "--log-max-size": ("log_max_size", "str"), "--log-max-files": ("log_max_files", "int"),
        "-p": ("publish", "list"), "--publish": ("publish", "list"), "--ip": ("ip", "str"),
        "--ip6": ("ip6", "str"), "--dns": ("dns", "list"), "--add-host": ("add_host", "list"),
        "--network-alias": ("alias", "list"), "--bandwidth": ("bandwidth", "str")}


def parse_volume(v):
    from ..errors import HutchError
    parts = v.split(":")
    if len(parts) == 2:
        return parts[0], parts[1], "rw"
    if len(parts) == 3 and parts[2] in ("ro", "rw"):
        return parts[0], parts[1], parts[2]
    raise HutchError(f"invalid volume {v!r}: use SRC:DST or SRC:DST:ro")


def _workdir():
    """The caller's directory, when the sandbox shows the host's copy of it:
    /tmp, /run, /dev and /proc are private inside, so their paths are not."""
    import os
    here = os.getcwd()
    private = ("/tmp", "/run", "/dev", "/proc", "/sys")
    shared = not any(here == p or here.startswith(p + "/") for p in private)
    return here if shared else "/"


def run(g, argv):
    from ..errors import HutchError
    from ..sandbox.config import Settings
    from ..sandbox.foreground import run as run_foreground
    o, cmd = args.parse(argv, SPEC, "sandbox", stop_at_positional=True)
    if not cmd:
        raise HutchError("sandbox: give a command to run, e.g. hutch sandbox -- sh")
    timeout = None
    if o["timeout"] is not None:
        try:
            timeout = float(o["timeout"])
        except ValueError:
            timeout = -1
        if timeout <= 0:
            raise HutchError(f"invalid --timeout {o['timeout']!r}: expected seconds > 0")
    g.check_cgroup_driver()
    rootless = True if o["rootless"] else (None if not g.is_rootless() else True)
    workdir = o["workdir"] or (_workdir() if not o["rootfs"] else "/")
    kw = dict(rootfs=o["rootfs"], volumes=[parse_volume(v) for v in o["volume"]],
              env=o["env"], workdir=workdir, hostname=o["hostname"] or "sandbox",
              memory=o["memory"], memory_swap=o["memory_swap"], cpus=o["cpus"],
              cpuset_cpus=o["cpuset_cpus"], pids=o["pids"],
              network=o["network"] or "none", user=o["user"], rootless=rootless,
              seccomp=o["seccomp"] or "default", cap_add=o["cap_add"],
              cap_drop=o["cap_drop"], proc=o["proc"], publish=o["publish"], ip=o["ip"],
              ip6=o["ip6"], dns=o["dns"], add_hosts=o["add_host"], aliases=o["alias"],
              bandwidth=o["bandwidth"], config_dir=g.config_dir)
    s = Settings(**kw)
    if o["tty"] and not o["detach"]:
        raise HutchError("sandbox: -t is for a detached sandbox (-d), whose keeper "
                         "holds the terminal; in the foreground the command has this "
                         "terminal already")
    if o["detach"]:
        return _detach(g, s, kw, cmd, o, timeout)
    return run_foreground(s, cmd, g.root, o["name"], timeout)


def _detach(g, s, kw, cmd, o, timeout):
    import os
    from ..container.record import default_root, validate_id
    from ..errors import HutchError
    from ..keeper.launch import start
    from ..sandbox.config import parse_size
    if timeout is not None:
        raise HutchError("sandbox: --timeout is for the foreground; a detached "
                         "sandbox runs until `hutch kill` or `hutch delete`")
    cid = o["name"] or f"sandbox-{os.urandom(6).hex()}"
    validate_id(cid)
    log = {}
    if o["log_max_size"] is not None:
        log["max_size"] = parse_size(o["log_max_size"], "--log-max-size")
    if o["log_max_files"] is not None:
        if o["log_max_files"] < 1:
            raise HutchError("--log-max-files must be at least 1")
        log["max_files"] = o["log_max_files"]
    from ..sandbox.detached import keeper_spec
    kw = dict(kw, volumes=[list(v) for v in s.volumes])
    start(keeper_spec(g.root or default_root(), cid, kw, cmd, log, o["tty"],
                      os.environ.get("TERM")))
    print(cid)
    return 0
