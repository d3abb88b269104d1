"""A recording fake of :class:`hutch.linux.kernel.Kernel`, for unit tests without
root.  Mount calls are recorded as (name, args) tuples; path lookups (openat2) are
served from a real scratch directory, so the rootfs logic runs unchanged."""

import os


class FakeKernel:
    def __init__(self):
        self.calls = []
        self._next = 1000

    def _fd(self):
        # a real fd, so that os.close() in the logic works
        return os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC)

    def _rec(self, name, *args):
        self.calls.append((name,) + args)

    def names(self):
        return [c[0] for c in self.calls]

    def openat2(self, dirfd, path, flags, mode=0, resolve=0, what=None):
        self._rec("openat2", path, resolve)
        return os.open(path, flags, mode, dir_fd=dirfd)

    def fsopen(self, fstype):
        self._rec("fsopen", fstype)
        return self._fd()

    def fsconfig(self, fd, cmd, key=None, value=None, aux=0, what=None):
        self._rec("fsconfig", cmd, key, value)

    def fsmount(self, fd, attrs):
        self._rec("fsmount", attrs)
        return self._fd()

    def open_tree(self, dirfd, path, flags, what=None):
        self._rec("open_tree", path, flags)
        return self._fd()

    def mount_setattr(self, fd, path, flags, attr_set, attr_clr=0, propagation=0,
                      what=None):
        self._rec("mount_setattr", flags, attr_set, attr_clr, propagation)

    def move_mount(self, from_fd, from_path, to_fd, to_path, flags, what=None):
        self._rec("move_mount", flags)

    def mount(self, source, target, fstype, flags, data=None, what=None):
        self._rec("mount", source, target, fstype, flags, data)

    def __getattr__(self, name):
        def rec(*args, **kw):
            self._rec(name, *args)
            return 0
        return rec
