"""Live migration: `hutch migrate ID HOST:PORT` to a `hutch receive` on another host.

Everything travels over one TCP connection (messages are length-prefixed JSON;
files travel as tar streams cut into length-prefixed frames), except memory, which
CRIU's page server receives directly:

  source (migrate)                         destination (receive)
  ---------------------------------------  ----------------------------------------
  hello: id, config.json, options     ->   checks the id is free, makes a bundle
  rootfs, pass 1 (container running)  ->   unpacks it                (unless shared)
                                      <-   page server started: its port
  freeze the container (a guard process thaws it if migrate dies from here on)
  CRIU dump, pages to the page server ->   (CRIU's page server writes them)
  rootfs, pass 2 (what changed)       ->   applies it
  the other images                    ->   restores; the container stays frozen
                                      <-   restored: pid, bytes received
  kill the source container
  commit                              ->   thaws the restored container
                                      <-   done
  clean-up at the source

A failure or a lost connection before the commit rolls everything back: the
destination removes what it made, and the source thaws its container, which never
stopped existing.  (One window cannot be closed by either side alone: if the source
dies between killing its copy and sending the commit, the destination rolls back
too.  It is two syscalls wide.)

Downtime is measured from the freeze to the destination's "restored".
"""

import json
import os
import signal
import socket
import struct
import time

from .. import criu as C
from ..errors import HutchError
from . import rpc

CHUNK = 1 << 16


# --- framing ------------------------------------------------------------------------
class Conn:
    def __init__(self, sock):
        # small messages go at once: Nagle's algorithm and delayed ACKs would
        # add ~40 ms to each round trip of the frozen phase
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock = sock
        self.sent = 0
        self.received = 0

    def send(self, obj):
        data = json.dumps(obj).encode()
        self._write(struct.pack(">I", len(data)) + data)

    def recv(self):
        head = self._read(4)
        (n,) = struct.unpack(">I", head)
        return json.loads(self._read(n))

    def expect(self, kind):
        msg = self.recv()
        if msg.get("t") == "error":
            raise HutchError(f"the destination failed: {msg.get('msg')}",
                             msg.get("errno"))
        if msg.get("t") != kind:
            raise HutchError(f"migration protocol: expected {kind!r}, got "
                             f"{msg.get('t')!r}", 71)
        return msg

    def _write(self, data):
        self.sock.sendall(data)
        self.sent += len(data)

    def _read(self, n):
        # acknowledge at once: after the idle frozen phase the sender is back in
        # slow start, and delayed acks would stretch the images' few round trips
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_QUICKACK, 1)
        buf = bytearray()
        while len(buf) < n:
            chunk = self.sock.recv(n - len(buf))
            if not chunk:
                raise HutchError("the other host closed the connection", 104)
            buf += chunk
        self.received += n
        return bytes(buf)


class FrameWriter:
    """A write-only file object: each write becomes a frame; close() ends it."""

    def __init__(self, conn, progress=None):
        self.conn, self.progress, self.total = conn, progress, 0

    def write(self, data):
        if data:
            self.conn._write(struct.pack(">I", len(data)) + bytes(data))
            self.total += len(data)
            if self.progress:
                self.progress(self.total)
        return len(data)

    def close(self):
        self.conn._write(struct.pack(">I", 0))

    def flush(self):
        pass


class FrameReader:
    def __init__(self, conn):
        self.conn, self.left, self.done, self.total = conn, 0, False, 0

    def read(self, n=-1):
        out = bytearray()
        while not self.done and (n < 0 or len(out) < n):
            if self.left == 0:
                (self.left,) = struct.unpack(">I", self.conn._read(4))
                if self.left == 0:
                    self.done = True
                    break
            take = self.left if n < 0 else min(self.left, n - len(out))
            out += self.conn._read(take)
            self.left -= take
        self.total += len(out)
        return bytes(out)

    def drain(self):
        while not self.done:
            self.read(CHUNK)


def send_tree(conn, path, names=None, progress=None):
    """Sends ``path`` (or only ``names`` under it) as a tar stream."""
    import tarfile
    w = FrameWriter(conn, progress)
    with tarfile.open(fileobj=w, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        if names is None:
            tar.add(path, arcname=".", recursive=True)
        else:
            for n in names:
                tar.add(os.path.join(path, n), arcname=n, recursive=False)
    w.close()
    return w.total


def recv_tree(conn, dest):
    import tarfile
    r = FrameReader(conn)
    kw = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}
    with tarfile.open(fileobj=r, mode="r|") as tar:
        for member in tar:
            _check_member(member, dest)
            tar.extract(member, dest, set_attrs=True, numeric_owner=True, **kw)
    r.drain()
    return r.total


def send_files(conn, path, progress=None):
    """Sends the files of a flat directory (CRIU's images, not its logs): one
    manifest of names and sizes, then their bytes back to back.  A tar stream
    costs ~10 ms more at the destination, on the downtime."""
    names, data = [], []
    for entry in sorted(os.scandir(path), key=lambda e: e.name):
        if entry.name.endswith(".log"):
            continue        # CRIU's logs stay here; the destination writes its own
        if not entry.is_file(follow_symlinks=False):
            raise HutchError(f"migrate: {entry.path} is not a regular file; the "
                             "images directory should hold only CRIU's files", 21)
        with open(entry.path, "rb") as f:
            blob = f.read()
        names.append([entry.name, len(blob)])
        data.append(blob)
    conn.send({"t": "files", "files": names})
    total = 0
    for blob in data:
        conn._write(blob)
        total += len(blob)
        if progress:
            progress(total)
    return total


def recv_files(conn, dest):
    """The other end of :func:`send_files`: the files are made in ``dest``, which
    must not hold them already, and never through a link."""
    msg = conn.expect("files")
    total = 0
    dfd = os.open(dest, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for name, size in msg["files"]:
            if not isinstance(name, str) or not isinstance(size, int) or size < 0 or \
                    "/" in name or "\0" in name or name in ("", ".", ".."):
                raise HutchError(f"migration: refused an image file {name!r}", 1)
            fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW |
                         os.O_CLOEXEC, 0o600, dir_fd=dfd)
            try:
                left = size
                while left:
                    chunk = memoryview(conn._read(min(left, 1 << 20)))
                    left -= len(chunk)
                    while chunk:
                        chunk = chunk[os.write(fd, chunk):]
            finally:
                os.close(fd)
            total += size
    finally:
        os.close(dfd)
    return total


def _check_member(m, dest):
    """Members stay inside the destination: no absolute names, no '..', and no
    path through a symlink (a rootfs has symlinks to anywhere; extracting through
    one would write outside).  Symlinks themselves are kept as they are."""
    name = m.name[2:] if m.name.startswith("./") else m.name
    _check_member_name(name)
    if m.islnk():
        _check_member_name(m.linkname)
    parts = [p for p in name.split("/") if p and p != "."]
    here = dest
    for p in parts[:-1]:
        here = os.path.join(here, p)
        if os.path.islink(here):
            raise HutchError(f"migration: refused {name!r}: it goes through the "
                             f"symlink {here!r}", 1)


def snapshot(root):
    """{relative path: (type, mode, size, mtime_ns)} of a tree, not following links."""
    out = {}
    for dirpath, dirs, files in os.walk(root):
        for n in dirs + files:
            full = os.path.join(dirpath, n)
            try:
                st = os.lstat(full)
            except FileNotFoundError:
                continue
            out[os.path.relpath(full, root)] = (st.st_mode >> 12, st.st_mode & 0o7777,
                                                st.st_size, st.st_mtime_ns)
    return out


# --- the source -------------------------------------------------------------------------
class Progress:
    def __init__(self, enabled):
        self.enabled = enabled
        self.phase = ""

    def __call__(self, nbytes):
        if self.enabled:
            bar = "#" * min(30, nbytes // (1 << 20))
            os.write(1, f"\r{self.phase:<18} [{bar:<30}] {nbytes / (1 << 20):8.1f} MiB"
                        .encode())

    def start(self, phase):
        self.phase = phase
        if self.enabled:
            os.write(1, f"\r{phase:<18}".encode())

    def end(self):
        if self.enabled:
            os.write(1, b"\n")


def migrate(root, cid, dest, shared_storage=False, tcp_established=False,
            criu=None, out=None, lazy_pages=False):
    """Moves container ``cid`` to the `hutch receive` at ``dest`` (HOST:PORT).
    Returns a report dict (downtime_ms, bytes, ...)."""
    from ..container import load
    criu = C.find(criu)
    C.check_version(criu, root)
    host, _, port = dest.rpartition(":")
    if not host or not port.isdigit():
        raise HutchError(f"migrate: destination {dest!r}: expected HOST:PORT", 22)
    cdir = load(root, cid, lock=False)
    d = cdir.data
    if cdir.status() != "running":
        raise HutchError(f"migrate: container {cid} is {cdir.status()}; only a "
                         "running container can be migrated", 3)
    if not d.get("cgroup") or not (d["cgroup"].get("paths") or {}).get("freezer") and \
            "unified" not in (d["cgroup"].get("paths") or {}):
        raise HutchError("migrate: the container has no freezer cgroup", 95)
    with open(os.path.join(d["bundle"], "config.json")) as f:
        config = f.read()
    rootfs = os.path.realpath(d["rootfs"])
    progress = Progress(bool(out) and os.isatty(1))
    try:
        sock = socket.create_connection((host.strip("[]"), int(port)), timeout=30)
    except OSError as e:
        raise HutchError(f"migrate: connect to {dest}: {e.strerror}", e.errno) from None
    sock.settimeout(None)
    conn = Conn(sock)
    report = {"id": cid, "destination": dest}
    guard = None
    frozen = False
    t_freeze = None
    work = None
    worker = None
    try:
        if lazy_pages:
            from .container import _lazy_pages_possible
            _lazy_pages_possible()
        conn.send({"t": "hello", "id": cid, "config": config,
                   "shared_storage": shared_storage,
                   "rootfs": rootfs if shared_storage else None,
                   "tcp_established": tcp_established, "lazy": lazy_pages})
        conn.expect("ready")
        before = None
        if not shared_storage:
            progress.start("rootfs")
            before = snapshot(rootfs)
            report["rootfs_bytes"] = send_tree(conn, rootfs, progress=progress)
            progress.end()
            conn.expect("rootfs-ok")
        if lazy_pages:
            return _migrate_lazy(root, cid, conn, rootfs, before, shared_storage,
                                 tcp_established, criu, progress, report, d)
        conn.send({"t": "page-server"})
        ps_port = conn.expect("page-server")["port"]
        # from here on the container is frozen; the guard thaws it if we die
        from ..cgroups.manager import Manager
        from .container import checkpoint
        mgr = Manager.from_state(d["cgroup"])
        guard = C.ThawGuard(mgr)
        work = os.path.join(cdir.path, "migrate-images")
        _rm(work)
        worker = C.Swrk(criu)       # CRIU's start-up is not part of the downtime
        t_freeze = time.monotonic()
        mgr.freeze(True)
        frozen = True
        phases = report["frozen_phases_ms"] = {}
        mark = [t_freeze]

        def lap(name):
            now = time.monotonic()
            phases[name] = round((now - mark[0]) * 1000, 1)
            mark[0] = now
        lap("freeze")
        progress.start("checkpoint")

        def meanwhile():        # the rootfs is still while CRIU streams the pages
            if not shared_storage:
                report["rootfs_delta_bytes"] = _send_delta(conn, rootfs, before)
                lap("rootfs_delta")
        checkpoint(root, cid, work, leave_running=True, tcp_established=tcp_established,
                   page_server=f"{host}:{ps_port}", criu=criu, on_criu=guard.watch,
                   meanwhile=meanwhile, worker=worker)
        lap("dump")
        progress.start("images")
        conn.send({"t": "images"})
        report["image_bytes"] = send_files(conn, work, progress=progress)
        lap("images")
        restored = conn.expect("restored")
        lap("restore")
        report["page_bytes"] = restored.get("page_bytes", 0)
        report["pid_at_destination"] = restored.get("pid")
        # the container exists twice now, frozen here and there: the destination's
        # runs once told, and ours never runs again (the guard no longer thaws it)
        guard.disarm()
        frozen = False              # never thawed here again, whatever happens
        try:
            conn.send({"t": "commit"})
            conn.expect("done")
        except (HutchError, OSError) as e:
            raise HutchError(f"migrate: {e}; the destination was told to run the "
                             f"container but did not confirm: {cid} stays frozen "
                             "here (check the destination, then `hutch delete -f` or "
                             "`hutch resume` it here)", e.errno) from None
        lap("commit")
        report["downtime_ms"] = round((time.monotonic() - t_freeze) * 1000, 1)
        progress.end()
    except BaseException:
        if worker is not None:
            worker.close(kill=True)
        if frozen and guard is not None:
            guard.thaw_now()
        raise
    finally:
        if guard is not None:
            guard.close()
        sock.close()
        if work:
            _rm(work)
    # ours was never thawed: killed while frozen, it runs no instruction more
    mgr.kill_all(9)
    from ..container import delete
    delete(root, cid, force=True)
    report["bytes"] = conn.sent + conn.received
    return report


def _send_delta(conn, rootfs, before):
    """The rootfs's second pass: what changed since ``before``, and deletions."""
    after = snapshot(rootfs)
    changed = sorted(n for n, v in after.items() if before.get(n) != v)
    gone = sorted(n for n in before if n not in after)
    conn.send({"t": "rootfs-delta", "deleted": gone})
    sent = send_tree(conn, rootfs, changed)
    conn.expect("rootfs-delta-ok")
    return sent


def _free_port(addr):
    s = socket.socket(socket.AF_INET6 if ":" in addr else socket.AF_INET)
    s.bind((addr, 0))
    port = s.getsockname()[1]
    s.close()
    return port


def _migrate_lazy(root, cid, conn, rootfs, before, shared_storage, tcp_established,
                  criu, progress, report, d):
    """Post-copy: CRIU dumps all but the memory and serves the pages from here;
    the destination restores at once and pulls the pages on demand (userfaultfd).
    The downtime is the dump without memory, the images and the restore."""
    from ..cgroups.manager import Manager
    from .container import checkpoint
    from ..container import load
    src_ip = conn.sock.getsockname()[0]
    port = _free_port(src_ip)
    mgr = Manager.from_state(d["cgroup"])
    guard = C.ThawGuard(mgr)
    work = os.path.join(load(root, cid, lock=False).path, "migrate-images")
    _rm(work)
    r, w = os.pipe()
    state = {"frozen": False, "committed": False}
    phases = report["frozen_phases_ms"] = {}
    t0 = time.monotonic()
    mark = [t0]

    def lap(name):
        now = time.monotonic()
        phases[name] = round((now - mark[0]) * 1000, 1)
        mark[0] = now

    def ready():
        lap("dump")
        # after the dump, not alongside it as with a page server: a dump without
        # pages keeps a core busy, and on two cores the overlap gained nothing
        if not shared_storage:
            report["rootfs_delta_bytes"] = _send_delta(conn, rootfs, before)
            lap("rootfs_delta")
        conn.send({"t": "images", "page_server": [src_ip, port]})
        report["image_bytes"] = send_files(conn, work)
        lap("images")
        restored = conn.expect("restored")
        lap("restore")
        report["pid_at_destination"] = restored.get("pid")
        # CRIU ends the source's processes once every page has been pulled
        guard.disarm()
        state["committed"] = True
        # from here on nothing may stop this CRIU: the destination's copy runs
        # on the pages it serves
        try:
            conn.send({"t": "commit"})
            conn.expect("done")
            lap("commit")
            report["downtime_ms"] = round((time.monotonic() - t0) * 1000, 1)
        except (HutchError, OSError) as e:
            state["unconfirmed"] = str(e)
        try:
            report["page_bytes"] = C.lazy_bytes(work)     # what the destination pulls
        except (OSError, ValueError):
            report["page_bytes"] = 0
        progress.start("pulling pages")

    worker = None
    try:
        worker = C.Swrk(criu)       # CRIU's start-up is not part of the downtime
        t0 = mark[0] = time.monotonic()
        mgr.freeze(True)
        state["frozen"] = True
        lap("freeze")
        progress.start("checkpoint")
        checkpoint(root, cid, work, tcp_established=tcp_established,
                   page_server=f"{src_ip}:{port}", lazy_pages=True, status_fd=w,
                   criu=criu, on_criu=guard.watch, ready=(r, ready), worker=worker)
        progress.end()
        report["pages_pulled_ms"] = round((time.monotonic() - t0) * 1000, 1)
    except BaseException:
        if worker is not None:
            worker.close(kill=True)
        if state["frozen"] and not state["committed"]:
            guard.thaw_now()
        raise
    finally:
        guard.close()
        os.close(r)
        os.close(w)
        conn.sock.close()
        _rm(work)
    report["bytes"] = conn.sent + conn.received
    if state.get("unconfirmed"):
        raise HutchError(f"migrate: {state['unconfirmed']}; the destination was told "
                         f"to run {cid} and pulled its memory, but did not confirm "
                         "that it runs: check the destination (nothing of it is left "
                         "here)", 5)
    return report


def _rm(path):
    from ..state import rmtree
    if os.path.lexists(path):
        rmtree(path)


# --- the destination --------------------------------------------------------------------
def receive(root, listen, bundle_dir, cgroup_parent=None, once=True, criu=None,
            log=None):
    """Serves migrations on ``listen`` (HOST:PORT); returns after one with
    ``once``.  Bundles go to ``bundle_dir``/ID."""
    criu = C.find(criu)
    C.check_version(criu, root)
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise HutchError(f"receive: --listen {listen!r}: expected HOST:PORT", 22)
    srv = socket.socket(socket.AF_INET6 if ":" in host.strip("[]") else socket.AF_INET)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        srv.bind((host.strip("[]") or "0.0.0.0", int(port)))
    except OSError as e:
        raise HutchError(f"receive: listen on {listen}: {e.strerror}", e.errno) from None
    srv.listen(4)
    if log:
        log(f"listening on {listen}")
    # restored inits are our children (CRIU's rst_sibling) and CRIU's page server
    # daemon is reparented to us (restore makes us a subreaper): reap them as
    # they end, however long this runs
    old_chld = signal.signal(signal.SIGCHLD, _reap_children)
    try:
        while True:
            sock, peer = srv.accept()
            try:
                _serve_one(root, Conn(sock), host.strip("[]"), bundle_dir,
                           cgroup_parent, criu, log)
            except HutchError as e:
                if log:
                    log(f"migration from {peer[0]} failed: {e}")
                if once:
                    raise
            finally:
                sock.close()
            if once:
                return
    finally:
        signal.signal(signal.SIGCHLD, old_chld)
        srv.close()


def _reap_children(_signum, _frame):
    while True:
        try:
            pid, _ = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return


def _serve_one(root, conn, host, bundle_dir, cgroup_parent, criu, log):
    from ..container import delete
    from ..state import ContainerDir, validate_id
    bundle = images = None
    ps_pid = 0
    restored = committed = False
    cid = None
    rst = lazy = None
    try:
        hello = conn.expect("hello")
        cid = validate_id(hello["id"])
        if os.path.exists(ContainerDir(root, cid).path):
            raise HutchError(f"a container {cid} exists here already", 17)
        cfg = json.loads(hello["config"])
        bundle = os.path.join(os.path.abspath(bundle_dir), cid)
        if os.path.exists(bundle):
            raise HutchError(f"the bundle directory {bundle} exists already", 17)
        os.makedirs(bundle, 0o700)
        if hello.get("shared_storage"):
            cfg.setdefault("root", {})["path"] = hello["rootfs"]
        else:
            cfg.setdefault("root", {})["path"] = "rootfs"
            os.mkdir(os.path.join(bundle, "rootfs"), 0o755)
        if cgroup_parent:
            cfg.setdefault("linux", {})["cgroupsPath"] = \
                f"{cgroup_parent.rstrip('/')}/{cid}"
        with open(os.path.join(bundle, "config.json"), "w") as f:
            json.dump(cfg, f)
        images = _images_dir(os.path.join(bundle, "images"))
        conn.send({"t": "ready"})
        if not hello.get("shared_storage"):
            recv_tree(conn, os.path.join(bundle, "rootfs"))
        # everything the restore needs but the images, while the source runs
        from .container import Restore
        rst = Restore(root, cid, bundle, criu=criu, lazy_pages=bool(hello.get("lazy")))
        if not hello.get("shared_storage"):
            conn.send({"t": "rootfs-ok"})
        if not hello.get("lazy"):
            conn.expect("page-server")
            ps_pid, ps_port = _page_server(criu, images, host)
            conn.send({"t": "page-server", "port": ps_port})
        msg = conn.recv()
        if msg.get("t") == "rootfs-delta":
            rootfs = os.path.join(bundle, "rootfs")
            for name in msg.get("deleted", ()):
                _check_member_name(name)
                _rm(os.path.join(rootfs, name))
            recv_tree(conn, rootfs)
            conn.send({"t": "rootfs-delta-ok"})
            msg = conn.recv()
        if msg.get("t") != "images":
            raise HutchError(f"migration protocol: expected images, got {msg.get('t')}",
                             71)
        recv_files(conn, images)
        if hello.get("lazy"):
            lazy = _lazy_daemon(criu, images, *msg["page_server"])
        else:
            C.wait_pid(ps_pid)
            ps_pid = 0
        page_bytes = sum(os.path.getsize(os.path.join(images, n))
                         for n in os.listdir(images) if n.startswith("pages-"))
        r, rst = rst, None          # run() undoes it all if it fails
        r.run(images, detach=True, tcp_established=hello.get("tcp_established", False),
              frozen=True)
        restored = True
        from ..container import load
        pid = load(root, cid, lock=False).data["pid"]
        conn.send({"t": "restored", "pid": pid, "page_bytes": page_bytes})
        conn.expect("commit")
        # ours now: the source never runs its copy again, so nothing below undoes it
        committed = True
        _thaw(root, cid)
        try:
            conn.send({"t": "done"})
        except OSError as e:
            if log:
                log(f"{cid} runs here; the source did not hear it ({e.strerror})")
        if lazy is not None:
            # the daemon reads the images until the last page has arrived
            try:
                lazy.wait(600)
            except TimeoutError:    # a stuck daemon is stopped
                lazy.kill()
                lazy.wait()
        if log:
            log(f"received {cid}: pid {pid}" + ("" if lazy is not None else
                                                f", {page_bytes} bytes of pages"))
        _drop_images(images)
        images = None
    except BaseException as e:
        if committed:       # after the commit the container stays, whatever failed
            raise
        try:
            conn.send({"t": "error", "msg": str(e), "errno": getattr(e, "errno", None)})
        except Exception:   # noqa: BLE001 - the connection may be gone
            pass
        if lazy is not None:
            lazy.kill()
            lazy.wait()
        if ps_pid:
            try:
                os.kill(ps_pid, 9)
            except ProcessLookupError:
                pass
        if rst is not None:
            rst.abort()
        if restored and cid:
            try:
                delete(root, cid, force=True)
            except HutchError:
                pass
        if images:
            _drop_images(images)
            images = None
        if bundle and os.path.exists(bundle):
            _rm(bundle)
        raise
    finally:
        if images:
            _drop_images(images)


def _images_dir(path):
    """The destination's images directory: a tmpfs of its own, so that neither
    the page server's writes nor the images' files wait on the disk (file
    creation on this machine's ext4 stalls for ~15 ms when a previous migration's
    pages are being written back).  Memory: the pages, until the restore is done."""
    from ..linux import kernel as K
    os.mkdir(path, 0o700)
    try:
        K.kernel().mount("hutch-images", path, "tmpfs", K.MS_NOSUID | K.MS_NODEV |
                         K.MS_NOEXEC, "mode=0700", what=f"mount a tmpfs on {path}")
    except OSError as e:
        os.rmdir(path)
        raise HutchError(str(e), e.errno) from None
    return path


def _drop_images(path):
    from .container import _unmount
    _unmount(path)          # the files go with the tmpfs


def _lazy_daemon(criu, images, address, port):
    """`criu lazy-pages`: serves the restored processes' page faults with pages it
    pulls from the source's page server.  CRIU has no RPC for it, so it is started
    as a command; it says on its status descriptor when its socket (in the work
    directory, where restore finds it) is ready."""
    import select
    r, w = os.pipe()
    try:
        p = C.Worker([criu, "lazy-pages", "--page-server", "--address", address,
                      "--port", str(port), "-D", images, "-W", images,
                      "-o", "lazy-pages.log", "-v4", "--status-fd", str(w)],
                     keep_fds=(w,), quiet=True, setsid=True)
        os.close(w)
        w = -1
        ready, _, _ = select.select([r], [], [], 10.0)
        if ready and os.read(r, 1):
            return p
        p.kill()
        p.wait()
        if ready:
            raise C.failure({}, "start criu lazy-pages",
                            os.path.join(images, "lazy-pages.log"))
        raise HutchError("criu lazy-pages did not start within 10 s", 110)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


def _check_member_name(name):
    if name.startswith("/") or ".." in name.split("/"):
        raise HutchError(f"migration: refused a path outside the bundle: {name!r}", 1)


def _page_server(criu, images, host):
    """Starts CRIU's page server writing into ``images``; (pid, port)."""
    fd = os.open(images, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        resp = C.call(criu, {"type": rpc.PAGE_SERVER, "opts": {
            "images_dir_fd": fd, "log_file": "page-server.log", "log_level": 4,
            "ps": {"address": host or "0.0.0.0", "port": 0}}},
            extra_fds=(fd,), what="page server")
    finally:
        os.close(fd)
    if not resp.get("success"):
        raise C.failure(resp, "start the page server",
                        os.path.join(images, "page-server.log"))
    ps = resp.get("ps") or {}
    return _page_server_pid(images) or ps.get("pid", 0), ps.get("port", 0)


def _page_server_pid(images):
    """CRIU's page server daemonizes, so the pid in its answer is not the one that
    stays: find the daemon by the images directory it holds open."""
    real = os.path.realpath(images)
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/cmdline", "rb") as f:
                if not f.read().startswith(b"criu: page-server"):
                    continue
            for fd in os.listdir(f"/proc/{name}/fd"):
                if os.readlink(f"/proc/{name}/fd/{fd}") == real:
                    return int(name)
        except OSError:
            continue
    return 0


def _thaw(root, cid):
    from ..cgroups.manager import Manager
    from ..container import load
    d = load(root, cid, lock=False).data
    Manager.from_state(d["cgroup"]).freeze(False)
