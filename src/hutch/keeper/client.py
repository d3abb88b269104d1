"""What the CLI asks of a container's keeper: `hutch wait` and `hutch logs`.
Both read the keeper's files in the state directory (see :mod:`.attach`); a
stopped container's log and exit code stay there until `hutch delete`."""

import errno
import os

from ..errors import HutchError
from .attach import KIND, VIEWS_KIND, exit_code, keeper_dir
from .sock import alive


def _keeper(root, cid, verb):
    """(state directory, keeper data) of a container that has a keeper (for
    logs, also one that captures syslog for an engine's container)."""
    from ..container.lifecycle import load
    cdir = load(root, cid, lock=False)
    for entry in cdir.data.get("attachments") or ():
        if entry.get("kind") == KIND or (
                verb == "logs" and entry.get("kind") == VIEWS_KIND and
                (entry.get("data") or {}).get("syslog")):
            return cdir, entry.get("data")
    raise HutchError(f"{verb}: container {cid} has no keeper (only a detached "
                     "sandbox, `hutch sandbox -d`, has one)", errno.EINVAL)


def wait(root, cid, poll=0.05):
    """Blocks until the container stops; returns its exit code."""
    import select
    import time
    cdir, data = _keeper(root, cid, "wait")
    fd = cdir.data.pidfd()
    if fd is not None:
        try:
            select.select([fd], [], [])
        finally:
            os.close(fd)
    deadline = time.monotonic() + 5.0
    while True:
        code = exit_code(cdir.path)
        if code is not None:
            return code
        if not os.path.isdir(cdir.path):
            raise HutchError(f"wait: container {cid} was deleted before its exit code "
                             "was read", errno.ENOENT)
        if not alive(data) or time.monotonic() > deadline:
            raise HutchError(f"wait: container {cid} stopped, but its keeper is gone "
                             "without recording its exit code", errno.ESRCH)
        time.sleep(poll)


def logs(root, cid, follow=False, tail=None, since=None, timestamps=False,
         streams=None, fmt="text", out=None):
    import time
    from . import logfile as L
    cdir, data = _keeper(root, cid, "logs")
    path = os.path.join(keeper_dir(cdir.path), "container.log")
    if not os.path.exists(path):
        raise HutchError(f"logs: container {cid} has no log yet", errno.ENOENT)
    since_ns = L.parse_since(since, time.time_ns()) if since else None
    out = out if out is not None else os.fdopen(os.dup(1), "wb")
    lines = L.iter_json if fmt == "json" else L.iter_text
    try:
        if follow:
            def stopped():
                return not alive(data) and cdir.data.pidfd() is None
            # the old records first, then what comes, with no gap between them
            records = L.follow(path, stopped, history="all" if tail is None else tail,
                               since_ns=since_ns)
        elif tail is not None:
            records = [r for r in L.tail(path, tail)
                       if since_ns is None or r[0] >= since_ns]
        else:
            records = L.read_records(path, since_ns)
        for line in lines(records, timestamps=timestamps, streams=streams):
            out.write(line)
            if follow:
                out.flush()
    except BrokenPipeError:
        pass
    finally:
        try:
            out.close()
        except BrokenPipeError:
            pass
    return 0


DETACH = b"\x10\x11"      # Ctrl-P Ctrl-Q


def attach(root, cid):
    """Connects the terminal to a detached sandbox: its output here, and (with
    -t) this terminal's input and window size there.  Ctrl-P Ctrl-Q detaches
    and leaves it running.  Returns its exit code once it stops, or 0 when
    detached."""
    import _socket
    import select
    import struct
    from .sock import unix_path
    cdir, data = _keeper(root, cid, "attach")
    if not alive(data):
        raise HutchError(f"attach: the keeper of {cid} is gone (the container "
                         "stopped, or its keeper died)", errno.ESRCH)
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        with unix_path(os.path.join(keeper_dir(cdir.path), "attach.sock")) as p:
            s.connect(p)
    except OSError as e:
        s.close()
        raise HutchError(f"attach: connect to the keeper of {cid}: {e.strerror}",
                         e.errno) from None

    def frame(kind, body):
        s.sendall(kind + struct.pack("=I", len(body)) + body)
    tty = os.isatty(0)
    saved = None
    if tty:
        import termios
        import tty as ttymod
        saved = termios.tcgetattr(0)
        ttymod.setraw(0)
        _send_size(frame)
        import _signal as signal
        signal.signal(signal.SIGWINCH, lambda _n, _f: _send_size(frame))
    detached = False
    inputs = [s.fileno(), 0]
    prev = b""
    try:
        while True:
            try:
                ready, _, _ = select.select(inputs, [], [])
            except InterruptedError:
                continue
            if s.fileno() in ready:
                out = s.recv(65536)
                if not out:
                    break
                os.write(1, out)
            if 0 in ready:
                data_in = os.read(0, 4096)
                if not data_in:
                    inputs.remove(0)
                    continue
                seq = prev + data_in
                if DETACH in seq:
                    before = seq[:seq.index(DETACH)]
                    if before[len(prev):]:
                        frame(b"d", before[len(prev):])
                    detached = True
                    break
                if data_in.endswith(DETACH[:1]):
                    # maybe the first half: hold it until the next key
                    if data_in[:-1]:
                        frame(b"d", data_in[:-1])
                    prev = DETACH[:1]
                    continue
                frame(b"d", (prev if prev else b"") + data_in)
                prev = b""
    finally:
        if saved is not None:
            import termios
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        s.close()
    if detached:
        os.write(2, f"\r\nhutch: detached from {cid} (it runs on)\r\n".encode())
        return 0
    code = exit_code(cdir.path)
    for _ in range(40):
        if code is not None:
            break
        import time
        time.sleep(0.05)
        code = exit_code(cdir.path)
    return code if code is not None else 0


def _send_size(frame):
    import struct
    from ..linux import kernel as K
    try:
        ws = K.kernel().ioctl(0, K.TIOCGWINSZ, bytes(8))
        rows, cols = struct.unpack("=HHHH", ws)[:2]
        frame(b"w", struct.pack("=HH", rows, cols))
    except OSError:
        pass
