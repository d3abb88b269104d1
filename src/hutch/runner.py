"""Running a container in the foreground: create, start, forward signals, wait,
delete, and return the exit status (128+N for a signal).  Used by `hutch run` and
`hutch sandbox`.

hutch is a child subreaper while it creates the container, so the init becomes
hutch's own child and its exit status can be collected directly.  With
``process.terminal`` and no --console-socket, hutch makes the console socket itself
and copies bytes between its own stdio and the container's pty.
"""

import os
import _signal as signal

from . import container
from .errors import HutchError

FORWARD = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
           signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def run(root, cid, bundle, detach=False, cfg=None, keep=False, **kw):
    proxy = None
    if cfg is None:
        from .spec.config import load_config
        cfg = load_config(os.path.abspath(bundle))
    want_tty = bool(cfg.process and cfg.process.terminal)
    if want_tty and not kw.get("console_socket"):
        if detach:
            raise HutchError("cannot allocate a tty when hutch detaches without "
                             "--console-socket")
        from .process.channel import socketpair
        ours, theirs = socketpair()
        kw["console_fd"] = theirs
        proxy = ours
    try:
        st = container.create(root, cid, bundle, cfg=cfg, **kw)
    finally:
        if "console_fd" in kw:
            os.close(kw["console_fd"])
    pid = st["pid"]
    master = _recv_master(proxy) if proxy is not None else None
    if not detach:
        hold_signals()      # from the start of the user's program until forwarding
    try:
        container.start(root, cid)
    except BaseException:
        release_signals()
        container.delete(root, cid, force=True)
        raise
    if detach:
        return 0
    code = wait_child(pid, master)
    if not keep:
        container.delete(root, cid, force=True)
    return code


def wait_child(pid, master=None):
    """Waits for our child ``pid``, forwarding signals to it and, with ``master``,
    copying between our stdio and its terminal.  Returns its exit code, or 128+N
    when signal N killed it."""
    pidfd = os.pidfd_open(pid)
    try:
        for s in FORWARD:
            signal.signal(s, lambda n, _f: _forward(pidfd, n))
        # signals that came while the caller held them back (hold_signals) are
        # delivered now, to the child
        signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARD)
        if master is not None:
            _copy_tty(master, pidfd)
        while True:
            try:
                _, status = os.waitpid(pid, 0)
                break
            except InterruptedError:
                continue
            except ChildProcessError:
                status = None
                break
    finally:
        for s in FORWARD:
            signal.signal(s, signal.SIG_DFL)
        os.close(pidfd)
    if status is None:
        return 0
    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


def hold_signals():
    """Holds back the signals :func:`wait_child` forwards, from before the child
    exists until forwarding is set up, so that none is lost in between."""
    signal.pthread_sigmask(signal.SIG_BLOCK, FORWARD)


def release_signals():
    signal.pthread_sigmask(signal.SIG_UNBLOCK, FORWARD)


def _forward(pidfd, n):
    try:
        signal.pidfd_send_signal(pidfd, n)
    except ProcessLookupError:
        pass


def _recv_master(sock_fd):
    from .process.channel import recv_fds
    try:
        return recv_fds(sock_fd, 1, bufsize=1024)[0]
    except OSError:
        raise HutchError("the container did not send its terminal") from None
    finally:
        os.close(sock_fd)


def _copy_tty(master, pidfd):
    import select
    import termios
    import tty
    stdin_tty = os.isatty(0)
    saved = None
    if stdin_tty:
        import fcntl
        try:
            ws = fcntl.ioctl(0, termios.TIOCGWINSZ, b"\0" * 8)
            fcntl.ioctl(master, termios.TIOCSWINSZ, ws)
        except OSError:
            pass
        saved = termios.tcgetattr(0)
        tty.setraw(0)
    inputs = [master, 0]
    try:
        while True:
            try:
                r, _, _ = select.select(inputs, [], [])
            except InterruptedError:
                continue
            if master in r:
                try:
                    data = os.read(master, 65536)
                except OSError:
                    data = b""
                if not data:
                    break
                os.write(1, data)
            if 0 in r:
                data = os.read(0, 65536)
                if not data:
                    inputs.remove(0)
                    os.write(master, b"\x04")
                else:
                    os.write(master, data)
    finally:
        if saved is not None:
            termios.tcsetattr(0, termios.TCSADRAIN, saved)
        os.close(master)
