"""Building the container's filesystem view, inside its new mount namespace.

Order (each step rolls back with the mount namespace itself if a later one fails):
  1. propagation of "/" (rootfsPropagation, default rslave) so nothing leaks out;
  2. the rootfs bound onto itself, so it is a mount point for pivot_root;
  3. the config's mounts, in order, each destination resolved inside the rootfs;
  4. /dev: the default devices plus linux.devices, and the /dev symlinks;
  5. pivot_root (or MS_MOVE + chroot with --no-pivot);
  6. maskedPaths, readonlyPaths, then root.readonly.
"""

import errno
import os
import stat

from ..errors import HutchError
from ..linux import kernel as K
from . import mounts as M
from .paths import O_PATH, ensure_target, is_dir_fd, mkdir_all, open_in_root

DEFAULT_DEVICES = (
    # path, type, major, minor, mode
    ("/dev/null", "c", 1, 3, 0o666), ("/dev/zero", "c", 1, 5, 0o666),
    ("/dev/full", "c", 1, 7, 0o666), ("/dev/random", "c", 1, 8, 0o666),
    ("/dev/urandom", "c", 1, 9, 0o666), ("/dev/tty", "c", 5, 0, 0o666),
)
DEV_LINKS = (("/proc/self/fd", "/dev/fd"), ("/proc/self/fd/0", "/dev/stdin"),
             ("/proc/self/fd/1", "/dev/stdout"), ("/proc/self/fd/2", "/dev/stderr"))
_PROP = {"private": K.MS_PRIVATE, "shared": K.MS_SHARED, "slave": K.MS_SLAVE,
         "unbindable": K.MS_UNBINDABLE}


def propagation_flags(name, default=K.MS_SLAVE | K.MS_REC):
    if not name:
        return default
    rec = K.MS_REC if name.startswith("r") and name[1:] in _PROP else 0
    return _PROP[name[1:] if rec else name] | rec


class Rootfs:
    """Carries the rootfs fd and the facts the steps need."""

    def __init__(self, k, plan):
        self.k = k
        self.plan = plan
        self.rootfd = -1
        self.userns = plan["userns"]
        self.devnull = -1
        self.dev_ro = False     # /dev asked read-only: made so once it is filled

    # --- 1 and 2 -------------------------------------------------------------
    def prepare(self):
        k, plan = self.k, self.plan
        root = plan["root"]
        prop = propagation_flags(plan["rootfs_propagation"])
        # shared and unbindable are set after pivot_root (the rootfs could not be
        # bound onto itself under an unbindable /); before it, slave
        first = prop if not prop & (K.MS_SHARED | K.MS_UNBINDABLE) else \
            K.MS_SLAVE | K.MS_REC
        k.mount(None, "/", None, first, what="set propagation of /")
        if os.path.realpath(root) == "/":
            # pivot_root cannot stack the host's own root on itself: stage it on a
            # private tmpfs over the state directory (invisible outside this namespace)
            stage = self.plan["state_dir"]
            k.mount("tmpfs", stage, "tmpfs", K.MS_NOSUID | K.MS_NODEV, "mode=700",
                    what="mount a staging tmpfs")
            target = os.path.join(stage, "root")
            os.mkdir(target, 0o755)
            k.mount("/", target, None, K.MS_BIND | K.MS_REC, what="bind the host's root")
            root = target
        else:
            k.mount(root, root, None, K.MS_BIND | K.MS_REC, what=f"bind rootfs {root}")
        self.rootfd = os.open(root, O_PATH | os.O_DIRECTORY)
        # the host's /dev/null, checked, for masking files (CVE-2025-31133 class)
        self.devnull = os.open("/dev/null", O_PATH)
        st = os.fstat(self.devnull)
        if not stat.S_ISCHR(st.st_mode) or os.major(st.st_rdev) != 1 or \
                os.minor(st.st_rdev) != 3:
            raise HutchError("the host's /dev/null is not the null device")

    # --- 3 -------------------------------------------------------------------
    def do_mounts(self):
        for m in self.plan["mounts"]:
            self.mount_one(m)

    def mount_attached(self):
        """The mounts attachments asked for (detached clones, received ready):
        each goes on its destination read-only, nosuid, nodev and noexec, after
        the config's own mounts (so over a file of the container's /proc)."""
        k = self.k
        for dest, fd in self.plan.pop("attached_fds", None) or ():
            what = f"mount the attachment's {dest}"
            try:
                tfd = ensure_target(k, self.rootfd, dest,
                                    stat.S_ISDIR(os.fstat(fd).st_mode))
                try:
                    o = M.parse_options(["ro", "nosuid", "nodev", "noexec"], "bind")
                    M.set_attrs(k, fd, o, what)
                    M.attach(k, fd, tfd, o, what)
                finally:
                    os.close(tfd)
            except OSError as e:
                raise HutchError.from_os(what, e) from None
            finally:
                os.close(fd)

    def mount_one(self, m):
        k = self.k
        dest, fstype, src, opts = m["destination"], m["type"] or "", m["source"], m["options"]
        o = M.parse_options(opts, fstype)
        what = f"mount {fstype or 'bind'} {src or ''} on {dest}".replace("  ", " ")
        if dest.rstrip("/") == "/dev" and o.attr_set & K.MOUNT_ATTR_RDONLY:
            # devpts, mqueue, shm and the device nodes go in /dev first: it
            # becomes read-only at the end (runc does the same)
            o.attr_set &= ~K.MOUNT_ATTR_RDONLY
            self.dev_ro = True
        if fstype == "bind" or (o.bind and fstype in ("", "none", "bind")):
            o.bind = True
        try:
            if o.bind:
                self._bind(dest, src, o, what)
            elif fstype == "cgroup" or fstype == "cgroup2":
                self._cgroup(dest, fstype, o, what)
            else:
                if fstype in ("proc", "sysfs"):
                    self._ordinary_dir(dest, fstype)
                tfd = ensure_target(k, self.rootfd, dest, True)
                try:
                    try:
                        mfd = M.fs_mount(k, fstype, src, o, tfd, what)
                    except OSError as e:
                        mfd = self._fallback(e, dest, fstype, src, o, tfd, what)
                    os.close(mfd)
                finally:
                    os.close(tfd)
        except OSError as e:
            raise HutchError.from_os(what, e) from None

    def _ordinary_dir(self, dest, fstype):
        """proc and sysfs go on a real directory only: a symlink there (an image
        with /proc -> somewhere) would let the mount land where the image says.
        runc's words."""
        parent, _, name = dest.rstrip("/").rpartition("/")
        try:
            pfd = open_in_root(self.k, self.rootfd, parent or "/")
        except OSError:
            return      # made (as directories) by ensure_target
        try:
            st = os.stat(name, dir_fd=pfd, follow_symlinks=False)
        except OSError:
            return
        finally:
            os.close(pfd)
        if not stat.S_ISDIR(st.st_mode):
            raise HutchError(f"filesystem {fstype!r} must be mounted on ordinary "
                             f"directory: {dest} is not one", errno.ENOTDIR)

    def _fallback(self, e, dest, fstype, src, o, tfd, what):
        k = self.k
        if fstype == "sysfs" and e.errno == errno.EPERM:
            # no sysfs of our own without a network namespace we own: bind the host's
            o2 = M.parse_options(["rbind", "nosuid", "nodev", "noexec", "ro"])
            return M.bind_mount(k, K.AT_FDCWD, "/sys", o2, tfd, what)
        if fstype == "mqueue" and e.errno in (errno.EPERM, errno.EACCES):
            o2 = M.parse_options(["rbind", "nosuid", "nodev", "noexec"])
            return M.bind_mount(k, K.AT_FDCWD, "/dev/mqueue", o2, tfd, what)
        if fstype == "devpts" and e.errno == errno.EINVAL and \
                any(k_ == "gid" for k_, _ in o.data):
            # the tty group is not mapped in the user namespace
            o.data = [(a, b) for a, b in o.data if a != "gid"]
            return M.fs_mount(k, fstype, src, o, tfd, what)
        raise e

    def _bind(self, dest, src, o, what):
        k = self.k
        if not src:
            raise HutchError(f"{what}: a bind mount needs a source")
        if not src.startswith("/"):
            src = os.path.join(self.plan["bundle"], src)
        # opened by the hutch command (a source this user namespace cannot reach)
        sfd = (self.plan.get("source_fds") or {}).get(src)
        try:
            st = os.fstat(sfd) if sfd is not None else os.stat(src)
        except OSError as e:
            raise HutchError.from_os(f"{what}: source", e) from None
        tfd = ensure_target(k, self.rootfd, dest, stat.S_ISDIR(st.st_mode))
        try:
            if stat.S_ISDIR(st.st_mode) != is_dir_fd(tfd):
                raise HutchError(f"{what}: the source and the destination differ in "
                                 "type (one is a directory, the other is not)")
            if sfd is not None:
                os.close(M.bind_mount(k, sfd, "", o, tfd, what))
            else:
                os.close(M.bind_mount(k, K.AT_FDCWD, src, o, tfd, what))
        finally:
            os.close(tfd)

    def _cgroup(self, dest, fstype, o, what):
        """A cgroup mount shows the container's own cgroup as its root."""
        k = self.k
        paths = self.plan.get("cgroup_paths") or {}
        tfd = ensure_target(k, self.rootfd, dest, True)
        ro = o.readonly
        bo = M.parse_options(["bind", "nosuid", "nodev", "noexec"] + (["ro"] if ro else []))
        try:
            if set(paths) <= {"unified"}:
                # pure cgroup v2 (or no hierarchy at all)
                if self.plan["new_cgroupns"] or not paths:
                    os.close(M.fs_mount(k, "cgroup2", "cgroup2", o, tfd, what))
                else:
                    os.close(M.bind_mount(k, K.AT_FDCWD, paths["unified"], bo, tfd, what))
                return
            # v1 or hybrid: a tmpfs with one directory per hierarchy
            to = M.parse_options(["nosuid", "nodev", "noexec", "mode=755"])
            os.close(M.fs_mount(k, "tmpfs", "tmpfs", to, tfd, what))
            for key, path in sorted(paths.items()):
                name = key[5:] if key.startswith("name=") else key
                sub = f"{dest}/{name}"
                sfd = mkdir_all(k, self.rootfd, sub)
                try:
                    os.close(M.bind_mount(k, K.AT_FDCWD, path, bo, sfd, f"{what}/{name}"))
                finally:
                    os.close(sfd)
                if "," in name:
                    for ctrl in name.split(","):
                        try:
                            self._symlink_in(f"{dest}/{ctrl}", name)
                        except FileExistsError:
                            pass
            if ro:
                rfd = open_in_root(k, self.rootfd, dest)
                try:
                    k.mount_setattr(rfd, "", K.AT_EMPTY_PATH, K.MOUNT_ATTR_RDONLY,
                                    what=f"{what}: read-only")
                finally:
                    os.close(rfd)
        finally:
            os.close(tfd)

    def _symlink_in(self, path, target):
        parent, name = os.path.split(path)
        pfd = mkdir_all(self.k, self.rootfd, parent)
        try:
            os.symlink(target, name, dir_fd=pfd)
        finally:
            os.close(pfd)

    # --- 4 -------------------------------------------------------------------
    def make_devices(self):
        k = self.k
        devs = list(DEFAULT_DEVICES)
        seen = {d[0] for d in self.plan["devices"]}
        devs = [(p, t, ma, mi, mode, None, None) for p, t, ma, mi, mode in devs
                if p not in seen]
        devs += [tuple(d) for d in self.plan["devices"]]
        for path, t, major, minor, mode, uid, gid in devs:
            what = f"create device {path}"
            try:
                self._device(path, t, major, minor, mode, uid, gid)
            except OSError as e:
                raise HutchError.from_os(what, e) from None
        for target, link in DEV_LINKS:
            try:
                self._symlink_in(link, target)
            except FileExistsError:
                pass
        # /dev/ptmx points at the container's own devpts instance
        try:
            pts = open_in_root(k, self.rootfd, "/dev/pts/ptmx")
            os.close(pts)
            dfd = mkdir_all(k, self.rootfd, "/dev")
            try:
                try:
                    os.unlink("ptmx", dir_fd=dfd)
                except FileNotFoundError:
                    pass
                os.symlink("pts/ptmx", "ptmx", dir_fd=dfd)
            finally:
                os.close(dfd)
        except FileNotFoundError:
            pass

    def _device(self, path, t, major, minor, mode, uid, gid):
        k = self.k
        parent, name = os.path.split(path)
        pfd = mkdir_all(k, self.rootfd, parent)
        try:
            fmt = {"c": stat.S_IFCHR, "u": stat.S_IFCHR, "b": stat.S_IFBLK,
                   "p": stat.S_IFIFO}[t]
            if mode is None:
                mode = 0o666
            try:
                st = os.lstat(name, dir_fd=pfd)
            except FileNotFoundError:
                st = None
            if st is not None:
                if stat.S_ISLNK(st.st_mode) or stat.S_ISDIR(st.st_mode):
                    raise OSError(errno.EEXIST,
                                  f"{path} already exists and is not a device")
                os.unlink(name, dir_fd=pfd)
            if self.userns and t != "p":
                # mknod is not allowed in a user namespace: bind the host's node
                self._bind_node(pfd, name, path)
                return
            try:
                k.mknod(name, fmt | (mode & 0o7777), os.makedev(major, minor),
                        dir_fd=pfd, what=f"create device {path}")
            except PermissionError:
                if t == "p":
                    raise
                # the device cgroup does not allow mknod of this node (its rules
                # are in force before the init starts): bind the host's, as runc
                # does; whether it may be opened is still the cgroup's decision
                self._bind_node(pfd, name, path)
                return
            os.chmod(name, mode & 0o7777, dir_fd=pfd)
            if uid is not None or gid is not None:
                os.chown(name, uid if uid is not None else -1,
                         gid if gid is not None else -1, dir_fd=pfd, follow_symlinks=False)
        finally:
            os.close(pfd)

    def _bind_node(self, pfd, name, path):
        fd = os.open(name, os.O_CREAT | os.O_EXCL | os.O_WRONLY | os.O_NOFOLLOW |
                     os.O_CLOEXEC, 0o600, dir_fd=pfd)
        os.close(fd)
        tfd = open_in_root(self.k, self.rootfd, path)
        try:
            o = M.parse_options(["bind"])
            os.close(M.bind_mount(self.k, K.AT_FDCWD, path, o, tfd, f"bind {path}"))
        finally:
            os.close(tfd)

    def console(self, slave_fd):
        """Binds the terminal's slave onto /dev/console."""
        k = self.k
        tfd = ensure_target(k, self.rootfd, "/dev/console", False)
        try:
            o = M.parse_options(["bind"])
            os.close(M.bind_mount(k, slave_fd, "", o, tfd, "bind the console"))
        finally:
            os.close(tfd)

    # --- 6 (before the pivot, through the rootfs fd) ---------------------------------
    def mask_paths(self):
        k = self.k
        for path in self.plan["masked_paths"]:
            try:
                tfd = open_in_root(k, self.rootfd, path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            what = f"mask {path}"
            try:
                if is_dir_fd(tfd):
                    o = M.parse_options(["ro", "nosuid", "nodev", "noexec",
                                         "mode=755"])
                    os.close(M.fs_mount(k, "tmpfs", "tmpfs", o, tfd, what))
                else:
                    os.close(M.bind_mount(k, self.devnull, "", M.parse_options(["bind"]),
                                          tfd, what))
            except OSError as e:
                raise HutchError.from_os(what, e) from None
            finally:
                os.close(tfd)

    def dev_readonly(self):
        """/dev read-only, when the config asked for it (after everything that
        goes into it, the console included)."""
        if not self.dev_ro:
            return
        fd = open_in_root(self.k, self.rootfd, "/dev")
        try:
            self.k.mount_setattr(fd, "", K.AT_EMPTY_PATH, K.MOUNT_ATTR_RDONLY,
                                 what="make /dev read-only")
        finally:
            os.close(fd)

    def readonly_paths(self):
        k = self.k
        for path in self.plan["readonly_paths"]:
            try:
                tfd = open_in_root(k, self.rootfd, path)
            except (FileNotFoundError, NotADirectoryError):
                continue
            what = f"make {path} read-only"
            try:
                o = M.parse_options(["rbind", "rro", "nosuid", "nodev", "noexec"])
                os.close(M.bind_mount(k, tfd, "", o, tfd, what))
            except OSError as e:
                raise HutchError.from_os(what, e) from None
            finally:
                os.close(tfd)

    # --- 5 -------------------------------------------------------------------
    def enter(self, no_pivot):
        k = self.k
        os.fchdir(self.rootfd)
        if no_pivot:
            self._hide_host_proc_and_sys()
            k.mount(".", "/", None, K.MS_MOVE, what="move the rootfs to /")
            k.chroot(".", what="chroot into the rootfs")
        else:
            k.pivot_root(".", ".")
            k.umount2(".", K.MNT_DETACH)
        os.chdir("/")
        prop = self.plan["rootfs_propagation"]
        if prop:
            k.mount(None, "/", None, propagation_flags(prop),
                    what=f"set rootfs propagation {prop}")
        if self.plan["root_readonly"]:
            k.mount_setattr(K.AT_FDCWD, "/", 0, K.MOUNT_ATTR_RDONLY,
                            what="make the root read-only")

    def _hide_host_proc_and_sys(self):
        """Without pivot_root the host's mounts stay in the container's mount
        namespace, below its root.  A fully visible procfs or sysfs among them
        would let a process in a new user namespace mount a fresh, unmasked one
        (the kernel allows that only where one is visible already): detach each
        one outside the rootfs, or cover it with an empty read-only tmpfs where
        it cannot be detached (runc does the same)."""
        k = self.k
        root = os.readlink(f"/proc/self/fd/{self.rootfd}").rstrip("/") + "/"
        found = []
        with open("/proc/self/mountinfo") as f:
            for line in f:
                left, _, right = line.partition(" - ")
                mp = left.split()[4].replace("\\040", " ")
                fstype = right.split()[0] if right else ""
                if fstype in ("proc", "sysfs") and not (mp + "/").startswith(root):
                    found.append(mp)
        for mp in sorted(found, key=len, reverse=True):
            try:
                k.umount2(mp, K.MNT_DETACH)
            except OSError:
                try:
                    k.mount("tmpfs", mp, "tmpfs", K.MS_RDONLY | K.MS_NOSUID |
                            K.MS_NODEV | K.MS_NOEXEC, "size=0,mode=0",
                            what=f"cover the host's {mp}")
                except OSError:
                    pass        # already gone with a detached parent

    def close(self):
        for fd in (self.rootfd, self.devnull):
            if fd >= 0:
                os.close(fd)
        self.rootfd = self.devnull = -1
