"""The terminal and the foreground: the console socket, the pty master a
container sends, copying between it and hutch's own stdio, and waiting for a
child while forwarding signals to it (`run`, a foreground `exec`, `restore`).
"""

import os
import _signal as signal

from ..errors import HutchError

FORWARD = (signal.SIGHUP, signal.SIGINT, signal.SIGQUIT, signal.SIGTERM,
           signal.SIGUSR1, signal.SIGUSR2, signal.SIGWINCH, signal.SIGCONT)


def connect(path):
    """A connected --console-socket (its fd)."""
    import _socket
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    try:
        s.connect(path)
    except OSError as e:
        s.close()
        raise HutchError(f"connect to --console-socket {path}: {e.strerror}",
                         e.errno) from None
    return s.detach()


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


def recv_master(sock_fd):
    """The pty master the container sends over ``sock_fd`` (closed here)."""
    from ..linux.fdpass import recv_fds
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
        from ..linux import kernel as K
        k = K.kernel()
        try:
            k.ioctl(master, K.TIOCSWINSZ, k.ioctl(0, K.TIOCGWINSZ, bytes(8)))
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
