"""Mount options and the mount operations, on the new mount API.

Every mount is built detached and then attached to an fd of its target:
- a filesystem: fsopen -> fsconfig (one call per data option) -> fsmount(attrs);
- a bind: open_tree(OPEN_TREE_CLONE [| AT_RECURSIVE]) -> mount_setattr(attrs);
- then move_mount(..., target_fd, MOVE_MOUNT_T_EMPTY_PATH), and the propagation is
  set on the attached mount through the same fd.
Flags are applied before the mount becomes visible, and no path is resolved twice.
"""

import errno
import os

from ..linux import kernel as K

# option -> (attr to set, attr to clear); mount-level flags
_ATTRS = {
    "ro": (K.MOUNT_ATTR_RDONLY, 0), "rw": (0, K.MOUNT_ATTR_RDONLY),
    "nosuid": (K.MOUNT_ATTR_NOSUID, 0), "suid": (0, K.MOUNT_ATTR_NOSUID),
    "nodev": (K.MOUNT_ATTR_NODEV, 0), "dev": (0, K.MOUNT_ATTR_NODEV),
    "noexec": (K.MOUNT_ATTR_NOEXEC, 0), "exec": (0, K.MOUNT_ATTR_NOEXEC),
    "nodiratime": (K.MOUNT_ATTR_NODIRATIME, 0), "diratime": (0, K.MOUNT_ATTR_NODIRATIME),
    "nosymfollow": (K.MOUNT_ATTR_NOSYMFOLLOW, 0), "symfollow": (0, K.MOUNT_ATTR_NOSYMFOLLOW),
}
_ATIME = {"noatime": K.MOUNT_ATTR_NOATIME, "relatime": K.MOUNT_ATTR_RELATIME,
          "strictatime": K.MOUNT_ATTR_STRICTATIME}
_ATIME_OFF = ("atime", "norelatime", "nostrictatime")
# superblock flags, passed to fsconfig as flags
_SB_FLAGS = ("sync", "async", "dirsync", "mand", "nomand", "lazytime", "nolazytime",
             "silent", "loud", "iversion", "noiversion")
_PROPAGATION = {
    "private": K.MS_PRIVATE, "shared": K.MS_SHARED, "slave": K.MS_SLAVE,
    "unbindable": K.MS_UNBINDABLE,
}
# options hutch understands that are neither flags nor data
_IGNORED = ("defaults", "remount", "tmpcopyup", "idmap", "ridmap", "copy-symlink")


class MountOptions:
    __slots__ = ("attr_set", "attr_clr", "rec_attr_set", "rec_attr_clr",
                 "propagation", "rec_propagation", "bind", "recursive", "sb_flags",
                 "data", "atime")

    def __init__(self):
        self.attr_set = self.attr_clr = 0
        self.rec_attr_set = self.rec_attr_clr = 0
        self.propagation = 0
        self.rec_propagation = False
        self.bind = self.recursive = False
        self.sb_flags = []
        self.data = []          # (key, value or None)
        self.atime = None

    @property
    def readonly(self):
        return bool((self.attr_set | self.rec_attr_set) & K.MOUNT_ATTR_RDONLY)


def parse_options(options, fstype=None):
    o = MountOptions()
    for opt in options:
        if opt in ("bind", "rbind"):
            o.bind = True
            o.recursive = o.recursive or opt == "rbind"
        elif opt in _ATTRS:
            s, c = _ATTRS[opt]
            o.attr_set = (o.attr_set | s) & ~c
            o.attr_clr = (o.attr_clr | c) & ~s
        elif opt.startswith("r") and opt[1:] in _ATTRS and opt not in ("ro", "rw"):
            s, c = _ATTRS[opt[1:]]
            o.rec_attr_set = (o.rec_attr_set | s) & ~c
            o.rec_attr_clr = (o.rec_attr_clr | c) & ~s
        elif opt in ("rro", "rrw"):
            s, c = _ATTRS[opt[1:]]
            o.rec_attr_set = (o.rec_attr_set | s) & ~c
            o.rec_attr_clr = (o.rec_attr_clr | c) & ~s
        elif opt in _ATIME:
            o.atime = _ATIME[opt]
        elif opt in _ATIME_OFF:
            o.atime = None
        elif opt in _PROPAGATION:
            o.propagation = _PROPAGATION[opt]
        elif opt.startswith("r") and opt[1:] in _PROPAGATION:
            o.propagation = _PROPAGATION[opt[1:]]
            o.rec_propagation = True
        elif opt in _SB_FLAGS:
            o.sb_flags.append(opt)
        elif opt in _IGNORED:
            continue
        else:
            k, eq, v = opt.partition("=")
            o.data.append((k, v if eq else None))
    return o


def mount_attrs(o):
    attrs = o.attr_set
    if o.atime is not None:
        attrs = (attrs & ~K.MOUNT_ATTR__ATIME) | o.atime
    return attrs


def fs_mount(k, fstype, source, o, target_fd, what):
    """Mounts a new filesystem instance on target_fd; returns the mount fd."""
    fsfd = k.fsopen(fstype)
    try:
        if source:
            try:
                k.fsconfig(fsfd, 1, "source", source, what=f"{what}: source")
            except OSError as e:
                if e.errno != errno.EINVAL:     # some filesystems take no source
                    raise
        for flag in o.sb_flags:
            k.fsconfig(fsfd, 0, flag, None, what=f"{what}: option {flag}")
        for key, val in o.data:
            if val is None:
                k.fsconfig(fsfd, 0, key, None, what=f"{what}: option {key}")
            else:
                k.fsconfig(fsfd, 1, key, val, what=f"{what}: option {key}={val}")
        k.fsconfig(fsfd, 6, what=what)   # FSCONFIG_CMD_CREATE
        mfd = k.fsmount(fsfd, mount_attrs(o))
    finally:
        os.close(fsfd)
    try:
        attach(k, mfd, target_fd, o, what)
    except BaseException:
        os.close(mfd)
        raise
    return mfd


def bind_mount(k, src_dirfd, src_path, o, target_fd, what):
    """Binds src (a path, or an fd with src_path '') onto target_fd."""
    flags = K.OPEN_TREE_CLONE | K.OPEN_TREE_CLOEXEC
    if o.recursive:
        flags |= K.AT_RECURSIVE
    if src_path == "":
        flags |= K.AT_EMPTY_PATH
    tfd = k.open_tree(src_dirfd, src_path, flags, what=f"{what}: open source")
    try:
        set_attrs(k, tfd, o, what)
        attach(k, tfd, target_fd, o, what)
    except BaseException:
        os.close(tfd)
        raise
    return tfd


def set_attrs(k, mfd, o, what):
    attrs = mount_attrs(o)
    if attrs or o.attr_clr:
        k.mount_setattr(mfd, "", K.AT_EMPTY_PATH, attrs, o.attr_clr |
                        (K.MOUNT_ATTR__ATIME if o.atime is not None else 0),
                        what=f"{what}: set mount flags")
    if o.rec_attr_set or o.rec_attr_clr:
        k.mount_setattr(mfd, "", K.AT_EMPTY_PATH | K.AT_RECURSIVE, o.rec_attr_set,
                        o.rec_attr_clr, what=f"{what}: set recursive mount flags")


def attach(k, mfd, target_fd, o, what):
    k.move_mount(mfd, "", target_fd, "", K.MOVE_MOUNT_F_EMPTY_PATH |
                 K.MOVE_MOUNT_T_EMPTY_PATH, what=f"{what}: attach")
    if o.propagation:
        k.mount_setattr(mfd, "", K.AT_EMPTY_PATH |
                        (K.AT_RECURSIVE if o.rec_propagation else 0), 0, 0,
                        o.propagation, what=f"{what}: set propagation")
