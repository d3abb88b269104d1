"""`hutch sandbox`: one command in a throw-away sandbox, in the foreground.

The command runs under catatonit as the sandbox's PID 1 (``catatonit -- CMD``),
which forwards the signals hutch forwards to it, reaps orphans, and exits with
the command's status (128+N when signal N ended it).  It has the terminal's
stdio.  The exit status is the command's, 124 when ``--timeout`` ended it, 137
when the memory limit did.
"""

import os

from .config import INIT_PATH

EXIT_TIMEOUT = 124
EXIT_OOM = 137


def run(settings, args, root, name=None, timeout=None):
    import _signal as signal
    from ..cgroups.manager import Manager
    from ..container.create import CreateOptions
    from ..container.lifecycle import delete, load
    from ..container.record import default_root
    from ..container.run import run as run_container
    from ..spec.config import parse_config
    root = root or default_root()
    cid = name or f"sandbox-{os.getpid()}-{os.urandom(3).hex()}"
    cfg = parse_config(settings.config([INIT_PATH, "--"] + list(args), root,
                                       cid=cid), "sandbox")
    state = {"timed_out": False, "oom": 0}

    def expire(_n, _f):
        # the whole sandbox goes: the command and all it started
        state["timed_out"] = True
        try:
            cdir = load(root, cid, lock=False)
        except Exception:   # noqa: BLE001 - gone already
            return
        if cdir.data.cgroup:
            Manager.from_state(cdir.data.cgroup).kill_all(9)
        elif cdir.data.pid:
            try:
                os.kill(cdir.data.pid, 9)
            except ProcessLookupError:
                pass
    if timeout is not None:
        signal.signal(signal.SIGALRM, expire)
        signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        attachments = ()
        if settings.views:
            # served from a thread of this command, which outlives the container
            from ..keeper.attach import LocalViews
            attachments = (LocalViews(),)
        net = settings.network_attachment(cid)
        if net is not None:
            attachments += (net,)
        code = run_container(root, cid, "/", CreateOptions(
            rootless=settings.rootless, attachments=attachments), cfg=cfg, keep=True)
    finally:
        if timeout is not None:
            signal.setitimer(signal.ITIMER_REAL, 0)
            signal.signal(signal.SIGALRM, signal.SIG_DFL)
        oom = _oom_kills(root, cid) if settings.memory is not None else 0
        delete(root, cid, force=True)
    if state["timed_out"]:
        return EXIT_TIMEOUT
    if oom:
        return EXIT_OOM
    return code


def _oom_kills(root, cid):
    from ..cgroups.stats import oom_kills
    from ..container.lifecycle import load
    try:
        cdir = load(root, cid, lock=False)
    except Exception:   # noqa: BLE001
        return 0
    return oom_kills(cdir.data.cgroup_paths) if cdir.data.cgroup else 0
