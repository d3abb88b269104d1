"""hutch exec [options] ID COMMAND [ARGS...]
hutch exec [options] --process FILE ID

Run a new process in a running container.  It joins every namespace and cgroup of
the container's init and gets the init's confinement (user, env, capabilities,
no_new_privs, rlimits, LSM label) unless the options below change it.  In the
foreground, hutch's exit code is the process's (128+N if signal N killed it).

options:
  --process, -p FILE       the process as JSON (an OCI process object)
  --detach, -d             return once the process runs (and --pid-file is written)
  --pid-file FILE          write the process's pid to FILE
  --tty, -t                give the process a terminal
  --console-socket PATH    send the terminal's master fd to this unix socket
  --cwd DIR                working directory in the container
  --env, -e KEY=value      set an environment variable (repeatable)
  --user, -u USER[:GROUP]  ids or names from the container's /etc/passwd, /etc/group
  --additional-gids, -g G  an extra group id (repeatable)
  --cap, -c CAP            add a capability to every set (repeatable)
  --no-new-privs           set no_new_privs
  --apparmor PROFILE       the AppArmor profile
  --process-label LABEL    the SELinux label
  --preserve-fds N         pass N extra fds (from fd 3) to the process
  --cgroup [CTRL,...:]PATH run in this existing sub-cgroup of the container's
  --ignore-paused          exec even into a paused container (the process waits
                           frozen until the container is resumed)
"""

import errno

from . import args

SPEC = {
    "--process": ("process", "str"), "-p": ("process", "str"),
    "--detach": ("detach", "bool"), "-d": ("detach", "bool"),
    "--pid-file": ("pid_file", "str"), "--tty": ("tty", "bool"), "-t": ("tty", "bool"),
    "--console-socket": ("console_socket", "str"), "--cwd": ("cwd", "str"),
    "--env": ("env", "list"), "-e": ("env", "list"),
    "--user": ("user", "str"), "-u": ("user", "str"),
    "--additional-gids": ("gids", "list"), "-g": ("gids", "list"),
    "--cap": ("cap", "list"), "-c": ("cap", "list"),
    "--no-new-privs": ("nnp", "bool"), "--apparmor": ("apparmor", "str"),
    "--process-label": ("label", "str"), "--preserve-fds": ("preserve_fds", "int"),
    "--cgroup": ("cgroup", "list"), "--ignore-paused": ("ignore_paused", "bool"),
}


def run(g, argv):
    return args.failing_with_255("exec", _run, g, argv)


def _run(g, argv):
    from ..container import exec as E
    from ..container.plan import ProcessPlan
    from ..errors import HutchError
    o, pos = args.parse(argv, SPEC, "exec", stop_at_positional=True)
    if not pos:
        raise args.Usage('"exec" requires at least 1 argument: ID [COMMAND ARGS...]')
    cid, command = pos[0], pos[1:]
    if o["process"] and command:
        raise args.Usage("exec: give either --process FILE or COMMAND, not both")
    if (o["preserve_fds"] or 0) < 0:
        raise HutchError("--preserve-fds must not be negative", errno.EINVAL)
    cdir, info = E.prepare(g.root, cid)     # exec_in releases it once the process runs
    try:
        base = ProcessPlan.from_record(info.process)
        if o["process"]:
            proc = E.from_process_json(o["process"], base)
            source = "process.json"
        else:
            proc, source = base, "config.json"
        if o["cwd"] is not None:
            source = "--cwd"
        E.apply_overrides(
            proc, args=command or None, env=o["env"], cwd=o["cwd"], user=o["user"],
            additional_gids=[x for g_ in o["gids"] for x in g_.split(",") if x],
            caps=o["cap"], no_new_privs=o["nnp"], apparmor=o["apparmor"],
            process_label=o["label"], tty=True if o["tty"] else None)
        from .. import lsm
        lsm.check(proc.apparmor, proc.selinux, "exec")
    except BaseException:
        cdir.unlock()
        raise
    return E.exec_in(cdir, info, proc, E.ExecOptions(
        detach=o["detach"], pid_file=o["pid_file"], console_socket=o["console_socket"],
        preserve_fds=o["preserve_fds"] or 0, ignore_paused=o["ignore_paused"],
        cgroups=o["cgroup"], source=source))
