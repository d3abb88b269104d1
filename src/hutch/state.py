"""The state directory: ``<root>/<id>/`` holds state.json, exec.fifo and a lock.

state.json is written atomically (write a temporary file, then rename).  CLI calls
on one container are serialised by an exclusive flock on the container directory.
The container's status is derived, not stored: the init's pid plus its start time
(field 22 of /proc/<pid>/stat) identify it even if the pid is reused.
"""

import os

from .errors import HutchError, NotFound

STATE_FILE = "state.json"
FIFO = "exec.fifo"
_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_+-.")


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


def now_rfc3339():
    import time
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + \
        f".{int((t % 1) * 1e9):09d}Z"


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
        import fcntl
        while True:
            try:
                fd = os.open(self.path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                             os.O_CLOEXEC)
            except (FileNotFoundError, NotADirectoryError):
                raise NotFound("container does not exist", 2) from None
            fcntl.flock(fd, fcntl.LOCK_EX)
            held = os.fstat(fd)
            try:
                now = os.stat(self.path, follow_symlinks=False)
            except FileNotFoundError:
                now = None
            if now is not None and (now.st_ino, now.st_dev) == (held.st_ino,
                                                                held.st_dev):
                self._lockfd = fd
                return self
            os.close(fd)
            if now is None:
                raise NotFound("container does not exist", 2)

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
            raise HutchError(f"container with id exists: {self.id}", 17) from None
        self.lock()

    def remove(self):
        # only a directory can hold a mount here (a restore's root bind, a cgroup
        # yard); a plain container's state has none, and pays no mountinfo read
        try:
            with os.scandir(self.path) as it:
                dirs = any(e.is_dir(follow_symlinks=False) for e in it)
        except OSError:
            dirs = False
        left = _unmount_under(self.path) if dirs else []
        if left:
            raise HutchError(f"remove {self.path}: {left[0]} is mounted under it and "
                             "could not be unmounted; left in place", 16)
        rmtree(self.path)

    # --- the state file -------------------------------------------------------
    def load(self):
        from . import jsonlite
        try:
            with open(os.path.join(self.path, STATE_FILE), "rb") as f:
                self.data = jsonlite.loads(f.read())
        except FileNotFoundError:
            raise NotFound("container does not exist", 2) from None
        except ValueError as e:
            raise HutchError(f"corrupt state file for {self.id}: {e}") from None
        return self.data

    def save(self, data=None):
        from . import jsonlite
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
        pid = d.get("pid") or 0
        if d.get("status") == "creating":
            # holding the lock means the creator is gone: it died part-way
            return "stopped" if self._lockfd is not None else "creating"
        if pid <= 0:
            return "stopped"
        st = proc_stat(pid)
        if st is None or st[1] != d.get("starttime") or st[0] in ("Z", "X"):
            return "stopped"
        if os.path.exists(self.fifo):
            return "created"
        if d.get("cgroup"):
            from .cgroups import frozen
            if frozen(d["cgroup"]):
                return "paused"
        return "running"

    def oci_state(self):
        """The state exactly as the runtime-spec defines it."""
        d = self.data
        status = self.status()
        out = {"ociVersion": d.get("ociVersion", ""), "id": self.id, "status": status}
        if status != "stopped":
            out["pid"] = d.get("pid", 0)
        out["bundle"] = d.get("bundle", "")
        out["annotations"] = d.get("annotations") or {}
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


def _unescape(field):
    return field.replace("\\040", " ").replace("\\011", "\t").replace(
        "\\012", "\n").replace("\\134", "\\")


def _mounts_under(path, mountinfo="/proc/self/mountinfo"):
    prefix = os.path.realpath(path).rstrip("/") + "/"
    try:
        with open(mountinfo) as f:
            return [mp for mp in (_unescape(line.split(" ", 5)[4]) for line in f)
                    if mp.startswith(prefix)]
    except OSError:
        return []


def _unmount_under(path):
    """Detaches whatever is mounted under ``path`` (a restore's bind of the rootfs,
    a CRIU cgroup yard, left by a hutch that was killed), deepest first, so that
    removing ``path`` never reaches into what was mounted there.  Returns the
    mounts that are still there (none, unless unmounting was refused)."""
    found = _mounts_under(path)
    if not found:
        return []
    from .linux import kernel as K
    for mp in sorted(found, key=len, reverse=True):
        try:
            K.kernel().umount2(mp, K.MNT_DETACH)
        except OSError:
            pass
    return _mounts_under(path)


def rmtree(path):
    """Removes a directory tree without following symlinks (shutil costs ~4 ms of
    imports, which every `delete` would pay).  Errors are ignored: the caller
    removes what it made and reports what matters elsewhere."""
    try:
        dfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError:
        try:
            os.unlink(path)
        except OSError:
            pass
        return
    try:
        _clear(dfd)
    finally:
        os.close(dfd)
    try:
        os.rmdir(path)
    except OSError:
        pass


def _clear(dfd):
    dev = os.fstat(dfd).st_dev
    for entry in os.scandir(dfd):
        name = entry.name
        try:
            is_dir = entry.is_dir(follow_symlinks=False)
            if is_dir and entry.stat(follow_symlinks=False).st_dev != dev:
                continue        # another filesystem mounted here: not ours to empty
        except OSError:
            is_dir = False
        if is_dir:
            try:
                sub = os.open(name, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW |
                              os.O_CLOEXEC, dir_fd=dfd)
            except OSError:
                continue
            try:
                _clear(sub)
            finally:
                os.close(sub)
            try:
                os.rmdir(name, dir_fd=dfd)
            except OSError:
                pass
        else:
            try:
                os.unlink(name, dir_fd=dfd)
            except OSError:
                pass
