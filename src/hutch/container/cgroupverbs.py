"""The verbs that work through the container's cgroups: pause, resume, ps,
update, stats and events."""

import errno
import os

from ..errors import HutchError, NotRunning
from .lifecycle import load
from .record import check


def _running_manager(cdir, verb):
    from ..cgroups.manager import Manager
    d = cdir.data
    status = cdir.status()
    if status == "stopped":
        raise NotRunning("container not running", errno.ESRCH)
    if not d.cgroup:
        raise HutchError(f"cannot {verb} container {cdir.id}: it has no cgroups (it "
                         "was created rootless, without cgroup delegation)",
                         errno.EOPNOTSUPP)
    return Manager.from_state(d.cgroup), status


def pause(root, cid):
    cdir = load(root, cid)
    with cdir:
        mgr, status = _running_manager(cdir, "pause")
        check("pause", status)
        mgr.freeze(True)


def resume(root, cid):
    cdir = load(root, cid)
    with cdir:
        mgr, status = _running_manager(cdir, "resume")
        check("resume", status)
        mgr.freeze(False)


def pids(root, cid):
    """Every pid in the container's cgroup (host pids)."""
    cdir = load(root, cid)
    with cdir:
        d = cdir.data
        if cdir.status() == "stopped":
            return []       # as runc: a stopped container has no processes
        if not d.cgroup:
            return _pidns_members(d.pid)
        mgr, _ = _running_manager(cdir, "list the processes of")
        return mgr.pids()


def _pidns_members(init):
    """Without cgroups (rootless): every process in the init's pid namespace."""
    try:
        ns = os.stat(f"/proc/{init}/ns/pid")
    except OSError:
        return []
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                st = os.stat(f"/proc/{name}/ns/pid")
            except OSError:
                continue
            if (st.st_ino, st.st_dev) == (ns.st_ino, ns.st_dev):
                out.append(int(name))
    return sorted(out)


def update(root, cid, resources):
    """Changes linux.resources of a live container; only the values given change
    (the cgroup files themselves are the record of what is in force)."""
    cdir = load(root, cid)
    with cdir:
        mgr, _ = _running_manager(cdir, "update")
        mgr.apply(resources, update=True)


def stats(root, cid):
    """One stats event in runc's shape: {"type": "stats", "id", "data"}."""
    from ..cgroups import stats as S
    cdir = load(root, cid)
    with cdir:
        _running_manager(cdir, "read the stats of")
        return {"type": "stats", "id": cid, "data": S.collect(cdir.data.cgroup_paths)}


def events(root, cid, interval, emit, stats_every=True):
    """Streams events until the container stops: {"type": "oom"} as soon as an OOM
    kill is seen (checked every 100 ms), and stats every ``interval`` seconds."""
    import time
    from ..cgroups import stats as S
    cdir = load(root, cid, lock=False)
    _running_manager(cdir, "watch the events of")
    paths = cdir.data.cgroup_paths
    ooms = S.oom_kills(paths)
    next_stats = time.monotonic()
    while True:
        n = S.oom_kills(paths)
        if n > ooms:
            emit({"type": "oom", "id": cid})      # runc's shape: no empty data
            ooms = n
        if cdir.status() == "stopped":
            return
        if stats_every and time.monotonic() >= next_stats:
            emit({"type": "stats", "id": cid, "data": S.collect(paths)})
            next_stats = time.monotonic() + interval
        time.sleep(0.1)
