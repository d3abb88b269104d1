"""The cgroup manager: creating, joining, freezing, listing and removing.

One Manager covers every layout.  Per-hierarchy work is delegated to
:mod:`hutch.cgroups.v1` or :mod:`hutch.cgroups.v2`.  A systemd driver would be a
second class with the same methods, chosen by ``--systemd-cgroup``.
"""

import os
import time

from ..errors import HutchError
from . import hierarchies, layout, own_cgroup, resolve_path


class Manager:
    def __init__(self, paths, created=(), layout_name=""):
        self.paths = dict(paths)        # key -> absolute cgroup directory
        self.created = list(created)    # directories hutch made, deepest last
        self.layout = layout_name

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
        return cls(paths, (), layout(hs))

    @classmethod
    def from_state(cls, info):
        return cls(info.get("paths", {}), info.get("created", ()), info.get("layout", ""))

    def to_state(self):
        return {"paths": self.paths, "created": self.created, "layout": self.layout}

    # --- lifecycle ------------------------------------------------------------------
    def create(self):
        for key, path in self.paths.items():
            self._makedirs(path)
            if key != "unified" and "cpuset" in key.split(","):
                from .v1 import init_cpuset
                init_cpuset(path)

    def _makedirs(self, path):
        missing = []
        p = path
        while not os.path.isdir(p):
            missing.append(p)
            p = os.path.dirname(p)
        for d in reversed(missing):
            try:
                os.mkdir(d)
            except FileExistsError:
                continue
            except OSError as e:
                raise HutchError(f"create cgroup {d}: {e.strerror}", e.errno) from None
            self.created.append(d)

    def apply(self, resources):
        """Applies linux.resources.  This version handles the device list (v1);
        every other key gets a clear refusal rather than being ignored."""
        if not resources:
            return
        for key, val in resources.items():
            if key == "devices" or not val:
                continue
            raise HutchError(f"linux.resources.{key}: resource limits are not supported "
                             "by this version of hutch yet", 95)
        devices = resources.get("devices") or []
        if not isinstance(devices, list):
            raise HutchError("linux.resources.devices: expected a list")
        dev = [p for k, p in self.paths.items() if "devices" in k.split(",")]
        if dev:
            from .v1 import apply_devices
            try:
                apply_devices(dev[0], devices)
            except OSError as e:
                raise HutchError(f"apply the device rules to {dev[0]}: {e.strerror}",
                                 e.errno) from None
        elif devices:
            raise HutchError("linux.resources.devices: this host has no v1 devices "
                             "controller, and the cgroup v2 device filter is not "
                             "supported by this version of hutch yet", 95)

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
            except HutchError:
                kind = None
        for pid in self.pids():
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        if kind:
            self.freeze(False)

    def destroy(self, timeout=5.0):
        """Kills what remains, then removes the directories hutch made."""
        if self.pids():
            self.kill_all(9)
            deadline = time.monotonic() + timeout
            while self.pids() and time.monotonic() < deadline:
                time.sleep(0.005)
        errors = []
        for path in sorted(self.paths.values(), key=len, reverse=True):
            self._rmdir_tree(path, errors)
        for d in reversed(self.created):
            if d in self.paths.values():
                continue
            try:
                os.rmdir(d)
            except FileNotFoundError:
                pass
            except OSError:
                pass    # shared parent still used by another container
        if errors:
            raise HutchError("remove cgroup: " + "; ".join(errors))

    def _rmdir_tree(self, path, errors):
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
                    if e.errno != 16 or attempt == 199:   # EBUSY: tasks still exiting
                        errors.append(f"{dirpath}: {e.strerror}")
                        break
                    time.sleep(0.005)
