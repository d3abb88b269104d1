"""The cgroup manager: creating, joining, freezing, listing and removing.

One Manager covers every layout.  Per-hierarchy work is delegated to
:mod:`hutch.cgroups.v1` or :mod:`hutch.cgroups.v2`.  A systemd driver would be a
second class with the same methods, chosen by ``--systemd-cgroup``.
"""

import os
import time

from ..errors import HutchError
from . import hierarchies, layout, own_cgroup, resolve_path


# memory.limit_in_bytes may not exceed memsw (raise memsw first); a new period
# can be refused with the old quota under a parent's limit (quota first, as runc)
_WRITE_FIRST = {"memory.limit_in_bytes": "memory.memsw.limit_in_bytes",
                "cpu.cfs_period_us": "cpu.cfs_quota_us"}


class Manager:
    def __init__(self, paths, created=(), layout_name="", mountpoints=None):
        self.paths = dict(paths)        # key -> absolute cgroup directory
        self.created = list(created)    # directories hutch made, deepest last
        self.layout = layout_name
        self.mountpoints = dict(mountpoints or {})   # key -> hierarchy mountpoint
        self.v2_devices = None      # the v2 device filter loader (tests replace it)

    # --- construction ------------------------------------------------------------
    @classmethod
    def for_container(cls, cid, cgroups_path):
        hs = hierarchies()
        rel = resolve_path(cgroups_path, cid)
        relative = bool(cgroups_path) and not cgroups_path.startswith("/")
        paths = {}
        for h in hs:
            base = rel
            if relative:
                base = own_cgroup(h.key).rstrip("/") + rel
            # the mount shows the hierarchy from h.root; strip it
            if h.root != "/" and base.startswith(h.root):
                base = base[len(h.root):] or "/"
            paths[h.key] = h.mountpoint.rstrip("/") + base
        return cls(paths, (), layout(hs), {h.key: h.mountpoint for h in hs})

    @classmethod
    def from_state(cls, info):
        return cls(info.get("paths", {}), info.get("created", ()), info.get("layout", ""),
                   info.get("mountpoints"))

    def to_state(self):
        return {"paths": self.paths, "created": self.created, "layout": self.layout,
                "mountpoints": self.mountpoints}

    # --- lifecycle ------------------------------------------------------------------
    def create(self):
        for key, path in self.paths.items():
            self._makedirs(path)
            if key != "unified" and "cpuset" in key.split(","):
                from .v1 import init_cpuset
                init_cpuset(path)

    def _makedirs(self, path):
        import errno
        for attempt in range(5):
            missing = []
            p = path
            while not os.path.isdir(p):
                missing.append(p)
                p = os.path.dirname(p)
            try:
                for d in reversed(missing):
                    try:
                        os.mkdir(d)
                    except FileExistsError:
                        continue
                    self.created.append(d)
                return
            except FileNotFoundError:
                # a parent went between the look and the mkdir: the last container
                # under a shared parent (hutch's own /hutch) removed it; again
                if attempt == 4:
                    raise HutchError(f"create cgroup {path}: a parent directory keeps "
                                     "disappearing", errno.ENOENT) from None
            except OSError as e:
                raise HutchError(f"create cgroup {d}: {e.strerror}", e.errno) from None

    def v1_controllers(self):
        return {c for k in self.paths if k != "unified" for c in k.split(",")
                if not c.startswith("name=")}

    def v2_controllers(self):
        """Controllers the container's v2 cgroup can have: those the hierarchy's
        root delegates (hutch never writes the host's root cgroup)."""
        u = self.paths.get("unified")
        if not u:
            return None
        root = self._v2_root()
        try:
            with open(os.path.join(root, "cgroup.subtree_control")) as f:
                return set(f.read().split())
        except OSError:
            return set()

    def _v2_root(self):
        if not self.mountpoints.get("unified"):
            from . import hierarchies
            for h in hierarchies():
                if h.version == 2:
                    self.mountpoints["unified"] = h.mountpoint
        return self.mountpoints.get("unified") or "/sys/fs/cgroup"

    def apply(self, resources, update=False, devices=True):
        """Applies linux.resources (all of it: see :mod:`hutch.cgroups.resources`).
        With ``update``, only the values given are changed.  The nodes of
        linux.devices are not allowed by that alone: as with runc, only
        resources.devices (and the defaults) decide what may be opened.
        ``devices=False`` leaves the device rules for :meth:`apply_devices`
        (create applies them once the init has made the container's nodes, as
        runc does: mknod of a node the rules deny would fail)."""
        resources = resources or {}
        from .resources import plan
        writes = plan(resources, self.v1_controllers(), self.v2_controllers())
        if update:
            self._keep_swap_ratio(writes)
        if any(w.version == 2 for w in writes):
            self._enable_v2({w.controller for w in writes if w.version == 2} - {"cgroup"})
        self._write_all(writes)
        if devices:
            self.apply_devices(resources, update)

    def apply_devices(self, resources, update=False):
        import errno
        # create always starts the device list from deny-all (plus the defaults every
        # container gets); update changes it only when given one
        devices = (resources or {}).get("devices")
        if update and not devices:
            return
        devices = list(devices or [])
        if not isinstance(devices, list):
            raise HutchError("linux.resources.devices: expected a list", errno.EINVAL)
        dev = [p for k, p in self.paths.items() if "devices" in k.split(",")]
        if dev:
            from .v1 import apply_devices
            try:
                apply_devices(dev[0], devices)
            except OSError as e:
                raise HutchError(f"apply the device rules to {dev[0]}: {e.strerror}",
                                 e.errno) from None
        elif "unified" in self.paths:
            from .devices_bpf import apply_v2
            (self.v2_devices or apply_v2)(self.paths["unified"], devices)
        elif devices:
            raise HutchError("linux.resources.devices: this host has neither a v1 "
                             "devices controller nor cgroup v2", errno.EOPNOTSUPP)

    def _keep_swap_ratio(self, writes):
        """v1 update of the memory limit alone: memory+swap may not be below it.
        If the container had no swap (memsw == limit), keep it so by moving memsw
        along; otherwise the caller must say what swap it wants."""
        import errno
        from .resources import Write
        files = {w.file: w for w in writes if w.version == 1}
        lim = files.get("memory.limit_in_bytes")
        if lim is None or "memory.memsw.limit_in_bytes" in files:
            return
        path = self._path_for(lim)
        try:
            with open(os.path.join(path, "memory.limit_in_bytes")) as f:
                cur = int(f.read())
            with open(os.path.join(path, "memory.memsw.limit_in_bytes")) as f:
                memsw = int(f.read())
        except (OSError, ValueError):
            return
        new = int(lim.value)
        if memsw == cur or new == -1:
            # no swap before: none now; no memory limit: no memory+swap one either
            # (runc's reading of `update --memory -1`)
            writes.append(Write("memory", 1, "memory.memsw.limit_in_bytes",
                                new, "memory.swap"))
        elif new > memsw:
            raise HutchError(f"linux.resources.memory.limit: {lim.value} is above the "
                             f"memory+swap limit {memsw}; give --memory-swap too",
                             errno.EINVAL)

    def _path_for(self, w):
        import errno
        if w.version == 2:
            return self.paths["unified"]
        for key, path in self.paths.items():
            if key != "unified" and w.controller in key.split(","):
                return path
        raise HutchError(f"linux.resources.{w.field}: no {w.controller} hierarchy",
                         errno.EOPNOTSUPP)

    def _write_all(self, writes):
        import errno
        pending = list(writes)
        while pending:
            w = pending.pop(0)
            try:
                self._write(w)
            except OSError as e:
                # v1 pairs whose order depends on the values in force (EINVAL):
                # the other file goes first, then this one again
                first = _WRITE_FIRST.get(w.file)
                later = [x for x in pending if x.file == first]
                if later and e.errno == errno.EINVAL:
                    pending.remove(later[0])
                    pending[:0] = [later[0], w]
                    continue
                # v1 without blkio weights, with BFQ's (this kernel): runc's fallback
                bfq = {"blkio.weight": "blkio.bfq.weight",
                       "blkio.weight_device": "blkio.bfq.weight_device"}.get(w.file)
                if bfq and e.errno == errno.ENOENT:
                    from .resources import Write
                    pending.insert(0, Write(w.controller, w.version, bfq, w.value,
                                            w.field))
                    continue
                path = os.path.join(self._path_for(w), w.file)
                hint = ""
                if e.errno == errno.ENOENT:
                    hint = " (this kernel does not have that file)"
                    if w.file.startswith("memory.kmem"):
                        hint = " (kernel memory accounting limits are gone from this kernel)"
                raise HutchError(f"linux.resources.{w.field}: write {w.value!r} to {path}: "
                                 f"{e.strerror}{hint}", e.errno) from None

    def _write(self, w):
        path = os.path.join(self._path_for(w), w.file)
        fd = os.open(path, os.O_WRONLY | os.O_CLOEXEC)
        try:
            os.write(fd, w.value.encode())
        finally:
            os.close(fd)

    def _enable_v2(self, ctrls):
        """Enables controllers in cgroup.subtree_control of the container's v2
        ancestors, below the hierarchy's root (which hutch never writes)."""
        if not ctrls:
            return
        root = self._v2_root().rstrip("/")
        path = self.paths["unified"]
        ancestors = []
        p = os.path.dirname(path)
        while len(p) > len(root) and p.startswith(root + "/"):
            ancestors.append(p)
            p = os.path.dirname(p)
        for a in reversed(ancestors):
            f = os.path.join(a, "cgroup.subtree_control")
            try:
                with open(f) as fh:
                    have = set(fh.read().split())
                need = sorted(ctrls - have)
                if need:
                    with open(f, "w") as fh:
                        fh.write(" ".join("+" + c for c in need))
            except OSError as e:
                raise HutchError(f"enable {', '.join(sorted(ctrls))} in {f}: {e.strerror}",
                                 e.errno) from None

    def add(self, pid):
        for key, path in self.paths.items():
            try:
                with open(os.path.join(path, "cgroup.procs"), "w") as f:
                    f.write(str(pid))
            except OSError as e:
                raise HutchError(f"join cgroup {path}: {e.strerror}", e.errno) from None

    def pids(self):
        """Every pid in the container's cgroup (and its sub-cgroups)."""
        out = set()
        for key, path in self.paths.items():
            for dirpath, _dirs, _files in os.walk(path):
                try:
                    with open(os.path.join(dirpath, "cgroup.procs")) as f:
                        out.update(int(x) for x in f.read().split())
                except OSError:
                    pass
            if out:
                break   # one hierarchy that has them is enough
        return sorted(out)

    # --- freezing -------------------------------------------------------------------
    def _freezer(self):
        for key, path in self.paths.items():
            if "freezer" in key.split(","):
                return "v1", path
        u = self.paths.get("unified")
        if u and os.path.exists(os.path.join(u, "cgroup.freeze")):
            return "v2", u
        return None, None

    def is_frozen(self):
        kind, path = self._freezer()
        try:
            if kind == "v1":
                with open(os.path.join(path, "freezer.state")) as f:
                    return f.read().strip() == "FROZEN"
            if kind == "v2":
                with open(os.path.join(path, "cgroup.freeze")) as f:
                    return f.read().strip() == "1"
        except OSError:
            pass
        return False

    def freeze(self, on=True, timeout=10.0):
        kind, path = self._freezer()
        if kind is None:
            raise HutchError("cannot freeze: no freezer controller is available")
        if kind == "v1":
            from .v1 import set_frozen
        else:
            from .v2 import set_frozen
        set_frozen(path, on, timeout)

    # --- removal --------------------------------------------------------------------
    def kill_all(self, sig=9):
        """Freezes, signals every process, thaws: no process escapes by forking."""
        kind, _ = self._freezer()
        if kind:
            try:
                self.freeze(True, 2.0)
            except (HutchError, OSError):   # e.g. the freezer directory is gone
                kind = None
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if kind:
            self.freeze(False)

    def destroy(self, timeout=5.0):
        """Kills what remains, then removes the directories hutch made.  When the
        container is already empty (its init gone, and every process with it),
        one rmdir per directory does it: the freezer's goes first, and if it is
        busy the full way runs (kill frozen, wait, remove trees)."""
        first = self.paths.get("freezer") or next(iter(self.paths.values()), None)
        empty = False
        if first:
            try:
                os.rmdir(first)
                empty = True
            except FileNotFoundError:
                empty = True
            except OSError:
                pass
        errors = []
        if empty:
            for path in sorted(self.paths.values(), key=len, reverse=True):
                self._rmdir_tree(path, errors, quick=True)
        if not empty or errors:
            errors = []
            if self.pids():
                self.kill_all(9)
                deadline = time.monotonic() + timeout
                while self.pids() and time.monotonic() < deadline:
                    time.sleep(0.005)
            for path in sorted(self.paths.values(), key=len, reverse=True):
                self._rmdir_tree(path, errors)
        gone = set()
        for d in reversed(self.created):
            if d in self.paths.values():
                continue
            try:
                os.rmdir(d)
                gone.add(d)
            except FileNotFoundError:
                pass
            except OSError:
                pass    # shared parent still used by another container
        # hutch's own parent of containers without a cgroupsPath (/hutch) is
        # made by whichever create came first; the last delete removes it,
        # whoever made it (else one that raced another create stays for good)
        for key, path in self.paths.items():
            parent = os.path.dirname(path)
            if parent not in gone and os.path.basename(parent) == "hutch" and \
                    os.path.dirname(parent) == (self.mountpoints.get(key) or "").rstrip("/"):
                try:
                    os.rmdir(parent)
                except OSError:
                    pass    # not empty: another container still uses it
        if errors:
            raise HutchError("remove cgroup: " + "; ".join(errors))

    def destroy_created(self):
        """A failed create's undo: only the directories this create made go, and
        only what is in them is killed.  A cgroup that was there before (made by
        an engine, or by a test) and whatever else runs in it are left alone."""
        mine = {k: p for k, p in self.paths.items() if p in self.created}
        Manager(mine, self.created, self.layout, self.mountpoints).destroy()

    def _rmdir_tree(self, path, errors, quick=False):
        try:
            os.rmdir(path)
            return
        except FileNotFoundError:
            return
        except OSError as e:
            if quick:       # busy: tasks or sub-cgroups; the caller takes the full way
                errors.append(f"{path}: {e.strerror}")
                return
        if not os.path.isdir(path):
            return
        for dirpath, dirs, _files in os.walk(path, topdown=False):
            for attempt in range(200):
                try:
                    os.rmdir(dirpath)
                    break
                except FileNotFoundError:
                    break
                except OSError as e:
                    import errno
                    if e.errno != errno.EBUSY or attempt == 199:   # tasks still exiting
                        errors.append(f"{dirpath}: {e.strerror}")
                        break
                    time.sleep(0.005)


def _join_error(path, e):
    return HutchError(f"join cgroup {path}: {e.strerror}", e.errno)


def join_self(paths, defer_v2=False, error=_join_error):
    """Moves the calling process into the cgroups ``paths`` (key -> directory).
    The caller must be single-threaded (the whole create and exec path is).

    v1: "0" written to ``tasks`` moves the calling thread, and for the calling
    thread alone the kernel does not write-lock cgroup_threadgroup_rwsem, whose
    first writer waits for an RCU grace period (10-15 ms on every create here;
    writing a pid to cgroup.procs always takes it).  For a single-threaded
    process that thread is the whole process.  Where ``tasks`` is refused (a
    delegation that gave only cgroup.procs) cgroup.procs is written instead.
    v2 has no per-thread way in across cgroups: ``defer_v2`` leaves it out and
    returns it opened (:func:`open_v2`), for the next child to be born there
    (:meth:`hutch.linux.kernel.Kernel.fork_into_cgroup`); otherwise "0" goes to
    its cgroup.procs, grace period included.  ``error(path, OSError)`` makes
    the exception raised (by default :meth:`Manager.add`'s words)."""
    v2 = None
    for key, path in paths.items():
        if key == "unified" and defer_v2:
            v2 = path
            continue
        names = ("cgroup.procs",) if key == "unified" else ("tasks", "cgroup.procs")
        for i, name in enumerate(names):
            try:
                fd = os.open(os.path.join(path, name), os.O_WRONLY | os.O_CLOEXEC)
                try:
                    os.write(fd, b"0")
                finally:
                    os.close(fd)
                break
            except OSError as e:
                import errno
                if i + 1 < len(names) and e.errno in (errno.EPERM, errno.EACCES):
                    continue
                raise error(path, e) from None
    return open_v2(v2, error) if v2 else None


def open_v2(path, error=_join_error):
    """(O_PATH fd of the v2 cgroup ``path``, its cgroup.procs open for writing,
    ``path``): what a child needs to be born there, and the way in by writing
    "0" where the kernel refuses that (both fds still work once the caller has
    joined other namespaces).  Both are close-on-exec."""
    try:
        dfd = os.open(path, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    except OSError as e:
        raise error(path, e) from None
    try:
        pfd = os.open(os.path.join(path, "cgroup.procs"), os.O_WRONLY | os.O_CLOEXEC)
    except OSError as e:
        os.close(dfd)
        raise error(path, e) from None
    return dfd, pfd, path
