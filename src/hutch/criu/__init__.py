"""Checkpoint/restore through CRIU's RPC protocol (`criu swrk FD`).

hutch starts `criu swrk` with one end of a SOCK_SEQPACKET socketpair, sends one
request (images/rpc.proto's criu_req, encoded by :mod:`hutch.criu.rpc`) and reads
responses.  With notify_scripts, CRIU stops at each action script ("pre-dump",
"network-lock", "setup-namespaces", "post-restore", "orphan-pts-master"...) and
waits for hutch's answer, which is how hutch learns the restored pid and receives
a restored terminal's master.

Which CRIU: ``--criu PATH``, then ``$HUTCH_CRIU``, then the ``criu =`` line of
/etc/hutch/hutch.conf (setup.sh writes it), then ``criu`` on PATH.  It must be
4.1 or newer.
"""

import errno
import os

from ..errors import HutchError, failpoint

MIN_VERSION = (4, 1)
CONFIG = "/etc/hutch/hutch.conf"


def find(explicit=None):
    """The criu binary to use, by the order in the module doc."""
    cands = [("--criu", explicit), ("$HUTCH_CRIU", os.environ.get("HUTCH_CRIU")),
             (CONFIG, _from_config())]
    for origin, path in cands:
        if path:
            if not os.access(path, os.X_OK):
                raise HutchError(f"criu {path} (from {origin}) is not an executable "
                                 "file", errno.ENOENT)
            return path
    import shutil
    path = shutil.which("criu", path=os.environ.get("PATH", "") +
                        ":/usr/local/sbin:/usr/sbin:/sbin")
    if path is None:
        raise HutchError("checkpoint/restore needs CRIU >= 4.1, and none was found "
                         "(--criu, $HUTCH_CRIU, /etc/hutch/hutch.conf, PATH); "
                         "tools/install-criu.sh builds one", errno.ENOENT)
    return path


def _from_config():
    try:
        with open(CONFIG) as f:
            for line in f:
                key, sep, val = line.partition("=")
                if sep and key.strip() == "criu":
                    return val.strip()
    except OSError:
        pass
    return None


class Worker:
    """A started CRIU process: the little of subprocess.Popen this needs
    (subprocess's imports alone cost more than starting CRIU)."""

    def __init__(self, argv, keep_fds=(), stdin_null=True, quiet=False, setsid=False):
        from ..linux.spawn import spawn
        actions = []
        if stdin_null:
            actions.append((os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0))
        if quiet:
            for fd in (1, 2):
                actions.append((os.POSIX_SPAWN_OPEN, fd, "/dev/null", os.O_WRONLY, 0))
        # as close_fds: what hutch itself inherited does not reach CRIU
        self.pid = spawn(argv[0], argv, actions, keep_fds, setsid=setsid)
        self.returncode = None

    def poll(self):
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, os.WNOHANG)
            except ChildProcessError:
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode

    def wait(self, timeout=None):
        """Its exit code, waiting (at most ``timeout`` seconds) on a pidfd: no
        polling, so a CRIU that ends is reaped the moment it does."""
        if self.poll() is not None:
            return self.returncode
        import select
        try:
            fd = os.pidfd_open(self.pid)
        except ProcessLookupError:
            return self.poll()
        try:
            if not select.select([fd], [], [], timeout)[0]:
                raise TimeoutError(f"criu {self.pid} still running after {timeout} s")
        finally:
            os.close(fd)
        try:
            _, status = os.waitpid(self.pid, 0)
            self.returncode = os.waitstatus_to_exitcode(status)
        except ChildProcessError:
            self.returncode = 0
        return self.returncode

    def kill(self):
        if self.poll() is None:
            try:
                os.kill(self.pid, 9)
            except ProcessLookupError:
                pass


class Swrk:
    """One `criu swrk` worker and its socket."""

    def __init__(self, criu, extra_fds=(), inherit_stdio=False):
        import _socket
        a, b = _socket.socketpair(_socket.AF_UNIX, _socket.SOCK_SEQPACKET)
        self.sock = a
        try:
            self.proc = Worker([criu, "swrk", str(b.fileno())],
                               (b.fileno(),) + tuple(extra_fds),
                               stdin_null=not inherit_stdio)
        except OSError as e:
            a.close()
            b.close()
            raise HutchError(f"start criu {criu}: {e.strerror}", e.errno) from None
        b.close()
        self.sent = False

    def send(self, req, fds=()):
        from . import rpc
        self.sent = True
        data = rpc.encode("req", req)
        if fds:
            import _socket
            from ..linux.fdpass import pack_fds
            self.sock.sendmsg([data], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS,
                                        pack_fds(fds))])
        else:
            self.sock.send(data)

    def recv(self):
        """(response dict, fds that came with it) or (None, []) at EOF."""
        import _socket
        from . import rpc
        from ..linux.fdpass import unpack_fds
        data, anc, _, _ = self.sock.recvmsg(1 << 20, _socket.CMSG_SPACE(4 * 8))
        fds = []
        for level, kind, payload in anc:
            if level == _socket.SOL_SOCKET and kind == _socket.SCM_RIGHTS:
                fds += unpack_fds(payload)
        if not data:
            return None, fds
        return rpc.decode("resp", data), fds

    def close(self, kill=False):
        """Waits for CRIU to exit.  ``kill``: kills it first if it was never
        asked anything.  Once a request is out CRIU is let finish on its own (it
        sees the socket closed): killed in the middle of a dump it would leave
        its parasite code in the container's processes."""
        self.sock.close()
        if kill and not self.sent:
            self.proc.kill()
        try:
            self.proc.wait(timeout=30)
        except TimeoutError:
            self.proc.kill()
            self.proc.wait()

    def terminate(self):
        """Kills CRIU whatever it does (a lazy dump that has finished dumping and
        only serves pages), and reaps it."""
        self.sock.close()
        self.proc.kill()
        self.proc.wait()


def call(criu, req, on_notify=None, extra_fds=(), what="criu", inherit_stdio=False,
         on_start=None, ready=None, worker=None, meanwhile=None):
    """Sends ``req`` and answers notifications until the final response, which is
    returned.  ``on_notify(script, pid, fds)`` runs for each action script; an
    exception from it fails the request (CRIU then rolls back).  ``ready``:
    (fd, callback): the callback runs once the fd becomes readable while CRIU
    works (a lazy dump's status fd, written once the dump is done and CRIU only
    serves pages); if it raises, the CRIU worker is killed.  ``meanwhile()``
    runs once the request is sent, while CRIU works; if it raises, CRIU is let
    finish its request first (a dump stopped half-way would leave its parasite
    in the processes), then the exception is raised.  ``worker``: a Swrk
    started earlier (CRIU's own start-up, ~3 ms, then runs alongside hutch's
    preparations); its owner closes it (after a success that can wait until
    hutch has done its own part).  Descriptors named in the request by number
    (images_dir_fd, work_dir_fd, status_fd) need not be passed: CRIU opens them
    through /proc/<hutch>/fd; only inherit_fd ones must be in CRIU's own table."""
    from . import rpc
    w = worker or Swrk(criu, extra_fds, inherit_stdio)
    if on_start is not None:
        on_start(w.proc.pid)
    killed = False
    pending = None
    try:
        w.send(req)
        failpoint(f"{what}:sent")
        if meanwhile is not None:
            try:
                meanwhile()
            except BaseException as e:
                pending = e
        while True:
            if ready is not None:
                import select
                r, _, _ = select.select([w.sock, ready[0]], [], [])
                if ready[0] in r and w.sock not in r:
                    fd, callback = ready
                    ready = None
                    try:
                        os.read(fd, 1)
                        callback()
                    except BaseException:
                        killed = True
                        raise
                    continue
            resp, fds = w.recv()
            if resp is None:
                raise HutchError(f"{what}: criu exited without an answer (exit "
                                 f"{w.proc.wait()})", errno.EIO)
            if resp.get("type") == rpc.NOTIFY:
                n = resp.get("notify") or {}
                ok = True
                try:
                    if on_notify is not None:
                        on_notify(n.get("script", ""), n.get("pid", 0), fds)
                except BaseException:
                    ok = False
                    w.send({"type": rpc.NOTIFY, "notify_success": False})
                    raise
                finally:
                    for fd in fds:
                        try:
                            os.close(fd)
                        except OSError:
                            pass
                if ok:
                    w.send({"type": rpc.NOTIFY, "notify_success": True})
                continue
            if pending is not None:
                raise pending
            return resp
    finally:
        if killed:
            w.terminate()
        elif worker is None:
            w.close()


def version(criu):
    """(major, minor, sublevel) of a CRIU binary, through the RPC."""
    from . import rpc
    resp = call(criu, {"type": rpc.VERSION}, what=f"criu version ({criu})")
    v = resp.get("version") or {}
    return v.get("major_number", 0), v.get("minor_number", 0), v.get("sublevel", 0)


_checked = {}


def check_version(criu, cache_dir=None):
    """The version of ``criu``, refused if older than 4.1.  Remembered per process
    and, with ``cache_dir``, on disk by the binary's identity (size, mtime, inode),
    so that each checkpoint does not start one more CRIU just to ask."""
    if criu in _checked:
        return _checked[criu]
    key = cache = None
    if cache_dir:
        try:
            st = os.stat(criu)
            key = f"{os.path.realpath(criu)}:{st.st_ino}:{st.st_size}:{st.st_mtime_ns}"
            cache = os.path.join(cache_dir, ".criu-version")
            with open(cache) as f:
                k, _, v = f.read().strip().rpartition(" ")
            if k == key:
                ver = tuple(int(x) for x in v.split("."))
                _checked[criu] = ver
                return ver
        except (OSError, ValueError):
            pass
    v = version(criu)
    if v[:2] < MIN_VERSION:
        raise HutchError(f"criu {criu} is version {'.'.join(map(str, v))}; hutch needs "
                         f"{'.'.join(map(str, MIN_VERSION))} or newer "
                         "(tools/install-criu.sh builds one)", errno.EOPNOTSUPP)
    _checked[criu] = v
    if cache:
        try:
            tmp = f"{cache}.{os.getpid()}"
            with open(tmp, "w") as f:
                f.write(f"{key} {'.'.join(map(str, v))}\n")
            os.replace(tmp, cache)
        except OSError:
            pass
    return v


def features(criu):
    """{"mem_track": bool, "lazy_pages": bool} as this CRIU and kernel see them."""
    from . import rpc
    resp = call(criu, {"type": rpc.FEATURE_CHECK, "features": {"mem_track": True,
                                                               "lazy_pages": True}},
                what="criu feature check")
    f = resp.get("features") or {}
    return {"mem_track": bool(f.get("mem_track")), "lazy_pages": bool(f.get("lazy_pages"))}


IMG_COMMON_MAGIC, PAGEMAP_MAGIC = 0x54564319, 0x56084025
PE_LAZY = 1 << 1


def lazy_bytes(images):
    """How much memory a lazy dump left to be pulled: the pages its pagemap
    images mark lazy (CRIU's statistics do not count them).  Each image is two
    magics, then size-prefixed messages: a pagemap_head, then pagemap_entry."""
    import struct
    from . import rpc
    pages = 0
    for name in os.listdir(images):
        if not (name.startswith("pagemap-") and name[8:-4].isdigit() and
                name.endswith(".img")):
            continue
        with open(os.path.join(images, name), "rb") as f:
            data = f.read()
        if struct.unpack("<II", data[:8]) != (IMG_COMMON_MAGIC, PAGEMAP_MAGIC):
            continue
        i, first = 8, True
        while i + 4 <= len(data):
            (size,) = struct.unpack("<I", data[i:i + 4])
            msg = data[i + 4:i + 4 + size]
            i += 4 + size
            if first:           # the pagemap_head
                first = False
                continue
            e = rpc.decode("pagemap_entry", msg)
            if e.get("flags", 0) & PE_LAZY:
                pages += e.get("nr_pages", 0)
    return pages * os.sysconf("SC_PAGE_SIZE")


# CRIU reports this on hosts without CAP_SYS_RESOURCE and carries on
_HARMLESS = ("Can't setup RLIMIT_NOFILE",)


def failure(resp, what, log=None):
    """A one-line error for a failed request: the first error line of CRIU's log
    that is not a harmless one (the cause; the rest are its consequences)."""
    cause = ""
    if log:
        try:
            with open(log, errors="replace") as f:
                for line in f:
                    if "Error (" in line and not any(h in line for h in _HARMLESS):
                        cause = line.split(")", 1)[-1].strip() if line.startswith("(") \
                            else line.strip()
                        break
        except OSError:
            pass
    if not cause:
        msg = (resp.get("cr_errmsg") or "").strip()
        if msg and not any(h in msg for h in _HARMLESS):
            cause = msg
    text = f"{what} failed" + (f": {cause}" if cause else "") + \
        (f" (CRIU's log: {log})" if log else "")
    return HutchError(text, resp.get("cr_errno") or None)


def wait_pid(pid, timeout=60.0):
    """Waits until ``pid`` is gone, child or not (CRIU's page server is its
    daemon, not ours)."""
    if not pid:
        return
    try:
        fd = os.pidfd_open(pid)
    except ProcessLookupError:
        return
    try:
        import select
        select.select([fd], [], [], timeout)
    finally:
        os.close(fd)


class ThawGuard:
    """A process that thaws the container if `hutch migrate` or `hutch
    checkpoint` dies while it is frozen (SIGKILL included): it waits on a pipe;
    EOF without "done" means thaw.  If a CRIU dump is under way it first lets CRIU finish or fail on its own
    (killing CRIU mid-dump could leave its parasite code in the container's
    processes), since CRIU puts the freezer back as it found it."""

    def __init__(self, mgr):
        r, w = os.pipe()
        pid = os.fork()
        if pid == 0:
            try:
                os.setsid()
                # only the pipe: the migration's socket must close when it dies
                os.closerange(3, r)
                os.closerange(r + 1, 65536)
                got = b""
                while True:
                    chunk = os.read(r, 64)
                    if not chunk:
                        break
                    got += chunk
                if b"done" not in got:
                    for word in got.split():
                        if word.startswith(b"criu="):
                            wait_pid(int(word[5:]), 300.0)
                    try:
                        mgr.freeze(False)
                    except Exception:   # noqa: BLE001 - nothing to report to
                        pass
            finally:
                os._exit(0)
        os.close(r)
        self.w, self.pid, self.mgr = w, pid, mgr

    def watch(self, criu_pid):
        if self.w >= 0:
            os.write(self.w, f" criu={criu_pid} ".encode())

    def disarm(self):
        if self.w >= 0:
            os.write(self.w, b"done")

    def thaw_now(self):
        try:
            self.mgr.freeze(False)
        except HutchError:
            pass
        self.disarm()

    def close(self):
        if self.w >= 0:
            os.close(self.w)
            self.w = -1
            try:
                os.waitpid(self.pid, 0)
            except ChildProcessError:
                pass
