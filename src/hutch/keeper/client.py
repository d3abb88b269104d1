"""What the CLI asks of a container's keeper: `hutch wait` and `hutch logs`.
Both read the keeper's files in the state directory (see :mod:`.attach`); a
stopped container's log and exit code stay there until `hutch delete`."""

import errno
import os

from ..errors import HutchError
from .attach import KIND, exit_code, keeper_dir


def _keeper(root, cid, verb):
    """(state directory, keeper data) of a container that has a keeper."""
    from ..container.lifecycle import load
    cdir = load(root, cid, lock=False)
    for entry in cdir.data.get("attachments") or ():
        if entry.get("kind") == KIND:
            return cdir, entry.get("data")
    raise HutchError(f"{verb}: container {cid} has no keeper (only a detached "
                     "sandbox, `hutch sandbox -d`, has one)", errno.EINVAL)


def _alive(data):
    from ..container.record import pidfd
    if not data:
        return False
    fd = pidfd(data["pid"], data["starttime"])
    if fd is None:
        return False
    os.close(fd)
    return True


def wait(root, cid, poll=0.05):
    """Blocks until the container stops; returns its exit code."""
    import select
    import time
    cdir, data = _keeper(root, cid, "wait")
    fd = cdir.data.pidfd()
    if fd is not None:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
    deadline = time.monotonic() + 5.0
    while True:
        code = exit_code(cdir.path)
        if code is not None:
            return code
        if not os.path.isdir(cdir.path):
            raise HutchError(f"wait: container {cid} was deleted before its exit code "
                             "was read", errno.ENOENT)
        if not _alive(data) or time.monotonic() > deadline:
            raise HutchError(f"wait: container {cid} stopped, but its keeper is gone "
                             "without recording its exit code", errno.ESRCH)
        time.sleep(poll)


def logs(root, cid, follow=False, tail=None, since=None, timestamps=False,
         streams=None, fmt="text", out=None):
    import time
    from . import logfile as L
    cdir, data = _keeper(root, cid, "logs")
    path = os.path.join(keeper_dir(cdir.path), "container.log")
    if not os.path.exists(path):
        raise HutchError(f"logs: container {cid} has no log yet", errno.ENOENT)
    since_ns = L.parse_since(since, time.time_ns()) if since else None
    out = out if out is not None else os.fdopen(os.dup(1), "wb")
    lines = L.iter_json if fmt == "json" else L.iter_text
    try:
        if follow:
            def stopped():
                return not _alive(data) and cdir.data.pidfd() is None
            # the old records first, then what comes, with no gap between them
            records = L.follow(path, stopped, history="all" if tail is None else tail,
                               since_ns=since_ns)
        elif tail is not None:
            records = [r for r in L.tail(path, tail)
                       if since_ns is None or r[0] >= since_ns]
        else:
            records = L.read_records(path, since_ns)
        for line in lines(records, timestamps=timestamps, streams=streams):
            out.write(line)
            if follow:
                out.flush()
    except BrokenPipeError:
        pass
    finally:
        try:
            out.close()
        except BrokenPipeError:
            pass
    return 0
