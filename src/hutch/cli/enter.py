"""hutch enter --pid PID [options] [--] COMMAND [ARGS...]

Run a command in the namespaces of any process, like nsenter, with hutch's
confinement choices.  By default it joins every namespace in which PID differs
from hutch, keeps hutch's environment, and runs as root with full capabilities.
The exit code is the command's (128+N if signal N killed it).

options:
  --pid PID                the process whose namespaces to join (required)
  --ns TYPE[,TYPE...]      only these: pid, network, mount, ipc, uts, user, cgroup,
                           time (repeatable)
  --cgroups                also join PID's cgroups
  --cwd DIR                working directory (default: the root of PID's mounts)
  --env, -e KEY=value      set an environment variable (repeatable)
  --user, -u USER[:GROUP]  ids, or names from the target's /etc/passwd, /etc/group
  --cap, -c CAP            keep only these capabilities (repeatable)
  --no-new-privs           set no_new_privs
  --detach, -d             return once the command runs (see --pid-file)
  --pid-file FILE          write the command's pid to FILE
"""

from . import args

SPEC = {
    "--pid": ("pid", "int"), "--ns": ("ns", "list"), "--cgroups": ("cgroups", "bool"),
    "--cwd": ("cwd", "str"), "--env": ("env", "list"), "-e": ("env", "list"),
    "--user": ("user", "str"), "-u": ("user", "str"), "--cap": ("cap", "list"),
    "-c": ("cap", "list"), "--no-new-privs": ("nnp", "bool"),
    "--detach": ("detach", "bool"), "-d": ("detach", "bool"),
    "--pid-file": ("pid_file", "str"),
}


def run(g, argv):
    return args.failing_with_255("enter", _run, g, argv)


def _run(g, argv):
    import os
    from ..container import exec as E
    from ..container.plan import ProcessPlan
    o, pos = args.parse(argv, SPEC, "enter", stop_at_positional=True)
    if o["pid"] is None:
        raise args.Usage("enter: --pid PID is required")
    if not pos:
        raise args.Usage("enter: no command given")
    proc = ProcessPlan(env=[f"{k}={v}" for k, v in os.environ.items()], cwd=None)
    if o["cap"]:
        proc.capabilities = {k: [] for k in E.CAP_SETS}
    E.apply_overrides(proc, args=pos, env=o["env"], cwd=o["cwd"], user=o["user"],
                      caps=o["cap"], no_new_privs=o["nnp"])
    ns = [t for x in o["ns"] for t in x.split(",") if t] or None
    return E.enter(o["pid"], proc, ns, o["cgroups"], o["detach"], o["pid_file"])
