"""OCI hooks: prestart, createRuntime, createContainer, startContainer, poststart
and poststop.

Each hook gets the container state as JSON on stdin, its own env (nothing else),
and is killed when its timeout passes.  ``run_hooks`` raises on the first failure;
the caller decides, as the spec says, whether that fails the operation (the create
and start hooks) or is only logged (poststart, poststop).
"""

import errno
import os
import select
import _signal as signal
import time

from .errors import HutchError


def run_hook(hook, state_json, kind, index):
    rfd, wfd = os.pipe()
    orfd, owfd = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.dup2(rfd, 0)
            os.dup2(owfd, 1)
            os.dup2(owfd, 2)
            close_fds_from(3)
            for s in range(1, signal.NSIG):
                if s not in (signal.SIGKILL, signal.SIGSTOP):
                    try:
                        signal.signal(s, signal.SIG_DFL)
                    except (OSError, ValueError):
                        pass
            os.execve(hook["path"], hook["args"] or [hook["path"]], env_dict(hook["env"] or []))
        except BaseException as e:
            try:
                os.write(2, f"exec {hook['path']}: {e}".encode())
            finally:
                os._exit(127)
    os.close(rfd)
    os.close(owfd)
    try:
        os.write(wfd, state_json.encode())
    except BrokenPipeError:
        pass
    os.close(wfd)
    timeout = hook.get("timeout")
    deadline = time.monotonic() + timeout if timeout else None
    out = b""
    try:
        pidfd = os.pidfd_open(pid)
    except OSError:
        pidfd = None
    status = None
    try:
        while True:
            wait = None if deadline is None else max(0.0, deadline - time.monotonic())
            fds = [orfd] + ([pidfd] if pidfd is not None else [])
            r, _, _ = select.select(fds, [], [], wait)
            if not r:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                raise HutchError(f"{kind} hook #{index} ({hook['path']}) timed out after "
                                 f"{timeout}s", errno.ETIME)
            if orfd in r:
                chunk = os.read(orfd, 65536)
                if chunk:
                    out = (out + chunk)[-4096:]
                    continue
                fds_done = True
            else:
                fds_done = False
            if pidfd is not None and pidfd in r or fds_done:
                _, status = os.waitpid(pid, 0)
                break
    finally:
        os.close(orfd)
        if pidfd is not None:
            os.close(pidfd)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        # runc's words: "error running hook #N: exit status 1", "signal: killed"
        how = f"exit status {code}" if code > 0 else \
            f"signal: {(signal.strsignal(-code) or str(-code)).lower()}"
        text = out.decode(errors="replace").strip().replace("\n", " ")
        raise HutchError(f"error running hook #{index} ({kind}, {hook['path']}): {how}"
                         + (f", output: {text}" if text else ""))


def close_fds_from(first):
    """Closes every fd >= first (used in children before exec)."""
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd >= first:
            try:
                os.close(fd)
            except OSError:
                pass


def run_hooks(hooks, kind, state_json):
    for i, h in enumerate(hooks.get(kind, ())):
        run_hook(h, state_json, kind, i)


def hooks_to_plain(config_hooks):
    """Hook objects -> plain dicts (for marshal and state.json)."""
    return {kind: [{"path": h.path, "args": h.args, "env": h.env, "timeout": h.timeout}
                   for h in lst] for kind, lst in config_hooks.items()}


def env_dict(env):
    """KEY=value strings -> the mapping os.execve wants (a later KEY wins)."""
    out = {}
    for e in env:
        key, _, val = e.partition("=")
        out[key] = val
    return out
