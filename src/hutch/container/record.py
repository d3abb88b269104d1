"""The container's record: ``<root>/<id>/`` holds state.json, exec.fifo and a lock.

This module owns state.json's shape.  :class:`Record` is the parsed file with a
property per key (no other module spells a key), the format version that lets a
newer hutch manage a container an older one made, and the status transitions the
verbs check (:func:`check`).  :class:`ContainerDir` is the directory: an exclusive
flock on it serialises the verbs on one container, and state.json is written
atomically (a temporary file, then a rename), so a reader without the lock sees
the old record or the whole new one.

The container's status is derived, not stored: the init's pid plus its start time
(field 22 of /proc/<pid>/stat) identify it even if the pid is reused.
"""

import os

from ..errors import HutchError, NotFound, NotRunning

STATE_FILE = "state.json"
FIFO = "exec.fifo"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")

# The record's format.  0: the records of hutch 0.1 before this key existed (the
# same keys, and "exec" may be missing: it is then rebuilt from the bundle).
# 1: "hutchFormat" is written, and "attachments" lists host-side work to undo.
# A hutch refuses a record newer than it knows rather than misread it.
FORMAT = 1


class Record(dict):
    """state.json, parsed: a dict (it is written back as it is) with a typed
    property for each key the verbs read."""

    @classmethod
    def new(cls, cid, oci_version, bundle, rootfs, annotations, created, owner):
        return cls({"hutchFormat": FORMAT, "ociVersion": oci_version, "id": cid,
                    "status": "creating", "pid": 0, "bundle": bundle,
                    "rootfs": rootfs, "created": created,
                    "annotations": annotations or {}, "owner": owner, "hooks": {}})

    @classmethod
    def parse(cls, data, cid):
        if not isinstance(data, dict):
            raise HutchError(f"corrupt state file for {cid}: not a JSON object")
        version = data.get("hutchFormat", 0)
        if not isinstance(version, int) or version > FORMAT:
            import errno
            raise HutchError(f"the state of container {cid} was written by a newer "
                             f"hutch (record format {version}; this hutch reads up "
                             f"to {FORMAT}): manage it with that hutch",
                             errno.EPROTO)
        return cls(data)

    format = property(lambda self: self.get("hutchFormat", 0))
    id = property(lambda self: self.get("id", ""))
    pid = property(lambda self: self.get("pid") or 0)
    starttime = property(lambda self: self.get("starttime"))
    bundle = property(lambda self: self.get("bundle", ""))
    rootfs = property(lambda self: self.get("rootfs", ""))
    annotations = property(lambda self: self.get("annotations") or {})
    hooks = property(lambda self: self.get("hooks") or {})

    @property
    def creating(self):
        return self.get("status") == "creating"

    @property
    def cgroup(self):
        """The cgroup manager's record, or None (rootless without delegation)."""
        return self.get("cgroup") or None

    @property
    def cgroup_paths(self):
        return (self.get("cgroup") or {}).get("paths") or {}

    @property
    def exec_info(self):
        """What `exec` gives its processes (see plan.ExecRecord), or None in a
        format-0 record from before it was kept."""
        return self.get("exec")

    @property
    def criu(self):
        return self.get("criu") or {}

    @property
    def attachments(self):
        return self.setdefault("attachments", [])

    def set_init(self, pid):
        """Records the init: its pid and start time identify it from now on."""
        st = proc_stat(pid)
        self["pid"] = pid
        self["starttime"] = st[1] if st else 0

    def pidfd(self):
        """A pidfd for the init, or None if it is gone (or the pid was reused)."""
        return pidfd(self.pid, self.starttime)


def pidfd(pid, starttime):
    """A pidfd for ``pid`` if it is still the process that started at
    ``starttime`` and not a zombie, else None."""
    try:
        fd = os.pidfd_open(pid)
    except OSError:
        return None
    st = proc_stat(pid)
    if st is None or st[1] != starttime or st[0] in ("Z", "X"):
        os.close(fd)
        return None
    return fd


def kill_wait(pid, starttime, timeout=10.0):
    """SIGKILLs the process recorded as (pid, starttime), if it is still there,
    and waits (at most ``timeout`` s) until it is gone."""
    stop_process(pid, starttime, term=False, timeout=0, kill_timeout=timeout)


def stop_process(pid, starttime, ask=None, term=True, timeout=2.0, kill_timeout=None):
    """Ends the process recorded as (pid, starttime), if it is still there (a
    reused pid is never signalled), as the keeper, the networks' daemons and the
    rootless network tools are stopped: ``ask()`` first if given (a request on
    its control socket; it returns whether the process heard it), else SIGTERM
    (unless ``term`` is False); a wait of ``timeout`` s on its pidfd; then
    SIGKILL and a wait of ``kill_timeout`` s (``timeout`` by default)."""
    import select

    import _signal as signal
    fd = pidfd(pid, starttime) if pid else None
    if fd is None:
        return
    try:
        heard = False
        if ask is not None:
            try:
                heard = bool(ask())
            except (OSError, ValueError, HutchError):
                heard = False   # no answer: SIGTERM, then the waits
        if not heard and term:
            signal.pidfd_send_signal(fd, signal.SIGTERM)
        if not (heard or term) or not select.select([fd], [], [], timeout)[0]:
            signal.pidfd_send_signal(fd, signal.SIGKILL)
            select.select([fd], [], [], timeout if kill_timeout is None else kill_timeout)
    except ProcessLookupError:
        pass
    finally:
        os.close(fd)


# --- the status transitions, in runc's words ------------------------------------
def check(verb, status, cid="", force=False, ignore_paused=False):
    """Raises if ``verb`` may not act on a container in ``status``."""
    refused = _refusal(verb, status, cid, force, ignore_paused)
    if refused is not None:
        import errno        # built in, yet not loaded by a verb that is let through
        cls, msg, name = refused
        raise cls(msg, getattr(errno, name) if name else None)


def _refusal(verb, status, cid, force, ignore_paused):
    """(error class, message, errno name) if the transition is refused."""
    if verb == "start":
        if status == "stopped":
            return HutchError, "cannot start a container that has stopped", None
        if status != "created":
            return HutchError, f"cannot start an already {status} container", None
    elif verb == "kill":
        if status == "stopped":
            return NotRunning, "container not running", "ESRCH"
    elif verb == "delete":
        if status in ("running", "paused") and not force:
            return HutchError, (f"cannot delete container {cid} that is not "
                                f"stopped: {status}"), None
    elif verb == "pause":
        if status not in ("running", "created"):
            return HutchError, f"cannot pause a {status} container", "EINVAL"
    elif verb == "resume":
        if status != "paused":
            return HutchError, (f"cannot resume a {status} container: it is not "
                                "paused"), "EINVAL"
    elif verb == "exec":
        if status == "stopped":
            return NotRunning, "cannot exec in a stopped container", "ESRCH"
        if status == "creating":
            return HutchError, ("cannot exec in a container that is still being "
                                "created"), "EAGAIN"
        if status == "paused" and not ignore_paused:
            return HutchError, ("cannot exec in a paused container (use "
                                "--ignore-paused to override)"), "EAGAIN"
    elif verb == "checkpoint":
        if status not in ("running", "paused"):
            return NotRunning, ("container not running" if status == "stopped" else
                                f"cannot checkpoint a {status} container"), "ESRCH"
    elif verb == "migrate":
        if status != "running":
            return HutchError, (f"migrate: container {cid} is {status}; only a "
                                "running container can be migrated"), "ESRCH"
    else:
        raise ValueError(f"no transition rule for {verb!r}")
    return None


def default_root():
    if os.geteuid() == 0:
        return "/run/hutch"
    xdg = os.environ.get("XDG_RUNTIME_DIR")
    if xdg:
        return os.path.join(xdg, "hutch")
    return f"/tmp/hutch-{os.geteuid()}"


def validate_id(cid):
    if not cid:
        raise HutchError("container id cannot be empty")
    if cid in (".", "..") or len(cid) > 1024 or not set(cid) <= _ID_CHARS:
        raise HutchError(f"invalid container id format: {cid!r} (allowed: letters, "
                         "digits, and _ + - .)")
    return cid


def proc_stat(pid):
    """(state letter, start time in clock ticks) of a pid, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            data = f.read()
    except (FileNotFoundError, ProcessLookupError):
        return None
    fields = data[data.rindex(b")") + 2:].split()
    return fields[0].decode(), int(fields[19])


class ContainerDir:
    """One container's directory under the state root."""

    def __init__(self, root, cid):
        self.root = root
        self.id = cid
        self.path = os.path.join(root, cid)
        self._lockfd = None
        self.data = None

    # --- locking --------------------------------------------------------------
    def lock(self):
        """Takes the container's lock, waiting for whichever verb holds it.  The
        directory locked must still be the one at the path once the lock is held:
        a delete that held it first may have removed it (and a create made a new
        one under the same id), and a waiter must never act on either."""
        import errno

        from ..linux.fs import lock_current
        try:
            fd = lock_current(self.path, os.O_RDONLY | os.O_DIRECTORY)
        except (FileNotFoundError, NotADirectoryError):
            fd = None
        if fd is None:
            raise NotFound("container does not exist", errno.ENOENT) from None
        self._lockfd = fd
        return self

    @property
    def lock_fd(self):
        return self._lockfd

    def unlock(self):
        if self._lockfd is not None:
            os.close(self._lockfd)
            self._lockfd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.unlock()

    # --- creation and removal -------------------------------------------------
    def make(self):
        os.makedirs(self.root, mode=0o711, exist_ok=True)
        try:
            os.mkdir(self.path, 0o711)
        except FileExistsError:
            import errno
            raise HutchError(f"container with id exists: {self.id}", errno.EEXIST) from None
        self.lock()

    def remove(self):
        # only a directory can hold a mount here (a restore's root bind, a cgroup
        # yard); a plain container's state has none, and pays no mountinfo read
        try:
            with os.scandir(self.path) as it:
                dirs = any(e.is_dir(follow_symlinks=False) for e in it)
        except OSError:
            dirs = False
        from ..linux.fs import rmtree, unmount_under
        left = unmount_under(self.path) if dirs else []
        if left:
            import errno
            raise HutchError(f"remove {self.path}: {left[0]} is mounted under it and "
                             "could not be unmounted; left in place", errno.EBUSY)
        rmtree(self.path)

    # --- the state file -------------------------------------------------------
    def load(self):
        from .. import jsonlite
        try:
            with open(os.path.join(self.path, STATE_FILE), "rb") as f:
                data = jsonlite.loads(f.read())
        except FileNotFoundError:
            import errno
            raise NotFound("container does not exist", errno.ENOENT) from None
        except ValueError as e:
            raise HutchError(f"corrupt state file for {self.id}: {e}") from None
        self.data = Record.parse(data, self.id)
        return self.data

    def save(self, data=None):
        from .. import jsonlite
        if data is not None:
            self.data = data
        try:
            write_atomic(os.path.join(self.path, STATE_FILE),
                         jsonlite.dumps(self.data, compact=True), 0o600)
        except OSError as e:
            raise HutchError(f"write the state of container {self.id} in {self.path}: "
                             f"{e.strerror}", e.errno) from None

    @property
    def fifo(self):
        return os.path.join(self.path, FIFO)

    # --- status -----------------------------------------------------------------
    def status(self):
        """creating, created, running, paused or stopped."""
        d = self.data
        pid = d.pid
        if d.creating:
            # holding the lock means the creator is gone: it died part-way
            return "stopped" if self._lockfd is not None else "creating"
        if pid <= 0:
            return "stopped"
        st = proc_stat(pid)
        if st is None or st[1] != d.starttime or st[0] in ("Z", "X"):
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        if d.cgroup:
            from ..cgroups import frozen
            if frozen(d.cgroup):
                return "paused"
        return "running"

    def oci_state(self):
        """The state exactly as the runtime-spec defines it."""
        d = self.data
        status = self.status()
        out = {"ociVersion": d.get("ociVersion", ""), "id": self.id, "status": status}
        if status != "stopped":
            out["pid"] = d.pid
        out["bundle"] = d.bundle
        out["annotations"] = d.annotations
        return out


def write_atomic(path, text, mode=0o644):
    """Writes ``text`` to a temporary file beside ``path``, then renames it over
    ``path``: a reader sees the old file or the whole new one.  A failed write
    (a full filesystem) leaves no temporary file behind."""
    d, b = os.path.split(path)
    tmp = os.path.join(d or ".", f".{b}.hutch-tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, mode)
    try:
        data = text.encode()
        while data:
            data = data[os.write(fd, data):]
        os.close(fd)
        fd = -1
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_pid_file(path, pid):
    """--pid-file: the pid, written whole; a failure named as runc names it."""
    try:
        write_atomic(os.path.abspath(path), str(pid))
    except OSError as e:
        raise HutchError(f"write the pid file {path}: {e.strerror}", e.errno) from None


def list_ids(root):
    try:
        return sorted(e for e in os.listdir(root) if not e.startswith("."))
    except FileNotFoundError:
        return []
