"""The /proc and /sys views of one container, served: a :class:`~.views.Views`
behind a :class:`~.fuse.FuseServer` mounted on ``keeper/views`` in the
container's state directory (the host's mount namespace), and sysinfo(2)
answered through seccomp user notification (:mod:`.sysinfo`, listening on
``keeper/seccomp.sock``).  What the container sees are read-only binds of the
view files over its own (``TARGETS``), which the keeper's attachment asks
create for (:attr:`Context.mounts`).

Reads are answered from the cgroup's files at open: never anything slower, so a
read cannot hang on the keeper; and a view follows `hutch update` at once.  If
the keeper dies, the kernel answers reads with ENOTCONN and sysinfo with ENOSYS
at once.
"""

import os

SAMPLE_EVERY = 5.0      # s, the load average's period


def listener_path(keeper_dir):
    return os.path.join(keeper_dir, "seccomp.sock")


class ViewService:
    def __init__(self, keeper_dir, cgroup_paths, init_pid):
        from .fuse import FuseServer
        from .views import Views
        self.dir = keeper_dir
        self.views = Views(cgroup_paths, init_pid)
        self.server = FuseServer(self.views.files())
        self.mountpoint = os.path.join(keeper_dir, "views")
        self.listener = None
        self.notify = set()

    def start(self):
        """Mounts the views and listens for seccomp notify fds; returns
        [(host path, container path)] to bind.  The server must then be served
        (:meth:`serve`) before anything touches the mount."""
        from .sock import listen
        from .views import TARGETS
        os.makedirs(self.mountpoint, 0o755, exist_ok=True)
        self.listener = listen(listener_path(self.dir), backlog=16)
        self.server.mount(self.mountpoint)
        return [(os.path.join(self.mountpoint, name), TARGETS[name])
                for name in self.views.files()]

    def serve(self, extra=(), on_extra=None, stop=lambda: False):
        """The loop: FUSE requests, new notify fds, notifications, the load
        average's samples; and ``extra`` fds, handed to ``on_extra(fd)`` (which
        returns True to stop).  Ends when the views are unmounted or told to."""
        import select
        import time
        from . import sysinfo
        from .fuse import Unmounted
        next_sample = time.monotonic()
        while not stop():
            fuse = self.server.fileno()
            if fuse < 0:
                return
            now = time.monotonic()
            if now >= next_sample:
                self.views.sample()
                next_sample = now + SAMPLE_EVERY
            fds = [fuse, self.listener.fileno(), *self.notify, *extra]
            try:
                ready, _, _ = select.select(fds, [], [], max(0.0, next_sample - now))
            except (OSError, ValueError):
                return      # an fd was closed under the loop (stopped)
            for fd in ready:
                try:
                    if fd == fuse:
                        while self.server.serve_one():
                            pass
                    elif fd == self.listener.fileno():
                        nfd = sysinfo.receive_fd(self.listener)
                        if nfd >= 0:
                            self.notify.add(nfd)
                    elif fd in self.notify:
                        if not sysinfo.handle(fd, self.views):
                            self.notify.discard(fd)
                            os.close(fd)
                    elif on_extra is not None and on_extra(fd):
                        return
                except Unmounted:
                    return

    def serve_in_thread(self):
        """Serves from a thread of this process until :meth:`stop` (the keeper of
        a detached sandbox, whose main thread makes the container meanwhile)."""
        import threading
        t = threading.Thread(target=self.serve, name="hutch-views", daemon=True)
        t.start()
        return t

    def stop(self):
        self.server.unmount()
        for fd in list(self.notify):
            try:
                os.close(fd)
            except OSError:
                pass
        self.notify.clear()
        if self.listener is not None:
            self.listener.close()
            self.listener = None
        for name in ("seccomp.sock",):
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError:
                pass
        try:
            os.rmdir(self.mountpoint)
        except OSError:
            pass


def unmount_left(keeper_dir):
    """The undo's side: a views mount a dead keeper left (lazily detached)."""
    from ..linux.fs import unmount_dir
    unmount_dir(os.path.join(keeper_dir, "views"))
