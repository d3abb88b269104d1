"""The keeper process of a detached front-door container (`hutch sandbox -d`).

It is started by :mod:`.launch` (double fork, new session, re-executed from the
read-only interpreter clone) and then, in this order:

1. becomes a child subreaper and makes the container itself, through the
   library's core, with its own pipes as the container's stdout and stderr and
   itself recorded as the container's attachment (:mod:`.attach`): the init is
   its child, so it learns the exit status, as conmon does;
2. tells the command that started it the container's id, and is on its own;
3. serves until the container has stopped and its output is drained: the
   pipes go into the CRI log (:mod:`.logfile`), datagrams on the container's
   /dev/log into the same log as stream ``syslog``, requests on the control
   socket ("status", "stop"), and the init's exit into ``exit-code``.

It is not in the container's cgroups (pause does not freeze it, the limits do
not count it) and not in its namespaces.  If it dies, the container runs on;
its writers then get EPIPE, and `hutch state` says the keeper is gone.
"""

import os

from ..process import channel

# argv: hutch's source, the spec's socket, and the launcher's site-packages (where
# a network's dependencies are found), searched last as in the launcher
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.extend(sys.argv[3:]); "
         "from hutch.keeper.main import serve; serve(int(sys.argv[2]))")

QUIET = 0.1         # s: a partial line is written as such after this long


def serve(sock):
    """The keeper's main: its spec comes over ``sock`` from :mod:`.launch`."""
    os.set_inheritable(sock, False)
    from ..process import helper
    helper.prestart("create")       # it boots while the keeper reads its spec
    spec = channel.recv(sock)
    if spec is None:
        os._exit(0)
    try:
        k = _Keeper(spec)
        k.make()
    except BaseException as e:      # noqa: BLE001 - reported to the command
        channel.send(sock, {"t": "error", "msg": str(e),
                            "errno": getattr(e, "errno", None)})
        os._exit(1)
    channel.send(sock, {"t": "ready", "id": k.cid, "pid": k.init})
    os.close(sock)
    try:
        k.loop()
    finally:
        k.close()
    os._exit(0)


class _Keeper:
    def __init__(self, spec):
        self.spec = spec
        self.root, self.cid = spec["root"], spec["id"]
        self.state_dir = os.path.join(self.root, self.cid)
        from .sock import keeper_dir
        self.dir = keeper_dir(self.state_dir)
        self.writer = self.devlog = self.control = self.attach = None
        self.pipes = {}         # fd -> stream name
        self.init = self.init_fd = None
        self.master = None          # the terminal's master, with -t
        self.clients = []           # `hutch attach` connections
        self._pending = {}          # fd -> a client's partial frame
        self.stopping = False
        self.views = None

    # --- making the container ------------------------------------------------------
    def make(self):
        import _signal as signal
        from ..container.create import CreateOptions, create
        from ..container.lifecycle import delete, start
        from ..linux import kernel as K
        from ..spec.config import parse_config
        from .attach import Keeper
        for s in (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT):
            signal.signal(s, signal.SIG_IGN)
        K.kernel().prctl(K.PR_SET_CHILD_SUBREAPER, 1)
        spec = self.spec
        raw = spec["config"]    # made by the front door (hutch.sandbox.detached)
        cfg = parse_config(raw, "sandbox")
        null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
        ours = theirs = -1
        if spec.get("tty"):
            # the container's terminal: its master comes over a console socket
            from ..linux.fdpass import socketpair
            ours, theirs = socketpair()
            stdio = None
            opened = (null,)
        else:
            out_r, out_w = os.pipe2(os.O_CLOEXEC)
            err_r, err_w = os.pipe2(os.O_CLOEXEC)
            self.pipes = {out_r: "stdout", err_r: "stderr"}
            stdio = (null, out_w, err_w)
            opened = (null, out_w, err_w)
        keeper = Keeper(self._attached, tty=bool(spec.get("tty")))
        if spec.get("restore"):
            if ours >= 0:
                os.close(ours)
                os.close(theirs)
            try:
                self.init = self._restore(raw, stdio, keeper)
            finally:
                for fd in opened:
                    os.close(fd)
            self.init_fd = os.pidfd_open(self.init)
            return
        try:
            rec = create(self.root, self.cid, "/", CreateOptions(
                rootless=spec["rootless"], stdio=stdio, console_fd=theirs,
                attachments=[keeper] + _network(spec)), cfg=cfg)
        except BaseException:
            if ours >= 0:
                os.close(ours)
            raise
        finally:
            for fd in opened:
                os.close(fd)
            if theirs >= 0:
                os.close(theirs)
        if ours >= 0:
            from ..container.console import recv_master
            self.master = recv_master(ours)
            self.pipes = {self.master: "stdout"}   # a terminal has one stream
        self.init = rec.pid
        try:
            start(self.root, self.cid)
        except BaseException:
            delete(self.root, self.cid, force=True)
            raise
        self.init_fd = os.pidfd_open(self.init)

    def _restore(self, raw, stdio, keeper):
        """The sandbox back from its checkpoint (``spec["restore"]``, the images),
        as this keeper's own: CRIU puts this keeper's new pipes where the dump
        had the old keeper's (inherited as our 1 and 2), and the restored init is
        our child (CRIU's rst_sibling)."""
        from .. import jsonlite
        from ..container.restore import Restore, RestoreOptions
        images = self.spec["restore"]
        if self.spec.get("userns"):
            # CRIU reads the images from inside the sandbox's user namespace,
            # through a descriptor of their directory: it must be searchable
            os.chmod(images, os.stat(images).st_mode | 0o011)
        bundle = os.path.join(images, f"bundle-{self.cid}")
        os.makedirs(bundle, 0o711, exist_ok=True)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write(jsonlite.dumps(raw))
        console = listener = None
        if self.spec.get("tty"):
            # CRIU makes the terminal's master anew and hands it over a console
            # socket: this keeper's, listening beside the images
            console = os.path.join(images, f"console-{self.cid}.sock")
            listener = _listen(console)
            listener.setblocking(True)
        saved = [os.dup(fd) for fd in (1, 2)]
        try:
            if stdio is not None:
                os.dup2(stdio[1], 1)
                os.dup2(stdio[2], 2)
            r = Restore(self.root, self.cid, bundle, RestoreOptions(
                detach=True, attachments=(keeper,), console_socket=console,
                work_path=os.path.join(images, f"work-{self.cid}")))
            r.run(images)
            if listener is not None:
                from ..linux.fdpass import recv_fds
                from .sock import accept
                conn = accept(listener)
                try:
                    self.master = recv_fds(conn.fileno(), 1, bufsize=1024)[0]
                finally:
                    conn.close()
                self.pipes = {self.master: "stdout"}
        finally:
            for fd, old in zip((1, 2), saved):
                os.dup2(old, fd)
                os.close(old)
            if listener is not None:
                listener.close()
                os.unlink(console)
        return r.pid

    def _attached(self, state_dir, ctx):
        """In create, once the state directory exists: the keeper's files, and
        the views (served from a thread: create, in this thread, binds them)."""
        from ..container.record import proc_stat
        os.mkdir(self.dir, 0o711)
        me = os.getpid()
        with open(os.path.join(self.dir, "pid"), "w") as f:
            f.write(f"{me} {proc_stat(me)[1]}\n")
        from .. import jsonlite
        if self.spec.get("restore"):
            import shutil
            logs = os.path.join(self.spec["restore"], "keeper-log")
            for name in (os.listdir(logs) if os.path.isdir(logs) else ()):
                shutil.copyfile(os.path.join(logs, name), os.path.join(self.dir, name))
        spec = {k: v for k, v in self.spec.items()
                if k in ("settings", "args", "log", "tty", "term")}
        with open(os.path.join(self.dir, "spec.json"), "w") as f:
            f.write(jsonlite.dumps(spec))     # for a checkpoint's restore
        self.devlog, self.writer = _syslog_socket(self.dir, self.spec.get("log"))
        self.control = _listen(os.path.join(self.dir, "control.sock"))
        self.attach = _listen(os.path.join(self.dir, "attach.sock"))
        if self.spec.get("views"):
            from .viewsvc import ViewService
            self.views = ViewService(self.dir, ctx.record.cgroup_paths, ctx.pid)
            ctx.mounts.extend(self.views.start())
            self.views.serve_in_thread()

    # --- serving ------------------------------------------------------------------
    def loop(self):
        import select
        import time
        poller = select.poll()
        for fd in self.pipes:
            poller.register(fd, select.POLLIN)
        poller.register(self.devlog.fileno(), select.POLLIN)
        poller.register(self.control.fileno(), select.POLLIN)
        poller.register(self.attach.fileno(), select.POLLIN)
        poller.register(self.init_fd, select.POLLIN)
        self.poller = poller
        last = time.monotonic()
        exited_at = None
        while not self.stopping:
            if exited_at is not None and (not self.pipes or
                                          time.monotonic() - exited_at > 2.0):
                break       # stopped, and what it wrote is in the log
            events = poller.poll(QUIET * 1000)
            if not events:
                self.writer.flush_partials()
                continue
            for fd, _ev in events:
                if fd in self.pipes:
                    try:
                        data = os.read(fd, 65536)
                    except OSError:     # EIO: a terminal whose last user went
                        data = b""
                    if data:
                        self.writer.write(self.pipes[fd], data)
                        self._fan_out(data)
                        last = time.monotonic()
                    else:
                        poller.unregister(fd)
                        os.close(fd)
                        del self.pipes[fd]
                elif fd == self.devlog.fileno():
                    self._syslog()
                elif fd == self.control.fileno():
                    self._request()
                elif fd == self.attach.fileno():
                    self._new_client()
                elif any(c.fileno() == fd for c in self.clients):
                    self._from_client(fd)
                elif fd == self.init_fd:
                    poller.unregister(fd)
                    self._exited()
                    exited_at = time.monotonic()
            if time.monotonic() - last > QUIET:
                self.writer.flush_partials()

    # --- hutch attach ---------------------------------------------------------------
    def _new_client(self):
        import select
        from .sock import accept
        try:
            conn = accept(self.attach)
        except BlockingIOError:
            return
        conn.setblocking(False)
        self.clients.append(conn)
        self.poller.register(conn.fileno(), select.POLLIN)

    def _drop(self, conn):
        try:
            self.poller.unregister(conn.fileno())
        except (KeyError, ValueError):
            pass
        self.clients.remove(conn)
        conn.close()

    def _fan_out(self, data):
        """The container's output to every attached client; one that cannot
        keep up (its socket full) is dropped rather than slowing the log."""
        for conn in list(self.clients):
            try:
                conn.send(data)
            except OSError:
                self._drop(conn)

    def _from_client(self, fd):
        """Frames from a client: b"d" + length + bytes (input for the terminal),
        b"w" + length + rows, cols (its window size)."""
        import struct
        conn = next(c for c in self.clients if c.fileno() == fd)
        try:
            buf = conn.recv(65536)
        except BlockingIOError:
            return
        except OSError:
            buf = b""
        if not buf:
            self._drop(conn)
            return
        pending = self._pending.pop(fd, b"")
        buf = pending + buf
        while len(buf) >= 5:
            kind, n = buf[:1], struct.unpack("=I", buf[1:5])[0]
            if len(buf) < 5 + n:
                break
            body, buf = buf[5:5 + n], buf[5 + n:]
            if self.master is None:
                continue        # without -t the container's stdin is /dev/null
            if kind == b"d":
                try:
                    os.write(self.master, body)
                except OSError:
                    pass
            elif kind == b"w" and n == 4:
                from ..linux import kernel as K
                rows, cols = struct.unpack("=HH", body)
                try:
                    K.kernel().ioctl(self.master, K.TIOCSWINSZ,
                                     struct.pack("=HHHH", rows, cols, 0, 0))
                except OSError:
                    pass
        if buf:
            self._pending[fd] = buf

    def _syslog(self):
        _syslog(self.devlog, self.writer)

    def _request(self):
        from .sock import read_request, reply
        conn, msg = read_request(self.control)
        if conn is None:
            return
        if msg.get("t") == "stop":
            self.stopping = True
            answer = {"t": "ok"}
        elif msg.get("t") == "drain":
            self._drain()
            answer = {"t": "ok"}
        elif msg.get("t") == "status":
            answer = {"t": "status", "pid": os.getpid(), "init": self.init,
                      "running": self.init_fd is not None}
        else:
            answer = {"t": "error", "msg": f"unknown request {msg.get('t')!r}"}
        reply(conn, answer)

    def _drain(self, wait=1.0):
        """Reads the container's output until its writers are gone (a dumped
        sandbox's, killed by CRIU) or ``wait`` s pass, and flushes the log."""
        import select
        import time
        deadline = time.monotonic() + wait
        while self.pipes and time.monotonic() < deadline:
            ready, _, _ = select.select(list(self.pipes), [], [],
                                        max(0.0, deadline - time.monotonic()))
            for fd in ready:
                try:
                    data = os.read(fd, 65536)
                except OSError:
                    data = b""
                if data:
                    self.writer.write(self.pipes[fd], data)
                else:
                    try:
                        self.poller.unregister(fd)
                    except (KeyError, ValueError):
                        pass
                    os.close(fd)
                    del self.pipes[fd]
        self.writer.flush_partials()

    def _exited(self):
        """The init exited: its status (128+N for signal N) goes to exit-code."""
        from ..container.record import write_atomic
        try:
            _, status = os.waitpid(self.init, 0)
            code = os.waitstatus_to_exitcode(status)
            code = code if code >= 0 else 128 - code
        except ChildProcessError:
            code = 255      # reaped by someone else: unknown
        try:
            write_atomic(os.path.join(self.dir, "exit-code"), f"{code}\n")
        except OSError:
            pass        # a delete removes the directory meanwhile
        os.close(self.init_fd)
        self.init_fd = None

    def close(self):
        if self.views is not None:
            self.views.stop()
        if self.writer is not None:
            for fd in list(self.pipes):         # what is left, without waiting
                os.set_blocking(fd, False)
                while True:
                    try:
                        data = os.read(fd, 65536)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    self.writer.write(self.pipes[fd], data)
            self.writer.close()
        for c in list(self.clients):
            c.close()       # an attached client sees the end
        for s in (self.devlog, self.control, self.attach):
            if s is not None:
                s.close()
        for name in ("control.sock", "attach.sock"):
            try:
                os.unlink(os.path.join(self.dir, name))
            except OSError:
                pass


# --- the keeper of a container it did not make: the views -------------------------
def serve_views(sock):
    """A keeper started as a helper of kind :data:`.attach.HELPER_KIND` (by
    :class:`.attach.Views`,
    from `create`): it serves the container's /proc and /sys views and (with
    "syslog") takes what the container sends to /dev/log into its log, until the
    container's init exits or it is told to stop.  Its own session and
    /dev/null stdio: a terminal's Ctrl-C is not for it."""
    import select
    from ..container.record import proc_stat
    from .viewsvc import ViewService
    os.set_inheritable(sock, False)
    try:
        os.setsid()
    except OSError:
        pass
    null = os.open("/dev/null", os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
    os.close(null)
    msg = channel.recv(sock)
    if msg is None or msg.get("t") != "views":
        os._exit(0)
    d = msg["dir"]
    svc = devlog = writer = None
    try:
        os.makedirs(d, 0o711, exist_ok=True)
        me = os.getpid()
        with open(os.path.join(d, "pid"), "w") as f:
            f.write(f"{me} {proc_stat(me)[1]}\n")
        # a restored container's init is not there yet: told later ("init")
        init = {"fd": os.pidfd_open(msg["init_pid"]) if msg["init_pid"] else -1}
        mounts = []
        if msg.get("views", True):
            svc = ViewService(d, msg["cgroup_paths"], msg["init_pid"])
            mounts += svc.start()
        if msg.get("syslog"):
            devlog, writer = _syslog_socket(d)
            mounts.append((os.path.join(d, "dev-log"), "/dev/log"))
        control = _listen(os.path.join(d, "control.sock"))
    except BaseException as e:      # noqa: BLE001 - reported to create
        if svc is not None:
            svc.stop()
        channel.send(sock, {"t": "error", "msg": f"start the keeper: {e}",
                            "errno": getattr(e, "errno", None)})
        os._exit(1)
    channel.send(sock, {"t": "ready", "pid": me, "starttime": proc_stat(me)[1],
                        "mounts": mounts})
    os.close(sock)

    def on_init(pid):
        init["fd"] = os.pidfd_open(pid)
        extra.append(init["fd"])
        if svc is not None:
            svc.views.init_pid = pid

    def on_extra(fd):
        # the container stopped (nothing left to serve, once what it logged
        # before it stopped is in), a request, or syslog
        if fd == init["fd"]:
            if devlog is not None:
                _syslog(devlog, writer)
            return True
        if devlog is not None and fd == devlog.fileno():
            _syslog(devlog, writer)
            return False
        return _answer(control, on_init)
    extra = [control.fileno()] + ([init["fd"]] if init["fd"] >= 0 else []) + \
        ([devlog.fileno()] if devlog else [])
    try:
        if svc is not None:
            svc.serve(extra=extra, on_extra=on_extra)
        else:
            while not any(on_extra(fd) for fd in select.select(extra, [], [])[0]):
                pass
    finally:
        if svc is not None:
            svc.stop()
        if writer is not None:
            writer.close()
        for s in (control, devlog):
            if s is not None:
                s.close()
        for name in ("control.sock", "dev-log"):
            try:
                os.unlink(os.path.join(d, name))
            except OSError:
                pass
    os._exit(0)


def _syslog_socket(d, log=None):
    """The datagram socket bound over the container's /dev/log, and the log
    its messages go to."""
    import _socket
    from .sock import unix_path
    from .logfile import LogWriter
    log = log or {}
    writer = LogWriter(os.path.join(d, "container.log"),
                       max_size=log.get("max_size", 10 << 20),
                       max_files=log.get("max_files", 5))
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_DGRAM)
    path = os.path.join(d, "dev-log")
    with unix_path(path) as short:
        s.bind(short)
    os.chmod(path, 0o666)       # any user in the container may log
    s.setblocking(False)
    return s, writer


def _syslog(devlog, writer):
    from .syslog import parse
    while True:
        try:
            data = devlog.recv(65536)
        except BlockingIOError:
            return
        facility, severity, tag, text = parse(data)
        writer.syslog(facility, severity, text, tag=tag)


def _listen(path):
    from .sock import listen
    return listen(path)

def _answer(control, on_init=None):
    """One request on the control socket; True if it was "stop".  "init" gives
    a restored container's init pid (``on_init(pid)``)."""
    from .sock import read_request, reply
    conn, msg = read_request(control)
    if conn is None:
        return False
    if msg.get("t") == "init" and on_init is not None:
        on_init(int(msg["pid"]))
    reply(conn, {"t": "ok"} if msg.get("t") in ("stop", "init") else
          {"t": "status", "pid": os.getpid()})
    return msg.get("t") == "stop"


def _network(spec):
    """The sandbox's Network attachment (hutch.network.attach), when it has one."""
    if not spec.get("network"):
        return []
    from ..network.attach import Network
    return [Network(**spec["network"])]
