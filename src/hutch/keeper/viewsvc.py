"""The /proc and /sys views of one container, served: a :class:`~.views.Views`
behind a :class:`~.fuse.FuseServer` mounted on ``keeper/views`` in the
container's state directory (the host's mount namespace).  What the container
sees are read-only binds of those files over its own (``TARGETS``), which the
keeper's attachment asks create for (:attr:`Context.mounts`).

Reads are answered from the cgroup's files at open: never anything slower, so a
read cannot hang on the keeper; and a view follows `hutch update` at once.  If
the keeper dies, the kernel answers reads with ENOTCONN at once.
"""

import os

SAMPLE_EVERY = 5.0      # s, the load average's period


class ViewService:
    def __init__(self, keeper_dir, cgroup_paths, init_pid):
        from .fuse import FuseServer
        from .views import Views
        self.views = Views(cgroup_paths, init_pid)
        self.server = FuseServer(self.views.files())
        self.mountpoint = os.path.join(keeper_dir, "views")

    def start(self):
        """Mounts the views; returns [(host path, container path)] to bind.
        The server must then be served (:meth:`serve_one`) before anything
        touches the mount."""
        from .views import TARGETS
        os.makedirs(self.mountpoint, 0o755, exist_ok=True)
        self.server.mount(self.mountpoint)
        return [(os.path.join(self.mountpoint, name), TARGETS[name])
                for name in self.views.files()]

    def fileno(self):
        return self.server.fileno()

    def serve_one(self):
        return self.server.serve_one()

    def sample(self):
        self.views.sample()

    def stop(self):
        self.server.unmount()
        try:
            os.rmdir(self.mountpoint)
        except OSError:
            pass

    def serve_in_thread(self):
        """Serves from a thread of this process until :meth:`stop` (the keeper of
        a detached sandbox, whose main thread makes the container meanwhile)."""
        import threading
        t = threading.Thread(target=self._serve_forever, name="hutch-views",
                             daemon=True)
        t.start()
        return t

    def _serve_forever(self):
        import select
        import time
        from .fuse import Unmounted
        next_sample = time.monotonic()
        while True:
            fd = self.fileno()
            if fd < 0:
                return
            now = time.monotonic()
            if now >= next_sample:
                self.sample()
                next_sample = now + SAMPLE_EVERY
            try:
                r, _, _ = select.select([fd], [], [], max(0.0, next_sample - now))
                if r:
                    while self.serve_one():
                        pass
            except (Unmounted, OSError, ValueError):
                return


def unmount_left(keeper_dir):
    """The undo's side: a views mount a dead keeper left (lazily detached)."""
    from ..linux import kernel as K
    path = os.path.join(keeper_dir, "views")
    try:
        K.kernel().umount2(path, K.MNT_DETACH)
    except OSError:
        pass
    try:
        os.rmdir(path)
    except OSError:
        pass
