"""Networks for rootless containers: slirp4netns or pasta.

An unprivileged user's container cannot have a veth on a host bridge.  Instead a
user-mode network tool joins the container's user and network namespaces, makes
a tap interface there and carries the container's traffic through ordinary
sockets of the user on the host; published ports are the tool's own forwarding.

The tool outlives the hutch command that starts it: it runs in a session of its
own, its output goes to a bounded log in the container's state directory, and its
pid and start time (field 22 of /proc/<pid>/stat) are kept in
``rootless-net.json`` there, so that :func:`stop` kills that process and never a
process that got its pid later.

Neither tool lets the container reach services listening on the host's loopback
addresses: slirp4netns runs with ``--disable-host-loopback`` (its gateway 10.0.2.2
would otherwise lead to the host's 127.0.0.1) and pasta with ``--no-map-gw`` and
``-T none -U none`` (no mapping of the gateway to the host, no forwarding from the
namespace's ports to the host's).

Whether the tool goes away with the container: slirp4netns is given a pidfd of
the container's init as its ``--exit-fd`` and exits once that process is reaped.
pasta (Debian 12's 2023 version) does not: the tap interface it holds keeps the
network namespace alive, and it only watches for a namespace file being deleted,
which never happens under /proc; :func:`stop` must end it.

Seen with Debian 12's versions: a published UDP port answers clients elsewhere,
but replies to a client on the host itself are lost (pasta: always; slirp4netns:
to 127.0.0.1); and pasta does not pass a peer's FIN on to a container that shut
down its own sending side first (the bytes do arrive).
"""

import os

from ..errors import HutchError

STATE = "rootless-net.json"
BIN_DIR = "/usr/bin"          # where the tools are when $PATH has none
TOOLS = {"slirp4netns": "slirp4netns", "pasta": "passt"}   # tool -> Debian package
# every file a tool may leave in the state directory, for stop()
FILES = ("slirp4netns.sock", "slirp4netns.log", "pasta.pid", "pasta.log")
LOG_LIMIT = 1 << 20           # bytes of log a tool may write
READY_TIMEOUT = 10.0          # seconds for a tool to come up
STOP_TIMEOUT = 3.0            # seconds between SIGTERM and SIGKILL

SLIRP_ADDR, SLIRP_GW, SLIRP_DNS, SLIRP_DNS6 = "10.0.2.100", "10.0.2.2", "10.0.2.3", "fd00::3"
DEFAULT_MTU = 65520
# the address pasta's --dns-forward answers on: link-local, so that it cannot be
# anybody's real resolver, and reached through the default route pasta sets up
PASTA_DNS = "169.254.1.1"


def _fail(tool, what, errno=None):
    return HutchError(f"network {tool}: {what}", errno)


def _high(fd):
    """``fd``, or a close-on-exec copy of it above 2 (a caller started with stdio
    closed gets low fds, which the tool's stdio would overwrite)."""
    if fd > 2:
        return fd
    import fcntl
    try:
        return fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3)
    finally:
        os.close(fd)


def _pipe():
    r, w = os.pipe()
    return _high(r), _high(w)


def _binary(tool):
    """The tool's executable: the first in $PATH, else BIN_DIR's (named in the
    error when it is missing)."""
    import errno
    for d in os.environ.get("PATH", "").split(":") + [BIN_DIR]:
        path = os.path.join(d, tool)
        if d.startswith("/") and os.path.isfile(path) and os.access(path, os.X_OK):
            return path
    raise _fail(tool, f"{BIN_DIR}/{tool} is not installed (Debian package {TOOLS[tool]})",
                errno.ENOENT)


def _is_ip(text, family=None):
    import _socket
    for fam in (family,) if family else (_socket.AF_INET, _socket.AF_INET6):
        try:
            _socket.inet_pton(fam, text)
            return True
        except (OSError, ValueError):
            pass
    return False


def _check_publish(tool, publish):
    """The published ports as plain dicts, or an error naming the bad one."""
    import _socket
    import errno
    out = []
    for p in publish:
        try:
            proto, host_ip = p["proto"], p.get("host_ip") or ""
            host_port, ctr_port = p["host_port"], p["ctr_port"]
        except (KeyError, TypeError, AttributeError):
            raise _fail(tool, f"bad published port {p!r}", errno.EINVAL) from None
        ok = (proto in ("tcp", "udp") and isinstance(host_ip, str)
              and all(type(n) is int and 0 < n < 65536 for n in (host_port, ctr_port)))
        if ok and host_ip:
            ok = _is_ip(host_ip)
        if not ok:
            raise _fail(tool, f"bad published port {p!r}", errno.EINVAL)
        if tool == "slirp4netns" and host_ip and not _is_ip(host_ip, _socket.AF_INET):
            raise _fail(tool, f"publish {host_ip} port {host_port}: slirp4netns forwards "
                        "only ipv4 addresses", errno.EINVAL)
        out.append({"proto": proto, "host_ip": host_ip, "host_port": host_port,
                    "ctr_port": ctr_port})
    return out


def _open_namespaces(tool, pid):
    """A pidfd of the container's init and its network and user namespaces, opened
    here so that a reused pid cannot slip in later; the user namespace is None when
    it is the caller's own (a rootful container)."""
    import errno
    try:
        pidfd = _high(os.pidfd_open(pid))
    except ProcessLookupError:
        raise _fail(tool, f"container process {pid} does not exist", errno.ESRCH) from None
    except OSError as e:
        raise HutchError.from_os(f"network {tool}: open container process {pid}", e) from None
    fds = [pidfd]
    try:
        for ns in ("net", "user"):
            fds.append(_high(os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY | os.O_CLOEXEC)))
        import select
        if select.select([pidfd], [], [], 0)[0]:
            raise _fail(tool, f"container process {pid} has exited", errno.ESRCH)
        if os.fstat(fds[2]).st_ino == os.stat("/proc/self/ns/user").st_ino:
            os.close(fds.pop())
            fds.append(None)
        return fds
    except OSError as e:
        for fd in fds:
            os.close(fd)
        raise HutchError.from_os(f"network {tool}: open the namespaces of process {pid}",
                                 e) from None
    except BaseException:
        for fd in fds:
            if fd is not None:
                os.close(fd)
        raise


def _check_tun(tool):
    """A clear error when the caller may not open /dev/net/tun (the tool would fail
    inside the container's namespaces with a bare EACCES)."""
    import errno
    if os.geteuid() != 0 and not os.access("/dev/net/tun", os.R_OK | os.W_OK):
        try:
            mode = f"mode {os.stat('/dev/net/tun').st_mode & 0o7777:04o}"
        except OSError:
            raise _fail(tool, "/dev/net/tun does not exist (module tun)", errno.ENOENT) from None
        raise _fail(tool, f"/dev/net/tun is not readable and writable by uid {os.getuid()} "
                    f"({mode}; it is normally 0666)", errno.EACCES)


def _spawn_detached(argv, log_fd, keep_fds):
    """Starts ``argv`` in a session of its own, stdin from /dev/null and stdout and
    stderr to ``log_fd``, through a short-lived intermediate process: the tool is
    then nobody's child here (init reaps it), and it inherits the intermediate's
    RLIMIT_FSIZE, which bounds its log (writes past it fail; SIGXFSZ is ignored).
    Returns the tool's pid."""
    import _signal
    import resource
    r, w = _pipe()
    child = os.fork()
    if child == 0:      # the intermediate: system calls only, then _exit
        status = 1
        try:
            os.close(r)
            keep = set(keep_fds) | {log_fd, w}
            for name in os.listdir("/proc/self/fd"):
                fd = int(name)
                if fd > 2 and fd not in keep:
                    try:
                        os.close(fd)
                    except OSError:
                        pass
            for fd in keep_fds:
                os.set_inheritable(fd, True)
            resource.setrlimit(resource.RLIMIT_FSIZE, (LOG_LIMIT, LOG_LIMIT))
            _signal.signal(_signal.SIGXFSZ, _signal.SIG_IGN)
            actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
                       (os.POSIX_SPAWN_DUP2, log_fd, 1), (os.POSIX_SPAWN_DUP2, log_fd, 2),
                       (os.POSIX_SPAWN_CLOSE, log_fd), (os.POSIX_SPAWN_CLOSE, w)]
            pid = os.posix_spawn(argv[0], argv, os.environ, file_actions=actions,
                                 setsid=True, setsigdef=(_signal.SIGPIPE,), setsigmask=())
            os.write(w, b"%d" % pid)
            status = 0
        except BaseException as e:     # noqa: BLE001 - told to the parent
            try:
                os.write(w, b"E%d" % (getattr(e, "errno", None) or 0))
            except OSError:
                pass
        finally:
            os._exit(status)
    os.close(w)
    try:
        data = b""
        while chunk := os.read(r, 64):
            data += chunk
    finally:
        os.close(r)
        os.waitpid(child, 0)
    if not data or data.startswith(b"E"):
        err = int(data[1:] or 0) if data else 0
        raise OSError(err or 5, os.strerror(err or 5))
    return int(data)


def _read_tail(path, limit=600):
    """The end of a tool's log as one line, without its warnings of experimental
    features."""
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            f.seek(max(0, f.tell() - limit))
            text = f.read().decode(errors="replace")
    except OSError:
        return ""
    lines = (line.split("WARNING:")[0].strip() for line in text.splitlines())
    return "; ".join(line for line in lines if line)


def _api(tool, sock_path, request, timeout=5.0):
    """One request to slirp4netns's API socket: the JSON reply as a dict."""
    import _socket

    from .. import jsonlite
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.settimeout(timeout)
        s.connect(sock_path)
        s.sendall(jsonlite.dumps(request).encode())
        s.shutdown(_socket.SHUT_WR)      # the end of the request, as the API wants
        reply = b""
        while chunk := s.recv(4096):
            reply += chunk
    except OSError as e:
        raise HutchError.from_os(f"network {tool}: api request {request['execute']}",
                                 e) from None
    finally:
        s.close()
    try:
        return jsonlite.loads(reply)
    except ValueError:
        raise _fail(tool, f"api request {request['execute']}: bad reply "
                    f"{reply[:200]!r}") from None


def _start_slirp4netns(binary, state_dir, fds, publish, mtu, ipv6, outbound_addr, data):
    import errno
    import select
    pidfd, netfd, userfd = fds
    sock = os.path.join(state_dir, "slirp4netns.sock")
    log = os.path.join(state_dir, "slirp4netns.log")
    r, w = _pipe()
    argv = [binary, "--configure", f"--mtu={mtu or DEFAULT_MTU}", "--disable-host-loopback",
            f"--ready-fd={w}", f"--exit-fd={pidfd}", f"--api-socket={sock}"]
    if os.geteuid() == 0:
        # a mount namespace of its own and no capability but CAP_NET_BIND_SERVICE
        # (as a user it fails here: setegid(0) in the container's user namespace)
        argv.append("--enable-sandbox")
    argv.append("--enable-seccomp")       # a filter of the system calls it may make
    if ipv6:
        argv.append("--enable-ipv6")
    if outbound_addr:
        six = _is_ip(outbound_addr) and ":" in outbound_addr
        argv.append(f"--outbound-addr{'6' if six else ''}={outbound_addr}")
    if userfd is not None:
        argv.append(f"--userns-path=/proc/self/fd/{userfd}")
    # /proc/self/fd/N: the fds opened above, so the namespaces are the container's
    # even if its pid were reused; slirp4netns's helper child inherits them
    argv += ["--netns-type=path", f"/proc/self/fd/{netfd}", "tap0"]
    data["argv"] = argv[1:]
    log_fd = _high(os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600))
    try:
        keep = [w, pidfd, netfd] + ([userfd] if userfd is not None else [])
        data["pid"] = _spawn_detached(argv, log_fd, keep)
    except OSError as e:
        raise HutchError.from_os(f"network slirp4netns: run {binary}", e) from None
    finally:
        os.close(log_fd)
        os.close(w)
    try:
        _record_started(state_dir, data)
        ready = select.select([r], [], [], READY_TIMEOUT)[0] and os.read(r, 16)
    finally:
        os.close(r)
    if not ready:
        why = ("exited before it was ready" if ready == b"" else
               f"not ready after {READY_TIMEOUT:g} s")
        raise _fail("slirp4netns", f"{why}: {_read_tail(log) or 'no output'}",
                    errno.ECHILD if ready == b"" else errno.ETIMEDOUT)
    for p in publish:
        req = {"execute": "add_hostfwd",
               "arguments": {"proto": p["proto"], "host_addr": p["host_ip"] or "0.0.0.0",
                             "host_port": p["host_port"], "guest_port": p["ctr_port"]}}
        reply = _api("slirp4netns", sock, req)
        if "return" not in reply:
            err = reply.get("error")
            desc = err.get("desc") if isinstance(err, dict) else err
            raise _fail("slirp4netns", f"publish {p['proto']} port "
                        f"{p['host_ip'] or '0.0.0.0'}:{p['host_port']}: "
                        f"{desc or reply} (is the port in use?)", errno.EADDRINUSE)
        p["id"] = reply["return"].get("id") if isinstance(reply["return"], dict) else None
    data.update(addr=SLIRP_ADDR, gateway=SLIRP_GW, dns=SLIRP_DNS, interface="tap0",
                mtu=mtu or DEFAULT_MTU, api_socket=sock, log=log, exits_with_container=True)
    if ipv6:
        data["dns6"] = SLIRP_DNS6


def _pasta_port(p):
    spec = f"{p['host_port']}:{p['ctr_port']}"
    return f"{p['host_ip']}/{spec}" if p["host_ip"] else spec


def _start_pasta(binary, state_dir, fds, publish, mtu, ipv6, outbound_addr, data):
    import errno

    from ..container.record import proc_stat
    _, netfd, userfd = fds
    log = os.path.join(state_dir, "pasta.log")
    pidfile = os.path.join(state_dir, "pasta.pid")
    argv = [binary, "--config-net", "--netns", f"/proc/self/fd/{netfd}"]
    if userfd is not None:
        argv += ["--userns", f"/proc/self/fd/{userfd}"]
    if os.geteuid() == 0:
        # pasta run by root otherwise becomes nobody, who may not join the namespaces
        argv += ["--runas", "0:0"]
    argv += ["--no-map-gw", "-T", "none", "-U", "none", "--dns-forward", PASTA_DNS]
    for proto, opt in (("tcp", "-t"), ("udp", "-u")):
        # one option per port: pasta fails a spec only when none of its ports binds
        specs = [_pasta_port(p) for p in publish if p["proto"] == proto] or ["none"]
        for spec in specs:
            argv += [opt, spec]
    if mtu:
        argv += ["-m", str(mtu)]
    if not ipv6:
        argv.append("-4")
    if outbound_addr:
        if _is_ip(outbound_addr):
            argv += ["-o", outbound_addr]
        else:
            argv += ["--outbound-if4", outbound_addr] + (
                ["--outbound-if6", outbound_addr] if ipv6 else [])
    argv += ["-l", log, "--log-size", str(LOG_LIMIT), "-P", pidfile]
    data["argv"] = argv[1:]
    # pasta forks itself into the background (a new session, reparented to init)
    # once it is set up, and its first process exits: 0 with the pid file written
    # or 1 with the reason on stderr (read here through a pipe) and in its log
    keep = [netfd] + ([userfd] if userfd is not None else [])
    status, out = _run_first(binary, argv, keep)
    if status != 0:
        # its last word is the reason (warnings and its settings come before)
        lines = [line.strip() for line in out.decode(errors="replace").splitlines()
                 if line.strip() and "to syslog" not in line]
        why = lines[-1] if lines else _read_tail(log) or "no output"
        err = errno.ETIMEDOUT if status is None else errno.ECHILD
        if "bind" in why and "port" in why:
            why, err = f"{why} (is the port in use?)", errno.EADDRINUSE
        how = f"not ready after {READY_TIMEOUT:g} s" if status is None else \
            f"exited with {status}"
        raise _fail("pasta", f"{how}: {why}", err)
    try:
        with open(pidfile) as f:
            data["pid"] = int(f.read().strip())
    except (OSError, ValueError):
        raise _fail("pasta", f"started but wrote no pid to {pidfile}", errno.ESRCH) from None
    st = proc_stat(data["pid"])
    if st is None:
        raise _fail("pasta", f"exited right after starting: {_read_tail(log)}", errno.ECHILD)
    data["starttime"] = st[1]
    _record_started(state_dir, data)
    data.update(_pasta_config(log))
    data.update(dns=PASTA_DNS, mtu=mtu or DEFAULT_MTU, log=log, pid_file=pidfile,
                exits_with_container=False)


def _run_first(binary, argv, keep):
    """Runs pasta's first process (a child of the caller) until it exits, at most
    READY_TIMEOUT seconds: (exit status or None, the tail of its output)."""
    import select
    import time

    from ..linux.spawn import spawn
    r, w = _pipe()
    actions = [(os.POSIX_SPAWN_OPEN, 0, "/dev/null", os.O_RDONLY, 0),
               (os.POSIX_SPAWN_DUP2, w, 1), (os.POSIX_SPAWN_DUP2, w, 2)]
    try:
        # nothing else the caller inherited reaches a process that lives on
        first = spawn(binary, argv, actions, keep, setsid=True)
    except OSError as e:
        os.close(r)
        raise HutchError.from_os(f"network pasta: run {binary}", e) from None
    finally:
        os.close(w)
    out, status, eof = b"", None, False
    first_fd = None
    try:
        first_fd = os.pidfd_open(first)
        deadline = time.monotonic() + READY_TIMEOUT
        while status is None or not eof:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready = select.select([first_fd] + ([] if eof else [r]), [], [], left)[0]
            if r in ready:
                chunk = os.read(r, 4096)
                eof = not chunk
                out = (out + chunk)[-4096:]
            if first_fd in ready and status is None:
                status = os.waitstatus_to_exitcode(os.waitpid(first, 0)[1])
                # the daemon lets go of the pipe as it starts: no long wait for that
                deadline = min(deadline, time.monotonic() + 0.5)
    finally:
        os.close(r)
        if first_fd is not None:
            os.close(first_fd)
        if status is None:
            try:
                os.kill(first, 9)
                os.waitpid(first, 0)
            except (ProcessLookupError, ChildProcessError):
                pass
    return status, out


def _pasta_config(log):
    """The addresses pasta copied from the host, as its log tells them (keys left
    out when it does not)."""
    out = {}
    try:
        with open(log, errors="replace") as f:
            lines = f.read(65536).splitlines()
    except OSError:
        return out
    for line in lines:
        words = line.split()
        if len(words) < 2:
            continue
        key, value = words[-2], words[-1]
        if key == "interface:" and "Namespace" in line:
            out.setdefault("interface", value)
        elif key == "assign:":
            out.setdefault("addr6" if ":" in value else "addr", value)
        elif key == "router:":
            out.setdefault("gateway6" if ":" in value else "gateway", value)
    return out


def _record_started(state_dir, data):
    """Records the tool as soon as its pid is known, so that a hutch killed during
    the rest of start() leaves something for stop() to act on."""
    from .. import jsonlite
    from ..container.record import proc_stat, write_atomic
    if "starttime" not in data:
        st = proc_stat(data["pid"])
        data["starttime"] = st[1] if st else None
    write_atomic(os.path.join(state_dir, STATE), jsonlite.dumps(data), 0o600)


def start(tool, pid, state_dir, publish=(), *, mtu=None, ipv6=True, outbound_addr=None):
    """Connects the network namespace of the container whose init is ``pid`` to the
    host's network through ``tool`` ("slirp4netns" or "pasta"), publishing the ports
    of ``publish`` (dicts with proto, host_ip, host_port and ctr_port).

    The caller is the user who owns the container's user namespace (or root).  The
    tool is left running in its own session; what :func:`stop` and
    :func:`resolv_conf` need is returned and written to ``state_dir/rootless-net.json``.
    A failure stops the tool and leaves no file behind.

    slirp4netns configures tap0 as 10.0.2.100/24 (gateway 10.0.2.2, DNS 10.0.2.3, MTU
    65520 unless ``mtu``), and ``--disable-host-loopback`` keeps the container from
    the host's 127.0.0.1 services.  pasta copies the host's addresses and routes
    (``--config-net``), forwards DNS sent to 169.254.1.1 to the host's resolver, and
    ``--no-map-gw`` keeps the container from the host's loopback services.
    ``ipv6=False`` leaves IPv6 out; ``outbound_addr`` (an address or an interface)
    is where the tool's outbound connections come from.
    """
    import errno

    from .. import jsonlite
    from ..container.record import proc_stat, write_atomic
    if tool not in TOOLS:
        raise HutchError(f"network {tool}: unknown rootless network tool (slirp4netns or "
                         "pasta)", errno.EINVAL)
    binary = _binary(tool)
    publish = _check_publish(tool, publish)
    if mtu is not None and not (type(mtu) is int and 1280 <= mtu <= DEFAULT_MTU):
        raise _fail(tool, f"bad mtu {mtu!r} (1280 to {DEFAULT_MTU})", errno.EINVAL)
    if outbound_addr is not None and (not isinstance(outbound_addr, str) or not outbound_addr
                                      or "/" in outbound_addr or "," in outbound_addr):
        raise _fail(tool, f"bad outbound address {outbound_addr!r}", errno.EINVAL)
    os.makedirs(state_dir, 0o700, exist_ok=True)
    old = _load(state_dir)
    if old and old.get("pid") and _alive(old):
        raise _fail(tool, f"already running for this container ({old.get('tool')} pid "
                    f"{old['pid']})", errno.EEXIST)
    stop(state_dir, old)      # what a crashed start left
    _check_tun(tool)
    fds = _open_namespaces(tool, pid)
    data = {"tool": tool, "ctr_pid": pid, "ctr_starttime": (proc_stat(pid) or (0, None))[1],
            "ipv6": bool(ipv6), "publish": publish, "binary": binary}
    try:
        if tool == "slirp4netns":
            _start_slirp4netns(binary, state_dir, fds, publish, mtu, ipv6, outbound_addr, data)
        else:
            _start_pasta(binary, state_dir, fds, publish, mtu, ipv6, outbound_addr, data)
        write_atomic(os.path.join(state_dir, STATE), jsonlite.dumps(data), 0o600)
    except BaseException:
        try:
            stop(state_dir, data)
        except HutchError:
            pass
        raise
    finally:
        for fd in fds:
            if fd is not None:
                os.close(fd)
    return data


def _load(state_dir):
    from .. import jsonlite
    try:
        data = jsonlite.load_file(os.path.join(state_dir, STATE))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _alive(data):
    """Whether the recorded tool is still the process with that pid."""
    from ..container.record import proc_stat
    pid, starttime = data.get("pid"), data.get("starttime")
    if type(pid) is not int or pid <= 0:
        return False
    st = proc_stat(pid)
    return st is not None and st[0] != "Z" and st[1] == starttime


def stop(state_dir, data=None):
    """Stops the tool recorded in ``state_dir`` (or ``data``, what :func:`start`
    returned): SIGTERM, then SIGKILL after a few seconds, waiting until it is gone;
    only a process whose pid and start time both match is signalled.  Then removes
    the record, the log, the API socket and the pid file.  Nothing running or
    recorded is not an error."""
    from ..container.record import stop_process
    if data is None:
        data = _load(state_dir)
    tool = (data or {}).get("tool", "rootless")
    pid = (data or {}).get("pid")
    if data and _alive(data):
        try:
            stop_process(pid, data.get("starttime"), timeout=STOP_TIMEOUT,
                         kill_timeout=10.0)
            try:        # reaped by init, unless the caller is its parent
                os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                pass
        except OSError as e:
            raise HutchError.from_os(f"network {tool}: stop pid {pid}", e) from None
    for name in FILES + (STATE,):
        try:
            os.unlink(os.path.join(state_dir, name))
        except FileNotFoundError:
            pass
        except OSError as e:
            raise HutchError.from_os(f"network {tool}: remove {name}", e) from None


def resolv_conf(tool, data=None):
    """The /etc/resolv.conf the container should get: the tool's DNS address (for
    pasta, the one its --dns-forward maps to the host's first resolver), with the
    host's search domains and options."""
    data = data or {}
    if tool == "slirp4netns":
        servers = [data.get("dns") or SLIRP_DNS]
        if data.get("ipv6", True):
            servers.append(data.get("dns6") or SLIRP_DNS6)
    elif tool == "pasta":
        servers = [data.get("dns") or PASTA_DNS]
    else:
        import errno
        raise HutchError(f"network {tool}: unknown rootless network tool (slirp4netns or "
                         "pasta)", errno.EINVAL)
    lines = [f"nameserver {s}" for s in servers]
    try:
        with open("/etc/resolv.conf", errors="replace") as f:
            host = f.read(65536).splitlines()
    except OSError:
        host = []
    for line in host:
        words = line.split()
        if words and words[0] in ("search", "domain", "options"):
            lines.append(" ".join(words))
    return "\n".join(lines) + "\n"
