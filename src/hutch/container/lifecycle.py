"""The lifecycle verbs: start, kill, delete, state and list.

creating -> created -> running -> stopped (and paused, see :mod:`.cgroupverbs`).
No hutch process stays behind: the init waits for `start` on exec.fifo, and the
status is derived from the init's pid and start time each time it is asked for.
"""

import os

from ..errors import HutchError, NotFound, failpoint
from .record import ContainerDir, check, kill_wait, validate_id


def load(root, cid, lock=True):
    """The container's directory with its record loaded (and locked, unless
    ``lock`` is false)."""
    validate_id(cid)
    cdir = ContainerDir(root, cid)
    if lock:
        cdir.lock()
    try:
        cdir.load()
    except BaseException:
        cdir.unlock()
        raise
    return cdir


def start(root, cid):
    import select
    cdir = load(root, cid)
    with cdir:
        failpoint("start:locked")
        check("start", cdir.status())
        d = cdir.data
        # the pidfd first: opening exec.fifo releases the init, whose program may
        # exit at once (a zombie is "stopped" to pidfd); from here on the pidfd
        # tells whether the init that was released is the one that went away
        pfd = d.pidfd()
        if pfd is None:
            raise HutchError("cannot start a container that has stopped")
        try:
            ffd = os.open(cdir.fifo, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
        except FileNotFoundError:
            os.close(pfd)
            raise HutchError("cannot start an already running container") from None
        failpoint("start:released")
        got = b""
        acked = False
        try:
            while True:
                r, _, _ = select.select([ffd, pfd], [], [])
                if ffd in r:
                    chunk = os.read(ffd, 4096)
                    if chunk:
                        got += chunk
                        acked = True
                        continue
                    break       # the init closed exec.fifo: its exec succeeded
                if pfd in r and ffd not in r:
                    # the init exited; drain what it wrote
                    try:
                        got += os.read(ffd, 4096)
                    except BlockingIOError:
                        pass
                    if not acked and not got:
                        raise HutchError("container init exited before start")
                    break
        finally:
            os.close(ffd)
            os.close(pfd)
        failpoint("start:ran")
        try:
            os.unlink(cdir.fifo)
        except FileNotFoundError:
            pass
        err = got[1:].decode(errors="replace").strip()
        if err:
            raise HutchError(err)
        d["status"] = "running"
        cdir.save()
        failpoint("start:saved")
        if d.hooks.get("poststart"):
            from .. import hooks, jsonlite
            try:
                hooks.run_hooks(d.hooks, "poststart", jsonlite.dumps(cdir.oci_state()))
            except HutchError as e:
                from ..log import warn
                warn(str(e))


def kill(root, cid, sig, all_procs=False):
    cdir = load(root, cid)
    with cdir:
        d = cdir.data
        if all_procs and d.cgroup:
            # as runc: --all signals whatever is left in the cgroup, even once
            # the init has gone
            from ..cgroups.manager import Manager
            Manager.from_state(d.cgroup).kill_all(sig)
            return
        check("kill", cdir.status())
        pfd = d.pidfd()
        if pfd is None:
            check("kill", "stopped")
        import _signal as signal
        try:
            signal.pidfd_send_signal(pfd, sig)
        except ProcessLookupError:
            check("kill", "stopped")
        finally:
            os.close(pfd)


def delete(root, cid, force=False):
    validate_id(cid)
    cdir = ContainerDir(root, cid)
    try:
        cdir.lock()
    except NotFound:
        if force:
            return
        raise
    with cdir:
        try:
            cdir.load()
        except HutchError:
            # no state file: a create killed before it wrote one (there is
            # nothing else it can have made yet), or a state file that cannot be
            # read; --force removes the entry, as it must leave nothing behind
            if not force:
                raise
            cdir.remove()
            return
        delete_loaded(cdir, force)


def delete_loaded(cdir, force=False):
    """`delete` of a container whose directory the caller holds locked."""
    cid = cdir.id
    d = cdir.data
    failpoint("delete:locked")
    status = cdir.status()
    check("delete", status, cid, force=force)
    if d.pid:
        if status == "paused" and d.cgroup:
            from ..cgroups.manager import Manager
            Manager.from_state(d.cgroup).freeze(False)
        kill_wait(d.pid, d.starttime)
    failpoint("delete:killed")
    if d.get("attachments"):
        _detach(cdir, force)
    if d.cgroup:
        from ..cgroups.manager import Manager
        Manager.from_state(d.cgroup).destroy()
    failpoint("delete:cgroups")
    if d.hooks.get("poststop"):
        from .. import hooks, jsonlite
        st = cdir.oci_state()
        st["status"] = "stopped"
        try:
            hooks.run_hooks(d.hooks, "poststop", jsonlite.dumps(st))
        except HutchError as e:
            from ..log import warn
            warn(str(e))
    failpoint("delete:hooks")
    cdir.remove()


def _detach(cdir, force):
    """Undoes the container's attachments (its init is gone).  An undo that
    fails keeps the container (stopped) so that another delete can try again;
    with --force it is reported and the container goes all the same."""
    from . import attach
    d = cdir.data
    errors = attach.detach_all(attach.Context(cdir.id, 0, cdir.root, d.bundle,
                                              None, d))
    if not errors:
        return
    if not force:
        cdir.save()
        raise HutchError(f"delete {cdir.id}: {errors[0]} (the container is kept: "
                         "delete it again, or with --force to leave this undone)")
    from ..log import warn
    for e in errors:
        warn(e)


def state(root, cid):
    """Read without the lock: state.json is only ever replaced whole, and a hook
    that create or start runs may ask for the state of its own container."""
    cdir = load(root, cid, lock=False)
    st = cdir.oci_state()
    if cdir.data.creating and not _locked(cdir):
        st["status"] = "stopped"        # its creator died part-way
    for entry in cdir.data.get("attachments") or ():
        # an attachment may say how it is (the keeper: running or gone, and the
        # exit code it recorded); containers without attachments import nothing
        from . import attach
        try:
            cls = attach.resolve(entry["kind"])
        except HutchError:
            continue
        more = getattr(cls, "annotations", None)
        if more is not None:
            st["annotations"] = dict(st.get("annotations") or {},
                                     **more(cdir.path, entry.get("data")))
    return st


def list_all(root):
    from .record import list_ids
    out = []
    for cid in list_ids(root):
        cdir = ContainerDir(root, cid)
        try:
            d = cdir.load()
        except HutchError:
            continue
        st = cdir.oci_state()
        if d.creating and not _locked(cdir):
            st["status"] = "stopped"
        st.update(rootfs=d.rootfs, created=d.get("created", ""),
                  owner=d.get("owner", ""))
        out.append(st)
    return out


def _locked(cdir):
    import fcntl
    try:
        fd = os.open(cdir.path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


