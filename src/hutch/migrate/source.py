"""The source side of a migration: `hutch migrate ID HOST:PORT`."""

import errno
import os
import socket
import time

from .. import criu as C
from ..errors import HutchError
from .wire import Conn, Progress, rm, send_files, send_tree, snapshot

def migrate(root, cid, dest, shared_storage=False, tcp_established=False,
            criu=None, out=None, lazy_pages=False):
    """Moves container ``cid`` to the `hutch receive` at ``dest`` (HOST:PORT).
    Returns a report dict (downtime_ms, bytes, ...)."""
    from ..container.lifecycle import load
    from ..container.record import check
    criu = C.find(criu)
    C.check_version(criu, root)
    host, _, port = dest.rpartition(":")
    if not host or not port.isdigit():
        raise HutchError(f"migrate: destination {dest!r}: expected HOST:PORT",
                         errno.EINVAL)
    cdir = load(root, cid, lock=False)
    d = cdir.data
    check("migrate", cdir.status(), cid)
    paths = d.cgroup_paths
    if not paths.get("freezer") and "unified" not in paths:
        raise HutchError("migrate: the container has no freezer cgroup",
                         errno.EOPNOTSUPP)
    with open(os.path.join(d.bundle, "config.json")) as f:
        config = f.read()
    rootfs = os.path.realpath(d.rootfs)
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
            from ..criu.host import lazy_pages_possible
            lazy_pages_possible()
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
        from ..container.checkpoint import CheckpointOptions, checkpoint
        mgr = Manager.from_state(d.cgroup)
        guard = C.ThawGuard(mgr)
        work = os.path.join(cdir.path, "migrate-images")
        rm(work)
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
        checkpoint(root, cid, work, CheckpointOptions(
            leave_running=True, tcp_established=tcp_established,
            page_server=f"{host}:{ps_port}", criu=criu, on_criu=guard.watch,
            meanwhile=meanwhile, worker=worker))
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
            rm(work)
    # ours was never thawed: killed while frozen, it runs no instruction more
    mgr.kill_all(9)
    from ..container.lifecycle import delete
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
    from ..container.checkpoint import CheckpointOptions, checkpoint
    from ..container.lifecycle import load
    src_ip = conn.sock.getsockname()[0]
    port = _free_port(src_ip)
    mgr = Manager.from_state(d.cgroup)
    guard = C.ThawGuard(mgr)
    work = os.path.join(load(root, cid, lock=False).path, "migrate-images")
    rm(work)
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
        checkpoint(root, cid, work, CheckpointOptions(
            tcp_established=tcp_established, page_server=f"{src_ip}:{port}",
            lazy_pages=True, status_fd=w, criu=criu, on_criu=guard.watch,
            ready=(r, ready), worker=worker))
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
        rm(work)
    report["bytes"] = conn.sent + conn.received
    if state.get("unconfirmed"):
        raise HutchError(f"migrate: {state['unconfirmed']}; the destination was told "
                         f"to run {cid} and pulled its memory, but did not confirm "
                         "that it runs: check the destination (nothing of it is left "
                         "here)", errno.EIO)
    return report


