"""posix_spawn with what subprocess's ``close_fds`` gives, and without importing
subprocess (its imports cost more than starting the programs hutch runs)."""

import os


def spawn(path, argv, actions=(), keep=(), setsid=False):
    """Starts ``path`` with ``argv``: ``actions`` (posix_spawn file actions)
    first, then each fd of ``keep`` passed as itself (its CLOEXEC cleared), and
    every other inheritable fd above 2 closed, so nothing the caller inherited
    reaches the program.  SIGPIPE and SIGXFSZ (Python ignores them) are back to
    their defaults, and the signal mask is empty.  Returns the pid."""
    keep = set(keep)
    acts = list(actions) + [(os.POSIX_SPAWN_DUP2, fd, fd) for fd in keep]
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd > 2 and fd not in keep:
            try:
                if os.get_inheritable(fd):
                    acts.append((os.POSIX_SPAWN_CLOSE, fd))
            except OSError:
                pass
    return os.posix_spawn(path, argv, os.environ, file_actions=acts,
                          setsigdef=(13, 25), setsigmask=(), setsid=setsid)
