"""`hutch.aio`: the sandbox library as coroutines.

The same names and arguments as :mod:`hutch`'s (``Sandbox``, ``run``, ``PIPE``...),
with ``await`` in front::

    async with hutch.aio.Sandbox(memory="256m") as sb:
        r = await sb.run(["python3", "-c", "print(1)"], timeout=5)

Making a container and entering it are short blocking steps (forks and a few
messages with the helper that enters it); they run on a thread pool of hutch's
own, so the event loop never waits on them.  A cancelled ``run`` or ``wait``
kills the command and everything it started, then re-raises.
"""

import asyncio

from .errors import CommandFailed, SandboxError, TimeoutExpired  # noqa: F401
from .sandbox import api as _api
from .sandbox.process import DEVNULL, PIPE, STDOUT, Result  # noqa: F401

_POOL = None
_POOL_SIZE = 64


def _pool():
    global _POOL
    if _POOL is None:
        from concurrent.futures import ThreadPoolExecutor
        _POOL = ThreadPoolExecutor(_POOL_SIZE, thread_name_prefix="hutch-aio")
    return _POOL


async def _call(fn, *args, **kw):
    loop = asyncio.get_running_loop()
    if kw:
        import functools
        fn = functools.partial(fn, *args, **kw)
        args = ()
    return await loop.run_in_executor(_pool(), fn, *args)


async def _until_done(p, fn, *args):
    """Runs ``fn(*args)`` (a wait of process ``p``) on the pool; if the caller
    is cancelled meanwhile, kills ``p`` and all it started, lets that wait
    finish (it reaps ``p``), and re-raises."""
    loop = asyncio.get_running_loop()
    fut = loop.run_in_executor(_pool(), fn, *args)
    try:
        return await asyncio.shield(fut)
    except asyncio.CancelledError:
        p.kill()
        try:
            await fut
        except Exception:   # noqa: BLE001 - the cancellation is what matters
            pass
        raise


class Process:
    """A :class:`hutch.Process` whose waits are coroutines."""

    def __init__(self, proc):
        self._p = proc

    def __getattr__(self, name):    # pid, returncode, args, stdin, stdout, stderr
        return getattr(self._p, name)

    def kill(self):
        self._p.kill()

    def terminate(self):
        self._p.terminate()

    def send_signal(self, sig):
        self._p.send_signal(sig)

    def poll(self):
        return self._p.poll()

    async def wait(self, timeout=None):
        return await _until_done(self._p, self._p.wait, timeout)

    async def communicate(self, input=None, timeout=None):
        return await _until_done(self._p, self._p.communicate, input, timeout)


class Sandbox:
    """:class:`hutch.Sandbox` with coroutine methods."""

    def __init__(self, *args, **kw):
        self._sb = _api.Sandbox(*args, **kw)

    @classmethod
    async def restore(cls, snapshot, name=None, root=None, timeout=None):
        self = cls.__new__(cls)
        self._sb = await _call(_api.Sandbox.restore, snapshot, name, root, timeout)
        return self

    @property
    def name(self):
        return self._sb.name

    @property
    def pid(self):
        return self._sb.pid

    @property
    def timeout(self):
        return self._sb.timeout

    async def start(self):
        await _call(self._sb.start)
        return self

    async def close(self):
        await _call(self._sb.close)

    async def __aenter__(self):
        if self._sb.pid is None:
            await self.start()
        return self

    async def __aexit__(self, *exc):
        await self.close()

    async def spawn(self, args, **kw):
        return Process(await _call(self._sb.spawn, args, **kw))

    async def run(self, args, input=None, timeout=None, env=None, cwd=None,
                  check=False, user=None):
        """See :meth:`hutch.Sandbox.run`."""
        if timeout is None:
            timeout = self._sb.timeout
        p = await _call(self._sb.spawn, args, stdin=PIPE if input else None,
                        stdout=PIPE, stderr=PIPE, env=env, cwd=cwd, user=user)
        timed_out = False
        try:
            try:
                out, err = await _until_done(p, p.communicate, input, timeout)
            except TimeoutExpired:
                timed_out = True
                p.killed_at_timeout = True
                p.kill()
                out, err = await _call(p.communicate)
        finally:
            self._sb._live.discard(p)
        return _api._result(p, out, err, timed_out, check)

    async def write_file(self, path, data, mode=0o644):
        await _call(self._sb.write_file, path, data, mode)

    async def read_file(self, path):
        return await _call(self._sb.read_file, path)

    async def put(self, src, dst):
        await _call(self._sb.put, src, dst)

    async def get(self, src, dst):
        await _call(self._sb.get, src, dst)

    async def stats(self):
        return await _call(self._sb.stats)

    async def checkpoint(self, path, leave_running=True):
        return await _call(self._sb.checkpoint, path, leave_running)

    def __repr__(self):
        return repr(self._sb).replace("hutch.Sandbox", "hutch.aio.Sandbox")


async def run(args, input=None, timeout=None, env=None, cwd=None, check=False,
              **sandbox):
    """See :func:`hutch.run`."""
    async with Sandbox(**sandbox) as sb:
        return await sb.run(args, input=input, timeout=timeout, env=env, cwd=cwd,
                            check=check)
