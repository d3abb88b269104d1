"""The destination side of a migration: `hutch receive`."""

import errno
import json
import os
import signal
import socket

from .. import criu as C
from ..criu import rpc
from ..errors import HutchError
from .wire import Conn, check_member_name, recv_files, recv_tree, rm

def receive(root, listen, bundle_dir, cgroup_parent=None, once=True, criu=None,
            log=None):
    """Serves migrations on ``listen`` (HOST:PORT); returns after one with
    ``once``.  Bundles go to ``bundle_dir``/ID."""
    criu = C.find(criu)
    C.check_version(criu, root)
    host, _, port = listen.rpartition(":")
    if not port.isdigit():
        raise HutchError(f"receive: --listen {listen!r}: expected HOST:PORT",
                         errno.EINVAL)
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
    from ..container.lifecycle import delete, load
    from ..container.record import ContainerDir, validate_id
    bundle = images = None
    ps_pid = 0
    restored = committed = False
    cid = None
    rst = lazy = None
    try:
        hello = conn.expect("hello")
        cid = validate_id(hello["id"])
        if os.path.exists(ContainerDir(root, cid).path):
            raise HutchError(f"a container {cid} exists here already", errno.EEXIST)
        cfg = json.loads(hello["config"])
        bundle = os.path.join(os.path.abspath(bundle_dir), cid)
        if os.path.exists(bundle):
            raise HutchError(f"the bundle directory {bundle} exists already",
                             errno.EEXIST)
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
        from ..container.restore import Restore, RestoreOptions
        rst = Restore(root, cid, bundle, RestoreOptions(
            criu=criu, lazy_pages=bool(hello.get("lazy")), detach=True, frozen=True,
            tcp_established=hello.get("tcp_established", False)))
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
                check_member_name(name)
                rm(os.path.join(rootfs, name))
            recv_tree(conn, rootfs)
            conn.send({"t": "rootfs-delta-ok"})
            msg = conn.recv()
        if msg.get("t") != "images":
            raise HutchError(f"migration protocol: expected images, got {msg.get('t')}",
                             errno.EPROTO)
        recv_files(conn, images)
        if hello.get("lazy"):
            lazy = _lazy_daemon(criu, images, *msg["page_server"])
        else:
            C.wait_pid(ps_pid)
            ps_pid = 0
        page_bytes = sum(os.path.getsize(os.path.join(images, n))
                         for n in os.listdir(images) if n.startswith("pages-"))
        r, rst = rst, None          # run() undoes it all if it fails
        r.run(images)
        restored = True
        pid = load(root, cid, lock=False).data.pid
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
            rm(bundle)
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
    from ..linux.fs import unmount_dir
    unmount_dir(path)          # the files go with the tmpfs


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
        raise HutchError("criu lazy-pages did not start within 10 s", errno.ETIMEDOUT)
    finally:
        os.close(r)
        if w >= 0:
            os.close(w)


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
    from ..container.lifecycle import load
    Manager.from_state(load(root, cid, lock=False).data.cgroup).freeze(False)
