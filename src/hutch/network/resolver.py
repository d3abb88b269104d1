"""The daemon of a container network: the containers' DNS server and the port
proxy that IPv6 loopback needs.

hutch runs one per network, in the host's network namespace, from the first
container that joins it to the last that leaves.  Its two jobs:

* DNS on port 53 of the bridge's gateway addresses (UDP and TCP).  A container's
  name, aliases and full id (also as ``NAME.hutch``) answer A and AAAA from the
  network's ``leases.json``, and its addresses answer PTR, with TTL 0.  Every
  other query goes to the host's resolvers in /etc/resolv.conf, loopback ones
  such as 127.0.0.53 included: in the host's namespace the daemon reaches them,
  where a container could not.
* A proxy for published ports that nftables' DNAT cannot serve: connections to
  ``[::1]`` (DNAT does not apply to loopback traffic) and, for a container
  without IPv6, connections to any IPv6 address of the host.

The files in the network's run directory::

    leases.json     written by hutch (atomically); the daemon only reads it
    resolver.pid    {"pid", "starttime"} of the daemon, written by start()
    resolver.sock   the daemon's control socket: one JSON line each way
    resolver.log    what went wrong, cut back to nothing past 1 MiB

The daemon is a fresh interpreter (``python -I -S``) that inherits the DNS
sockets start() bound, so that a bind error reaches the caller, and queries
sent before the daemon is up wait in the sockets.
"""

import os

from ..errors import HutchError

LEASES = "leases.json"
PIDFILE = "resolver.pid"
CONTROL = "resolver.sock"
LOGFILE = "resolver.log"
LOG_LIMIT = 1 << 20         # bytes: resolver.log starts again past this

UPSTREAM_TIMEOUT = 2.0      # s: one upstream resolver's turn
FORWARD_TIMEOUT = 5.0       # s: all of them, for one query
TCP_IDLE = 10.0             # s: a DNS TCP connection that sends nothing is closed
MAX_FORWARDS = 512          # forwarded queries at once; more UDP ones are dropped
MAX_TCP = 256               # DNS TCP connections at once
PROXY_CONNECT = 15.0        # s: a proxied TCP connection's connect to the container
UDP_IDLE = 60.0             # s: a proxied UDP client's association lasts this long
MAX_UDP_CLIENTS = 1024      # associations of one UDP proxy; the oldest goes first

IP_FREEBIND = 15
IPV6_FREEBIND = 78

# the daemon's first words: the hutch sources and dnspython's directory (computed
# by start()) on the path of an isolated interpreter, then serve()
_BOOT = ("import sys; sys.path.insert(0, sys.argv[1]); sys.path.append(sys.argv[2]); "
         "from hutch import jsonlite; from hutch.network.resolver import serve; "
         "serve(**jsonlite.loads(sys.argv[3]))")


# --- what hutch calls ---------------------------------------------------------------
def start(run_dir, listen_ips, *, resolv_conf="/etc/resolv.conf", port=53,
          upstream_port=53):
    """Binds UDP and TCP ``port`` on each of ``listen_ips`` and starts the daemon
    of the network whose run directory is ``run_dir``, detached, with those
    sockets.  Returns (and writes to resolver.pid) ``{"pid", "starttime"}``
    without waiting for the daemon to boot.

    ``upstream_port`` is for tests only: the port of the resolvers named in
    ``resolv_conf`` (the file has no syntax for one)."""
    import sys

    import dns

    from .. import jsonlite
    from ..container.record import proc_stat
    old = _read_pidfile(run_dir)
    if old and _alive(old):
        raise HutchError(f"dns responder of network {_network_name(run_dir)} is "
                         f"already running (pid {old['pid']})")
    socks = []
    try:
        for ip in dict.fromkeys(listen_ips):
            socks.append(_bind_dns(ip, port, udp=True))
            socks.append(_bind_dns(ip, port, udp=False))
        src = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        site = os.path.dirname(os.path.dirname(os.path.abspath(dns.__file__)))
        args = {"run_dir": os.path.abspath(run_dir), "fds": [s.fileno() for s in socks],
                "resolv_conf": resolv_conf, "port": port, "upstream_port": upstream_port}
        pid = _spawn([sys.executable, "-I", "-S", "-c", _BOOT, src, site,
                      jsonlite.dumps(args, compact=True)], args["fds"], run_dir)
    finally:
        for s in socks:
            s.close()
    st = proc_stat(pid)
    if st is None or st[0] in ("Z", "X"):
        raise HutchError(f"dns responder: the daemon exited at once (see "
                         f"{os.path.join(run_dir, LOGFILE)})")
    data = {"pid": pid, "starttime": st[1]}
    try:
        _write_atomic(os.path.join(run_dir, PIDFILE), jsonlite.dumps(data) + "\n")
    except OSError as e:
        stop(run_dir, data)
        raise HutchError.from_os("dns responder: write resolver.pid", e) from None
    return data


def reload(run_dir, timeout=3.0):
    """Has the daemon read leases.json and resolv.conf again and open or close
    its port proxies to match; returns its reply, ``{"t": "ok", "proxies":
    [...], "errors": [...]}``.  Waits (up to ``timeout`` s) for a daemon that
    was just started to open its control socket."""
    return call(run_dir, {"t": "reload"}, timeout)


def links(run_dir, ops, timeout=15.0, wait=True, reply=True):
    """Has the daemon make or remove links (:func:`hutch.network.nl.apply`'s
    ``ops``): it has pyroute2 loaded already, which a hutch command would take
    ~100 ms to import.  With ``reply`` False the request's socket is returned,
    for :func:`answer` to read the result later.  With ``wait`` False the
    daemon queues them and answers at once (removals; it logs their errors, and finishes them before it
    exits).  HutchError ENOTCONN when no daemon runs (the caller then does it
    itself)."""
    msg = {"t": "links", "ops": ops}
    if not wait:
        msg["nowait"] = True
    return call(run_dir, msg, timeout, reply=reply)


def call(run_dir, msg, timeout=3.0, reply=True):
    """One request to the daemon, waiting for a daemon that was just started
    to open its control socket.  With ``reply`` False the request is sent and
    its socket returned: :func:`answer` reads the reply later (the work goes on
    meanwhile)."""
    import errno
    import time
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = _send(run_dir, msg, max(0.1, deadline - time.monotonic()))
            return _reply(s) if reply else s
        except OSError as e:
            data = _read_pidfile(run_dir)
            up = bool(data) and _alive(data)
            if up and e.errno in (errno.ENOENT, errno.ECONNREFUSED) and \
                    time.monotonic() < deadline:
                time.sleep(0.005)       # it has not opened its control socket yet
                continue
            name = _network_name(run_dir)
            if up:
                raise HutchError(f"dns responder of network {name} does not answer: "
                                 f"{e.strerror or e}", e.errno) from None
            why = f"pid {data['pid']} has exited{_last_log_line(run_dir)}" if data else \
                "it was never started, or was stopped"
            raise HutchError(f"dns responder of network {name} is not running: {why}",
                             errno.ENOTCONN) from None


def answer(run_dir, s):
    """The reply to a request :func:`call` sent with ``reply`` False."""
    try:
        return _reply(s)
    except OSError as e:
        raise HutchError(f"dns responder of network {_network_name(run_dir)} does not "
                         f"answer: {e.strerror or e}", e.errno) from None


def stop(run_dir, data=None, timeout=2.0):
    """Stops the daemon (``data`` is what start() returned, else resolver.pid
    says) and removes its socket and pid file.  Only the process that started
    at the recorded time is signalled; nothing running is not an error."""
    from ..container.record import stop_process
    recorded = _read_pidfile(run_dir)
    if data is None:
        data = recorded
    if data:
        ours = recorded is None or _same(recorded, data)   # its socket is this one's
        stop_process(data.get("pid") or 0, data.get("starttime"), ask=lambda: ours and
                     _request(run_dir, {"t": "stop"}, min(timeout, 1.0)).get("t") == "ok",
                     timeout=timeout)
    if recorded is not None and data and not _same(recorded, data) and _alive(recorded):
        return      # the files are another daemon's, which still runs
    for name in (CONTROL, PIDFILE):
        try:
            os.unlink(os.path.join(run_dir, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise HutchError.from_os(f"dns responder: remove {name}", e) from None


# --- helpers of the calls above -----------------------------------------------------
def _hostport(ip, port):
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def _bind_dns(ip, port, udp):
    """A socket bound to ``ip``:``port`` (listening, for TCP), even if ``ip`` is
    not (yet) a usable address of the host: freebind."""
    import socket
    what = f"dns responder: bind {_hostport(ip, port)}/{'udp' if udp else 'tcp'}"
    kind = socket.SOCK_DGRAM if udp else socket.SOCK_STREAM
    try:
        family, _, _, _, addr = socket.getaddrinfo(ip, port, 0, kind, 0,
                                                   socket.AI_NUMERICHOST)[0]
    except (socket.gaierror, UnicodeError):
        raise HutchError(f"{what}: not an ip address") from None
    s = socket.socket(family, kind)
    try:
        if family == socket.AF_INET6:
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            s.setsockopt(socket.IPPROTO_IPV6, IPV6_FREEBIND, 1)
        else:
            s.setsockopt(socket.IPPROTO_IP, IP_FREEBIND, 1)
        if not udp:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        if not udp:
            s.listen(128)
    except OSError as e:
        s.close()
        raise HutchError(f"{what}: {e.strerror or e}", e.errno) from None
    return s


def _spawn(argv, keep, run_dir):
    """Runs ``argv`` as a daemon (double fork, new session, stdio /dev/null) with
    the fds ``keep`` inherited and no other; returns its pid once it has
    exec'd.  The middle child sends the pid over a pipe; the daemon's end of it
    closes on exec, or carries the reason exec failed."""
    import select
    r, w = os.pipe()        # both close-on-exec
    middle = os.fork()
    if middle == 0:
        try:
            os.close(r)
            os.setsid()
            pid = os.fork()
            if pid == 0:
                try:
                    null = os.open("/dev/null", os.O_RDWR)
                    for fd in (0, 1, 2):
                        os.dup2(null, fd)
                    lo = 3
                    for fd in sorted({*keep, w}):
                        os.closerange(lo, fd)
                        lo = fd + 1
                    os.closerange(lo, 1 << 20)
                    for fd in keep:
                        os.set_inheritable(fd, True)
                    os.chdir("/")
                    os.umask(0o022)
                    os.execv(argv[0], argv)
                except OSError as e:
                    os.write(w, f"error {e.errno or 0} exec {argv[0]}: "
                                f"{e.strerror or e}\n".encode())
                finally:
                    os._exit(127)
            os.write(w, f"pid {pid}\n".encode())
        finally:
            os._exit(0)
    os.close(w)
    got = b""
    try:
        while select.select([r], [], [], 10.0)[0]:
            chunk = os.read(r, 4096)
            if not chunk:
                break
            got += chunk
    finally:
        os.close(r)
        os.waitpid(middle, 0)
    pid = None
    for line in got.decode(errors="replace").splitlines():
        word, _, rest = line.partition(" ")
        if word == "error":
            code, _, msg = rest.partition(" ")
            _log(run_dir, f"dns responder: {msg}")
            raise HutchError(f"dns responder: {msg}", int(code) or None)
        if word == "pid":
            pid = int(rest)
    if pid is None:
        raise HutchError("dns responder: the daemon's pid did not come back")
    return pid


def _write_atomic(path, text):
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        with open(tmp, "w") as f:
            f.write(text)
        os.rename(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _read_pidfile(run_dir):
    """resolver.pid as a dict, or None if it is absent or unreadable."""
    from .. import jsonlite
    try:
        data = jsonlite.load_file(os.path.join(run_dir, PIDFILE))
    except (OSError, ValueError):
        return None
    if isinstance(data, dict) and isinstance(data.get("pid"), int):
        return data
    return None


def _same(a, b):
    return a.get("pid") == b.get("pid") and a.get("starttime") == b.get("starttime")


def running(data):
    """Whether the daemon ``start`` returned ``data`` for still runs."""
    return bool(data) and _alive(data)


def _alive(data):
    from ..container.record import proc_stat
    st = proc_stat(data["pid"])
    return st is not None and st[1] == data.get("starttime") and st[0] not in ("Z", "X")


def _network_name(run_dir):
    from .. import jsonlite
    try:
        name = jsonlite.load_file(os.path.join(run_dir, LEASES)).get("network")
        if isinstance(name, str) and name:
            return name
    except (OSError, ValueError, AttributeError):
        pass
    return os.path.basename(os.path.normpath(run_dir))


def _last_log_line(run_dir):
    try:
        with open(os.path.join(run_dir, LOGFILE), "rb") as f:
            f.seek(max(0, os.fstat(f.fileno()).st_size - 512))
            lines = f.read().decode(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return f" (its log: {lines[-1]})" if lines else ""


def _request(run_dir, msg, timeout):
    """One request on the daemon's control socket and its reply (a dict).
    OSError if there is no daemon to answer."""
    return _reply(_send(run_dir, msg, timeout))


def _send(run_dir, msg, timeout):
    """Connects to the daemon's control socket and sends ``msg``; returns the
    socket, whose answer :func:`_reply` reads.  OSError if there is no daemon."""
    import errno

    import _socket as socket   # (socket.py costs ~2 ms more to import)

    from .. import jsonlite
    from ..linux.fdpass import unix_path
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        with unix_path(os.path.join(run_dir, CONTROL)) as path:
            s.connect(path)
        s.sendall(jsonlite.dumps(msg, compact=True).encode() + b"\n")
    except socket.timeout:
        s.close()
        raise OSError(errno.ETIMEDOUT, "no answer in time") from None
    except BaseException:
        s.close()
        raise
    return s


def _reply(s):
    """The answer on a socket :func:`_send` returned (closed here)."""
    import errno

    import _socket as socket

    from .. import jsonlite
    buf = b""
    try:
        while not buf.endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            buf += chunk
    except socket.timeout:
        raise OSError(errno.ETIMEDOUT, "no answer in time") from None
    finally:
        s.close()
    if not buf.endswith(b"\n"):
        raise OSError(errno.ECONNRESET, "it closed the connection without an answer")
    try:
        reply = jsonlite.loads(buf)
    except ValueError as e:
        raise OSError(errno.EPROTO, f"unreadable answer: {e}") from None
    if not isinstance(reply, dict):
        raise OSError(errno.EPROTO, "unreadable answer")
    if reply.get("t") == "error":
        raise HutchError(str(reply.get("msg")), reply.get("errno"))
    return reply


def _log(run_dir, msg):
    """Appends one line to resolver.log, which starts again past LOG_LIMIT."""
    import time
    line = f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {msg}".replace("\n", "\\n") + "\n"
    try:
        fd = os.open(os.path.join(run_dir, LOGFILE),
                     os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o644)
    except OSError:
        return
    try:
        if os.fstat(fd).st_size > LOG_LIMIT:
            os.ftruncate(fd, 0)
        os.write(fd, line.encode(errors="replace"))
    except OSError:
        pass
    finally:
        os.close(fd)


def _ip(family, text):
    """``text`` as the canonical spelling of an address of ``family``, or None."""
    import socket
    if not isinstance(text, str) or not text:
        return None
    try:
        return socket.inet_ntop(family, socket.inet_pton(family, text))
    except (OSError, ValueError):
        return None


# --- the daemon -----------------------------------------------------------------------
def serve(run_dir, fds, *, resolv_conf="/etc/resolv.conf", port=53, upstream_port=53):
    """The daemon's main: answers DNS on the inherited sockets ``fds`` and runs
    the port proxies of ``run_dir``'s leases until told to stop (control
    request "stop", or SIGTERM).  ``port`` is the port of ``fds`` (a
    resolv.conf that names them is not forwarded to); ``upstream_port`` is the
    test-only port of the upstream resolvers."""
    try:
        with open("/proc/self/comm", "w") as f:
            f.write("hutch-dns")
    except OSError:
        pass
    socks = []
    ctl = None
    try:
        import socket
        for fd in fds:
            os.set_inheritable(fd, False)
            socks.append(socket.socket(fileno=fd))
        # first, so that a reload() waiting for it gets in line at once
        ctl, ctl_ino = _listen_control(run_dir)
        try:
            import resource
            _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        except (ImportError, OSError, ValueError):
            pass
        import asyncio

        import dns.asyncquery   # noqa: F401 - here, so that a broken install is logged
        import dns.message
        import dns.reversename  # noqa: F401
        import dns.rrset        # noqa: F401
        d = _Daemon(run_dir, socks, ctl, resolv_conf, port, upstream_port)
        asyncio.run(d.run())
    except BaseException as e:     # noqa: BLE001 - the log is all there is to tell
        if not isinstance(e, (SystemExit, KeyboardInterrupt)):
            import traceback
            _log(run_dir, "dns responder failed: " + " | ".join(
                traceback.format_exception(e)).replace("\n", " "))
    finally:
        for s in socks:
            s.close()
        if ctl is not None:
            _unlink_if_ours(os.path.join(run_dir, CONTROL), ctl_ino)
            ctl.close()


def _listen_control(run_dir):
    import socket

    from ..linux.fdpass import unix_path
    path = os.path.join(run_dir, CONTROL)
    try:
        os.unlink(path)         # a daemon's that was killed
    except FileNotFoundError:
        pass
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        with unix_path(path) as short:
            s.bind(short)
        os.chmod(path, 0o600)
        s.listen(16)
        return s, os.stat(path).st_ino
    except OSError:
        s.close()
        raise


def _unlink_if_ours(path, ino):
    """Removes the control socket's path unless another daemon's is there now."""
    try:
        if os.stat(path).st_ino == ino:
            os.unlink(path)
    except OSError:
        pass


class _Leases:
    """leases.json, parsed: names and addresses for DNS, published ports for
    the proxy.  A file that is missing or malformed leaves the last good one
    in force."""

    def __init__(self, path, log):
        self.path, self.log = path, log
        self.sig = None
        self.network = ""
        self.names = {}         # lower-case name -> [(ip4, ip6)]
        self.ptr = {}           # address -> name
        self.leases = {}        # cid -> {"ip4", "ip6", "ports"}
        self.internal = False
        self.problem = None

    def check(self, force=False):
        """Reads the file if it changed (or ``force``); True if what it says
        was taken in."""
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError as e:
            sig = ("missing", e.errno)
        if sig == self.sig and not force:
            return False
        self.sig = sig
        try:
            from .. import jsonlite
            self._take(jsonlite.load_file(self.path))
        except (OSError, ValueError) as e:
            why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
            self.problem = f"{LEASES}: {why}; the last good copy is kept"
            self.log(self.problem)
            return False
        self.problem = None
        return True

    def _take(self, data):
        import socket
        if not isinstance(data, dict) or not isinstance(data.get("leases") or {}, dict):
            raise ValueError("not a leases object")
        names, ptr, leases = {}, {}, {}
        for cid, lease in (data.get("leases") or {}).items():
            if not isinstance(lease, dict):
                continue
            ip4 = _ip(socket.AF_INET, lease.get("ip4"))
            ip6 = _ip(socket.AF_INET6, lease.get("ip6"))
            name = lease.get("name")
            aliases = lease.get("aliases")
            aliases = aliases if isinstance(aliases, list) else []
            for n in (name, *aliases, cid):
                if isinstance(n, str) and n.strip("."):
                    names.setdefault(n.strip(".").lower(), []).append((ip4, ip6))
            label = name if isinstance(name, str) and name.strip(".") else cid
            for ip in (ip4, ip6):
                if ip:
                    ptr.setdefault(ip, label.strip("."))
            ports = []
            for p in lease.get("ports") or []:
                try:
                    proto = str(p["proto"]).lower()
                    hp, cp = int(p["host_port"]), int(p["ctr_port"])
                    hip = p.get("host_ip") or ""
                except (KeyError, TypeError, ValueError, AttributeError):
                    continue
                if proto in ("tcp", "udp") and 0 < hp < 65536 and 0 < cp < 65536:
                    ports.append((proto, hip, hp, cp))
            leases[cid] = {"ip4": ip4, "ip6": ip6, "ports": ports}
        self.network = str(data.get("network") or "")
        # an internal network's containers reach nothing outside it, a DNS
        # tunnel through this daemon included: other names are refused
        self.internal = bool(data.get("internal"))
        self.names, self.ptr, self.leases = names, ptr, leases


class _Resolvers:
    """The host's resolvers from resolv.conf, read again when it changes."""

    def __init__(self, path, port, own, log):
        self.path, self.port, self.own, self.log = path, port, own, log
        self.sig = None
        self.servers = []

    def get(self, force=False):
        import socket
        try:
            st = os.stat(self.path)
            sig = (st.st_ino, st.st_mtime_ns, st.st_size)
        except OSError as e:
            sig = ("missing", e.errno)
        if sig == self.sig and not force:
            return self.servers
        self.sig = sig
        servers = []
        try:
            with open(self.path, "rb") as f:
                text = f.read(1 << 16).decode(errors="replace")
        except OSError as e:
            self.log(f"read {self.path}: {e.strerror}")
            text = ""
        for line in text.splitlines():
            words = line.split()
            if len(words) < 2 or words[0] != "nameserver":
                continue
            addr, _, scope = words[1].partition("%")
            family = socket.AF_INET6 if ":" in addr else socket.AF_INET
            ip = _ip(family, addr)
            if ip is None or (ip, self.port) in self.own:
                continue        # not an address, or ourselves: a loop
            server = (f"{ip}%{scope}" if scope else ip, self.port)
            if server not in servers:
                servers.append(server)
        self.servers = servers
        return servers


class _Daemon:
    """The event loop's state.  Concurrency: asyncio, on one thread.  Every job
    here waits on sockets, and a coroutine or a callback per query or connection
    costs little, so a slow upstream only holds its own task: local names are
    answered on the spot, in the callback that read the query.  There is no lock
    to take, and no thread to outlive shutdown, which cancels the tasks."""

    def __init__(self, run_dir, socks, ctl, resolv_conf, port, upstream_port):
        import socket
        self.run_dir = run_dir
        self.socks, self.ctl = socks, ctl
        self.logged = {}
        self.leases = _Leases(os.path.join(run_dir, LEASES), self.log)
        own = set()
        for s in socks:
            ip = _ip(s.family, s.getsockname()[0])
            if ip:
                own.add((ip, port))
        self.resolvers = _Resolvers(resolv_conf, upstream_port, own, self.log)
        self.tasks = set()          # forwards and connections, cancelled at the end
        self.forwards = 0
        self.tcp_conns = 0
        self.proxies = {}           # (proto, listen ip, port) -> _TcpProxy/_UdpProxy
        self.proxy_errors = []
        self.readers = []
        self.socket = socket

    # --- logging --------------------------------------------------------------------
    def log(self, msg, every=0.0):
        """Logs ``msg``, at most once per ``every`` s for the same text."""
        import time
        if every:
            now = time.monotonic()
            if now - self.logged.get(msg, -every) < every:
                return
            self.logged[msg] = now
            if len(self.logged) > 256:
                self.logged.clear()
        _log(self.run_dir, msg)

    def _loop_error(self, loop, context):
        exc = context.get("exception")
        self.log(f"internal error: {context.get('message')}: {exc!r}", every=10)

    # --- life -----------------------------------------------------------------------
    async def run(self):
        import asyncio
        import signal
        loop = asyncio.get_running_loop()
        self.loop = loop
        loop.set_exception_handler(self._loop_error)
        self.stopping = asyncio.Event()
        loop.add_signal_handler(signal.SIGTERM, self.stopping.set)
        loop.add_signal_handler(signal.SIGINT, self.stopping.set)
        for s in self.socks + [self.ctl]:
            s.setblocking(False)
        for s in self.socks:
            if s.type == self.socket.SOCK_DGRAM:
                self._watch(s, self._dns_udp_ready, s)
            else:
                self._watch(s, self._accept_ready, s, self._dns_tcp)
        self._watch(self.ctl, self._accept_ready, self.ctl, self._control)
        self.leases.check()
        self.sync_proxies()
        # one thread for netlink (links()): it loads pyroute2 now, so that the
        # first container's veth does not wait for the import
        from concurrent.futures import ThreadPoolExecutor
        self.netlink = ThreadPoolExecutor(1, thread_name_prefix="netlink")
        self.netlink.submit(_warm_netlink)
        # removals have a thread of their own: a veth's takes ~10 ms (the
        # kernel waits for RCU), which the next container's must not wait for
        self.reaper = ThreadPoolExecutor(1, thread_name_prefix="reaper")
        sweeper = asyncio.ensure_future(self._sweep())
        try:
            await self.stopping.wait()
        finally:
            sweeper.cancel()
            for fd in self.readers:
                loop.remove_reader(fd)
            for px in list(self.proxies.values()):
                px.close()
            self.proxies.clear()
            tasks = list(self.tasks)
            for t in tasks:
                t.cancel()
            await asyncio.gather(sweeper, *tasks, return_exceptions=True)
            self.netlink.shutdown(wait=True)
            self.reaper.shutdown(wait=True)

    def _watch(self, sock, fn, *args):
        self.loop.add_reader(sock.fileno(), fn, *args)
        self.readers.append(sock.fileno())

    def _unwatch(self, sock):
        """Undoes :meth:`_watch` and closes the socket."""
        fd = sock.fileno()
        self.loop.remove_reader(fd)
        if fd in self.readers:
            self.readers.remove(fd)
        sock.close()

    def spawn(self, coro):
        t = self.loop.create_task(coro)
        self.tasks.add(t)
        t.add_done_callback(self.tasks.discard)
        return t

    async def _sweep(self):
        """Every few seconds: drops idle UDP clients, and ends the daemon if its
        network's directory was removed without stopping it."""
        import asyncio
        while True:
            await asyncio.sleep(5.0)
            for px in list(self.proxies.values()):
                if isinstance(px, _UdpProxy):
                    px.expire()
            if not os.path.isdir(self.run_dir):
                self.stopping.set()

    def _accept_ready(self, listening, handler):
        """Accepts what is waiting on ``listening`` and runs ``handler(conn)``
        for each, as a task.  Out of fds, it stops listening for a second
        rather than spin."""
        import errno
        for _ in range(64):
            try:
                conn, _ = listening.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    self.log(f"accept: {e.strerror}", every=60)
                    fd = listening.fileno()
                    self.loop.remove_reader(fd)
                    self.loop.call_later(1.0, self._resume, listening, handler)
                return
            conn.setblocking(False)
            self.spawn(handler(conn))

    def _resume(self, listening, handler):
        if listening.fileno() >= 0 and listening.fileno() in self.readers:
            self.loop.add_reader(listening.fileno(), self._accept_ready, listening, handler)

    # --- control ----------------------------------------------------------------------
    async def _control(self, conn):
        import asyncio

        from .. import jsonlite
        reader, writer = await asyncio.open_connection(sock=conn)
        try:
            line = await asyncio.wait_for(reader.readline(), 5.0)
            msg = None
            try:
                msg = jsonlite.loads(line)
                kind = msg.get("t") if isinstance(msg, dict) else None
            except ValueError:
                kind = None
            if kind == "reload":
                reply = self.reload()
            elif kind == "links" and msg.get("nowait"):
                # removals: queued in order on the reaper thread, answered at
                # once (a make of the same name removes a stale one first)
                ops = msg.get("ops") or []
                fut = self.loop.run_in_executor(self.reaper, _apply_links, ops)
                fut.add_done_callback(self._queued_done)
                reply = {"t": "ok", "queued": True}
            elif kind == "links":
                reply = await self._links(msg.get("ops") or [])
            elif kind == "stop":
                reply = {"t": "ok"}
                self.stopping.set()
            else:
                reply = {"t": "error", "msg": f"unknown request {line[:64]!r}"}
            writer.write(jsonlite.dumps(reply, compact=True).encode() + b"\n")
            await writer.drain()
        except (OSError, EOFError, asyncio.TimeoutError, asyncio.LimitOverrunError,
                ValueError):
            pass
        finally:
            writer.close()

    def _queued_done(self, fut):
        if not fut.cancelled() and fut.exception() is not None:
            self.log(f"links: {fut.exception()}")

    async def _links(self, ops):
        """Link work for a hutch command (hutch.network.nl.apply), in the one
        netlink thread: pyroute2's calls block, and the DNS must not wait."""
        from ..errors import HutchError
        try:
            await self.loop.run_in_executor(self.netlink, _apply_links, ops)
        except HutchError as e:
            return {"t": "error", "msg": str(e), "errno": e.errno}
        except Exception as e:      # noqa: BLE001 - reported to the command
            return {"t": "error", "msg": f"links: {e!r}", "errno": 5}
        return {"t": "ok"}

    def reload(self):
        self.leases.check(force=True)
        self.resolvers.get(force=True)
        self.sync_proxies()
        errors = ([self.leases.problem] if self.leases.problem else []) + self.proxy_errors
        return {"t": "ok", "proxies": [px.describe() for px in self.proxies.values()],
                "errors": errors}

    # --- DNS ----------------------------------------------------------------------------
    def _dns_udp_ready(self, sock):
        for _ in range(64):
            try:
                data, addr = sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue        # an ICMP error queued on the socket

            def send(wire, addr=addr):
                try:
                    sock.sendto(wire, addr)
                except OSError:
                    pass
            self.query(data, False, send)

    async def _dns_tcp(self, conn):
        import asyncio
        reader, writer = await asyncio.open_connection(sock=conn)
        self.tcp_conns += 1
        pending = set()

        def send(wire):
            if not writer.is_closing():
                writer.write(len(wire).to_bytes(2, "big") + wire)
        try:
            if self.tcp_conns > MAX_TCP:
                return
            while True:
                try:
                    head = await asyncio.wait_for(reader.readexactly(2), TCP_IDLE)
                    data = await asyncio.wait_for(
                        reader.readexactly(int.from_bytes(head, "big")), TCP_IDLE)
                except (OSError, EOFError, asyncio.TimeoutError):
                    break
                t = self.query(data, True, send)
                if t is not None:
                    pending.add(t)
                    t.add_done_callback(pending.discard)
                    if len(pending) >= 16:
                        await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                try:
                    await writer.drain()
                except OSError:
                    break
            if pending:
                await asyncio.wait(pending, timeout=FORWARD_TIMEOUT + 1)
                try:
                    await writer.drain()
                except OSError:
                    pass
        finally:
            for t in pending:
                t.cancel()
            self.tcp_conns -= 1
            writer.close()

    def query(self, data, tcp, send):
        """Answers the DNS message ``data`` through ``send(wire)``: at once if
        it is about a container, else from a task that asks upstream (returned)."""
        import dns.exception
        import dns.flags
        import dns.message
        import dns.opcode
        import dns.rcode
        try:
            q = dns.message.from_wire(data)
        except dns.exception.DNSException:
            self._formerr(data, send)
            return None
        except Exception:       # noqa: BLE001 - a parser's slip is a bad packet too
            self._formerr(data, send)
            return None
        if q.flags & dns.flags.QR:
            return None         # a response: never answer one (no loops)
        if q.opcode() != dns.opcode.QUERY or len(q.question) != 1:
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.NOTIMP if q.opcode() != dns.opcode.QUERY
                        else dns.rcode.FORMERR)
            send(self.wire(r, q, tcp))
            return None
        if self.leases.check():
            self.sync_proxies()
        r = self.local(q)
        if r is None and getattr(self.leases, "internal", False):
            r = dns.message.make_response(q)
            r.set_rcode(dns.rcode.REFUSED)
        if r is not None:
            send(self.wire(r, q, tcp))
            return None
        if self.forwards >= MAX_FORWARDS:
            self.log("too many queries waiting for upstream resolvers; dropping",
                     every=60)
            if tcp:
                send(self.wire(self.servfail(q), q, tcp))
            return None
        self.forwards += 1
        t = self.spawn(self._forward(q, tcp, send))
        t.add_done_callback(self._forward_done)
        return t

    def _forward_done(self, _):
        self.forwards -= 1

    def _formerr(self, data, send):
        """FORMERR for a query too broken to parse, if its header says it is one."""
        import dns.flags
        import dns.message
        import dns.rcode
        if len(data) < 12 or data[2] & 0x80 or data[2] & 0x78:
            return
        r = dns.message.Message(id=int.from_bytes(data[:2], "big"))
        r.flags = dns.flags.QR | (dns.flags.RD if data[2] & 1 else 0)
        r.set_rcode(dns.rcode.FORMERR)
        send(r.to_wire())

    def wire(self, r, q, tcp):
        """``r`` in wire format, truncated (TC) to what the client takes."""
        if tcp:
            limit = 65535
        else:
            limit = max(512, q.payload) if q.edns >= 0 else 512
        try:
            return r.to_wire(max_size=limit, prefer_truncation=True)
        except Exception:   # noqa: BLE001 - whatever upstream sent, answer something
            return self.servfail(q).to_wire()

    def servfail(self, q):
        import dns.flags
        import dns.message
        import dns.rcode
        r = dns.message.make_response(q)
        r.flags |= dns.flags.RA
        r.set_rcode(dns.rcode.SERVFAIL)
        return r

    def local(self, q):
        """The answer to ``q`` from the leases, or None if it is not ours."""
        import dns.name
        import dns.rcode
        import dns.rdataclass
        import dns.rdatatype as T
        import dns.reversename
        import dns.rrset
        question = q.question[0]
        if question.rdclass not in (dns.rdataclass.IN, dns.rdataclass.ANY):
            return None
        qname, rdtype = question.name, question.rdtype
        text = qname.to_text(omit_final_dot=True).lower()
        if text.endswith((".in-addr.arpa", ".ip6.arpa")):
            try:
                addr = dns.reversename.to_address(qname)
            except Exception:   # noqa: BLE001 - a partial or odd reverse name
                return None
            ip = _ip(self.socket.AF_INET6 if ":" in addr else self.socket.AF_INET, addr)
            target = self.leases.ptr.get(ip)
            if target is None:
                return None
            r = self._response(q)
            if rdtype in (T.PTR, T.ANY):
                try:
                    ptr = dns.name.from_text(target)
                except Exception:   # noqa: BLE001 - a name DNS cannot carry
                    return None
                r.answer.append(dns.rrset.from_text_list(
                    qname, 0, dns.rdataclass.IN, T.PTR, [ptr.to_text()]))
            return r
        ours = text.endswith(".hutch")
        if ours:
            text = text[:-len(".hutch")]
        found = self.leases.names.get(text)
        if found is None:
            if not ours:
                return None
            r = self._response(q)
            r.set_rcode(dns.rcode.NXDOMAIN)
            return r
        r = self._response(q)
        for want, index in ((T.A, 0), (T.AAAA, 1)):
            if rdtype in (want, T.ANY):
                ips = list(dict.fromkeys(e[index] for e in found if e[index]))
                if ips:
                    r.answer.append(dns.rrset.from_text_list(
                        qname, 0, dns.rdataclass.IN, want, ips))
        return r        # without an answer, NODATA: the name is there

    def _response(self, q):
        import dns.flags
        import dns.message
        r = dns.message.make_response(q)
        r.flags |= dns.flags.AA | dns.flags.RA
        return r

    async def _forward(self, q, tcp, send):
        """Asks the host's resolvers in turn; sends their answer with the
        client's id, or SERVFAIL."""
        import dns.asyncquery
        import dns.flags
        import dns.rcode
        servers = self.resolvers.get()
        if not servers:
            self.log("resolv.conf names no resolver: non-local names fail", every=300)
            send(self.wire(self.servfail(q), q, tcp))
            return
        client_id = q.id
        q.id = int.from_bytes(os.urandom(2), "big")     # upstream sees its own
        deadline = self.loop.time() + FORWARD_TIMEOUT
        answer = refused = None
        for ip, port in servers:
            left = deadline - self.loop.time()
            if left <= 0.01:
                break
            try:
                if tcp:
                    r = await dns.asyncquery.tcp(q, ip, min(UPSTREAM_TIMEOUT, left), port)
                else:
                    r = await dns.asyncquery.udp(q, ip, min(UPSTREAM_TIMEOUT, left), port,
                                                 ignore_unexpected=True, ignore_errors=True)
                    if r.flags & dns.flags.TC:
                        r = await self._retry_tcp(q, ip, port, deadline, r)
            except Exception as e:  # noqa: BLE001 - any failure: the next one
                self.log(f"upstream {_hostport(ip, port)}: {type(e).__name__}: {e}",
                         every=60)
                continue
            if r.rcode() in (dns.rcode.SERVFAIL, dns.rcode.REFUSED, dns.rcode.NOTIMP):
                refused = r         # as glibc does: try the next one
                continue
            answer = r
            break
        answer = answer or refused
        q.id = client_id
        if answer is None:
            send(self.wire(self.servfail(q), q, tcp))
            return
        answer.id = client_id
        send(self.wire(answer, q, tcp))

    async def _retry_tcp(self, q, ip, port, deadline, truncated):
        import dns.asyncquery
        left = deadline - self.loop.time()
        if left <= 0.01:
            return truncated
        try:
            return await dns.asyncquery.tcp(q, ip, min(UPSTREAM_TIMEOUT, left), port)
        except Exception:   # noqa: BLE001 - the client can retry over TCP itself
            return truncated

    # --- port proxies ---------------------------------------------------------------------
    def sync_proxies(self):
        """Opens and closes listeners to match the leases' published ports."""
        want, errors = {}, []
        for cid, lease in self.leases.leases.items():
            for proto, hip, hp, cp in lease["ports"]:
                if hip not in ("", "::", "::1"):
                    continue
                if lease["ip6"]:
                    listen, target = "::1", lease["ip6"]
                elif lease["ip4"]:
                    listen, target = ("::1" if hip == "::1" else "::"), lease["ip4"]
                else:
                    continue
                key = (proto, listen, hp)
                spec = {"proto": proto, "listen": listen, "host_port": hp,
                        "target": target, "ctr_port": cp, "container": cid}
                if key in want:
                    errors.append(f"port proxy: {_hostport(listen, hp)}/{proto} is "
                                  f"published by both {want[key]['container']} and {cid}")
                    continue
                want[key] = spec
        for key, px in list(self.proxies.items()):
            if want.get(key) != px.spec:
                px.close()
                del self.proxies[key]
        for key, spec in want.items():
            if key in self.proxies:
                continue
            cls = _TcpProxy if spec["proto"] == "tcp" else _UdpProxy
            try:
                self.proxies[key] = cls(self, spec)
            except OSError as e:
                errors.append(f"port proxy: bind {_hostport(spec['listen'], spec['host_port'])}"
                              f"/{spec['proto']}: {e.strerror or e} (errno {e.errno})")
        for e in errors:
            if e not in self.proxy_errors:
                self.log(e)
        self.proxy_errors = errors


def _proxy_socket(spec, kind):
    import socket
    s = socket.socket(socket.AF_INET6, kind)
    try:
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if kind == socket.SOCK_STREAM:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((spec["listen"], spec["host_port"]))
        if kind == socket.SOCK_STREAM:
            s.listen(128)
        s.setblocking(False)
    except OSError:
        s.close()
        raise
    return s


class _TcpProxy:
    """A listener whose connections are joined to the container's port."""

    def __init__(self, d, spec):
        import socket
        self.d, self.spec = d, spec
        self.sock = _proxy_socket(spec, socket.SOCK_STREAM)
        self.conns = set()
        d._watch(self.sock, d._accept_ready, self.sock, self._conn)

    def describe(self):
        return dict(self.spec)

    def close(self):
        self.d._unwatch(self.sock)
        for t in list(self.conns):
            t.cancel()

    async def _conn(self, conn):
        import asyncio
        me = asyncio.current_task()
        self.conns.add(me)
        down = up = None
        try:
            r1, down = await asyncio.open_connection(sock=conn)
            try:
                r2, up = await asyncio.wait_for(asyncio.open_connection(
                    self.spec["target"], self.spec["ctr_port"]), PROXY_CONNECT)
            except (OSError, asyncio.TimeoutError):
                return      # the client sees its connection closed
            await asyncio.gather(_pump(r1, up, down), _pump(r2, down, up))
        finally:
            self.conns.discard(me)
            for w in (down, up):
                if w is not None:
                    w.close()
            if down is None:
                conn.close()


async def _pump(reader, writer, other):
    """Copies ``reader`` to ``writer`` until EOF, then half-closes ``writer``.
    On an error both connections are dropped."""
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        if writer.can_write_eof() and not writer.is_closing():
            writer.write_eof()
    except OSError:
        writer.transport.abort()
        other.transport.abort()


class _UdpProxy:
    """A listener whose clients each get a socket connected to the container's
    port; replies go back from the listener, from the address the client sent
    to (IPV6_PKTINFO, for a wildcard listener)."""

    def __init__(self, d, spec):
        import socket
        self.d, self.spec = d, spec
        self.socket = socket
        self.sock = _proxy_socket(spec, socket.SOCK_DGRAM)
        self.pktinfo = spec["listen"] == "::"
        if self.pktinfo:
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_RECVPKTINFO, 1)
        self.family = socket.AF_INET6 if ":" in spec["target"] else socket.AF_INET
        self.clients = {}       # client address -> [socket, last use, pktinfo]
        d._watch(self.sock, self._from_client)

    def describe(self):
        return dict(self.spec)

    def close(self):
        self.d._unwatch(self.sock)
        for addr in list(self.clients):
            self._drop(addr)

    def _drop(self, addr):
        c = self.clients.pop(addr, None)
        if c is not None:
            self.d.loop.remove_reader(c[0].fileno())
            c[0].close()

    def expire(self):
        now = self.d.loop.time()
        for addr, c in list(self.clients.items()):
            if now - c[1] > UDP_IDLE:
                self._drop(addr)

    def _from_client(self):
        socket = self.socket
        for _ in range(64):
            info = None
            try:
                if self.pktinfo:
                    data, anc, _, addr = self.sock.recvmsg(65535, socket.CMSG_SPACE(20))
                    for level, kind, value in anc:
                        if level == socket.IPPROTO_IPV6 and kind == socket.IPV6_PKTINFO:
                            info = value[:16] + bytes(4)    # the address; any interface
                else:
                    data, addr = self.sock.recvfrom(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue
            c = self.clients.get(addr)
            if c is None:
                if len(self.clients) >= MAX_UDP_CLIENTS:
                    self._drop(min(self.clients, key=lambda a: self.clients[a][1]))
                up = socket.socket(self.family, socket.SOCK_DGRAM)
                try:
                    up.setblocking(False)
                    up.connect((self.spec["target"], self.spec["ctr_port"]))
                except OSError as e:
                    up.close()
                    self.d.log(f"port proxy: udp to {_hostport(self.spec['target'], self.spec['ctr_port'])}: "
                               f"{e.strerror}", every=60)
                    continue
                c = self.clients[addr] = [up, 0.0, None]
                self.d.loop.add_reader(up.fileno(), self._from_container, addr)
            c[1] = self.d.loop.time()
            c[2] = info
            try:
                c[0].send(data)
            except OSError:
                pass

    def _from_container(self, addr):
        c = self.clients.get(addr)
        if c is None:
            return
        socket = self.socket
        for _ in range(64):
            try:
                data = c[0].recv(65535)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue        # ICMP unreachable: nothing listens there (yet)
            c[1] = self.d.loop.time()
            try:
                if c[2] is not None:
                    self.sock.sendmsg([data], [(socket.IPPROTO_IPV6, socket.IPV6_PKTINFO,
                                                c[2])], 0, addr)
                else:
                    self.sock.sendto(data, addr)
            except OSError:
                pass


def _warm_netlink():
    from . import nl
    nl.ipr()


def _apply_links(ops):
    from . import nl
    nl.apply(ops)
