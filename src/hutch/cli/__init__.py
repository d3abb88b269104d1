"""hutch's command line, runc-compatible.  One module per verb; each module has
``run(g, argv) -> exit code`` and does only argument handling before calling the
library.  This file parses the global flags and dispatches."""

import os
import sys

from ..errors import HutchError

VERBS = ("create", "start", "run", "state", "kill", "delete", "list", "spec",
         "features", "sandbox", "pause", "resume", "ps", "update", "events", "exec",
         "enter", "checkpoint", "restore", "migrate", "receive", "wait", "logs",
         "attach", "network")
ALIASES = {"ls": "list", "rm": "delete"}
GUARDED = {"create": "create", "run": "create", "sandbox": "create", "exec": "enter",
           "enter": "enter"}

GLOBAL = {
    "--root": ("root", "str"), "--log": ("log", "str"),
    "--log-format": ("log_format", "str"), "--debug": ("debug", "bool"),
    "--systemd-cgroup": ("systemd_cgroup", "bool"), "--criu": ("criu", "str"),
    "--rootless": ("rootless", "str"), "--version": ("version", "bool"),
    "--config-dir": ("config_dir", "str"),
    "-v": ("version", "bool"), "--help": ("help", "bool"), "-h": ("help", "bool"),
}

USAGE = """hutch: a Linux container runtime (runc-compatible)

usage: hutch [global options] COMMAND [options] [arguments]

commands:
  create    create a container from a bundle (it waits for start)
  start     run the user process of a created container
  run       create and start a container
  state     print the state of a container
  kill      send a signal to a container's init (or --all processes)
  delete    delete a container and everything hutch made for it
  list      list containers
  pause     freeze every process of a container
  resume    thaw a paused container
  ps        list the processes in a container's cgroup
  update    change a running container's resource limits
  events    print stats (--stats) or stream OOM and stats events
  exec      run a new process in a running container
  checkpoint  save a running container with CRIU
  restore   restore a container from a checkpoint
  migrate   move a running container to a host where `hutch receive` listens
  receive   wait for a migrated container and restore it here
  enter     run a command in the namespaces of any process (like nsenter)
  spec      write a starter config.json
  features  print the OCI features hutch supports
  sandbox   run a command in a throw-away container (no image needed); -d detaches
  wait      wait until a detached sandbox stops; exit with its exit code
  logs      print a detached sandbox's output and syslog
  attach    connect the terminal to a detached sandbox (Ctrl-P Ctrl-Q detaches)
  network   create, list, inspect and remove container networks

global options:
  --root DIR          state directory (default /run/hutch, or $XDG_RUNTIME_DIR/hutch)
  --log FILE          also write log lines to FILE
  --log-format FMT    text or json
  --debug             more output
  --systemd-cgroup    manage cgroups through systemd
  --criu PATH         the criu binary to use
  --rootless VALUE    true, false or auto
  --config-dir DIR    hutch's configuration: networks, CNI conflists (default
                      /etc/hutch, or $HUTCH_CONFIG_DIR)
  --version, -v       print the version
"""


class Globals:
    def __init__(self, opts):
        from ..container.record import default_root
        self.root = os.path.abspath(opts["root"] or default_root())
        self.log = opts["log"]
        self.log_format = opts["log_format"] or "text"
        self.debug = opts["debug"]
        self.systemd_cgroup = opts["systemd_cgroup"]
        self.criu = opts["criu"]
        self.rootless = opts["rootless"] or "auto"
        self.config_dir = os.path.abspath(opts["config_dir"]) if opts["config_dir"] \
            else None       # the default is the network store's (network/store.py)
        if self.config_dir:
            # for the keepers and attachments this command starts, too
            os.environ["HUTCH_CONFIG_DIR"] = self.config_dir

    def is_rootless(self):
        from ..container.create import is_rootless
        return is_rootless(self.rootless)

    def check_cgroup_driver(self):
        if self.systemd_cgroup:
            import errno
            if not os.path.isdir("/run/systemd/system"):
                raise HutchError("--systemd-cgroup: systemd is not running as PID 1 on "
                                 "this host, so there is no systemd to manage cgroups; "
                                 "omit the flag to use hutch's cgroupfs driver", errno.EOPNOTSUPP)
            raise HutchError("--systemd-cgroup: the systemd cgroup driver is not "
                             "implemented yet; omit the flag to use hutch's cgroupfs "
                             "driver", errno.EOPNOTSUPP)


def version_text():
    from .. import OCI_VERSION, __version__
    return f"hutch version {__version__}\ncommit: {_commit()}\nspec: {OCI_VERSION}\n"


def _commit():
    here = os.path.dirname(os.path.abspath(__file__))
    for up in ("../../..", "../../../.."):
        head = os.path.join(here, up, ".git", "HEAD")
        try:
            with open(head) as f:
                ref = f.read().strip()
        except OSError:
            continue
        if ref.startswith("ref: "):
            try:
                with open(os.path.join(here, up, ".git", ref[5:])) as f:
                    return f.read().strip()[:12]
            except OSError:
                return "unknown"
        return ref[:12]
    return "release"


def main(argv=None):
    from . import args
    if argv is None:
        argv = sys.argv[1:]
    rest = []
    try:
        opts, rest = args.parse(argv, GLOBAL, "hutch", stop_at_positional=True)
        g = Globals(opts)
        if g.log_format not in ("text", "json"):
            raise args.Usage(f"invalid log format {g.log_format!r} (text or json)")
        if g.rootless not in ("true", "false", "auto"):
            raise args.Usage(f"invalid --rootless value {g.rootless!r} "
                             "(true, false or auto)")
        if g.log or g.log_format != "text" or g.debug:
            # the defaults need no import: a verb that logs nothing loads no logger
            from .. import log
            log.configure(g.log, g.log_format, g.debug)
        if opts["version"]:
            sys.stdout.write(version_text())
            return 0
        if opts["help"] or not rest:
            sys.stdout.write(USAGE)
            return 0 if opts["help"] else 1
        verb = ALIASES.get(rest[0], rest[0])
        if verb not in VERBS:
            raise args.Usage(f"unknown command {rest[0]!r}; see hutch --help")
        detached_sandbox = verb == "sandbox" and any(
            a in ("-d", "--detach") for a in rest[1:rest.index("--")
                                                    if "--" in rest else None])
        if verb in GUARDED and not detached_sandbox:
            # start the process that will enter the container now, so that its
            # interpreter boots while this one reads the config (process/helper.py);
            # not for `sandbox -d`, whose keeper makes the container
            from ..process import helper
            helper.prestart(GUARDED[verb])
        mod = __import__(f"hutch.cli.{verb}", fromlist=("run",))
        if "--help" in rest[1:2] or "-h" in rest[1:2]:
            sys.stdout.write(mod.__doc__.strip() + "\n")
            status = getattr(mod, "help_status", None)
            if status is None:
                return 0
            code, note = status(g)
            (sys.stdout if code == 0 else sys.stderr).write(note + "\n")
            return code
        return mod.run(g, rest[1:]) or 0
    except HutchError as e:
        from .. import log
        log.error(str(e))
        return 1
    except OSError as e:
        # a system call hutch did not expect to fail (a full disk, no fds left):
        # still one line, with the errno, never a traceback
        from .. import log
        log.error(str(HutchError.from_os(rest[0] if rest else "hutch", e)))
        return 1
    except KeyboardInterrupt:
        return 130
    finally:
        h = sys.modules.get("hutch.process.helper")
        if h is not None:
            h.dismiss()


def entry():
    """The command's exit, without the interpreter's teardown (~1 ms of every
    verb): hutch writes its state and logs unbuffered and runs no threads, so
    flushing stdout and stderr is all that teardown would do for it."""
    code = main()
    code = code if isinstance(code, int) else 1
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            code = code or 120      # what the interpreter's own exit would say
    os._exit(code)
