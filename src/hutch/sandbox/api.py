"""`hutch.Sandbox` and `hutch.run`: containers for untrusted code, from Python.

A sandbox is an ordinary hutch container under the default state root (``hutch
list``, ``exec``, ``ps`` and ``delete`` see it; its id is ``sb.name``).  Its PID 1
is a minimal reaper; every ``run`` and ``spawn`` is an exec into it, made
through the same core as `hutch exec`, with the caller's pipes as its stdio.
No hutch or Python code runs inside.

The caller becomes a child subreaper, so the processes it starts stay its own
children and their exact status is known.  As root it also becomes non-dumpable
(so a sandbox cannot open its /proc/PID/exe).  Nothing else of the caller is
changed: no signal handler, no stdio, no working directory.  Calls are safe
from many threads and from asyncio (:mod:`hutch.aio`).
"""

import errno
import os
import threading

from ..errors import HutchError, SandboxError
from .config import INIT_PATH, Settings
from .process import DEVNULL, PIPE, STDOUT, Process, Result

_SETTINGS = ("rootfs", "volumes", "env", "workdir", "hostname", "memory", "cpus",
             "pids", "network", "publish", "user", "rootless", "seccomp",
             "memory_swap", "cpuset_cpus", "cap_add", "cap_drop", "dns", "add_hosts",
             "ip", "ip6", "aliases", "bandwidth", "config_dir")


class Sandbox:
    """A container for untrusted code; see docs/python-api.md.

    ``with Sandbox(...) as sb`` starts it and removes it at the end, whatever
    happened inside; ``start()`` and ``close()`` do the same by hand."""

    def __init__(self, rootfs=None, volumes=(), env=None, workdir="/",
                 hostname="sandbox", memory=None, cpus=None, pids=None,
                 network="none", publish=(), timeout=None, user=None, rootless=None,
                 seccomp="default", name=None, *, memory_swap=None, cpuset_cpus=None,
                 cap_add=(), cap_drop=(), proc=None, root=None, dns=(), add_hosts=(),
                 ip=None, ip6=None, aliases=(), bandwidth=None, config_dir=None):
        self._kwargs = dict(rootfs=rootfs, volumes=[tuple(v) if not isinstance(v, str)
                                                    else v for v in volumes],
                            env=dict(env) if isinstance(env, dict) else env,
                            workdir=workdir, hostname=hostname, memory=memory,
                            cpus=cpus, pids=pids, network=network, publish=list(publish),
                            user=user, rootless=rootless,
                            seccomp=seccomp, memory_swap=memory_swap,
                            cpuset_cpus=cpuset_cpus, cap_add=list(cap_add),
                            cap_drop=list(cap_drop), proc=proc, dns=dns,
                            add_hosts=add_hosts, ip=ip, ip6=ip6, aliases=aliases,
                            bandwidth=bandwidth, config_dir=config_dir)
        try:
            self.settings = Settings(**self._kwargs)
            from ..container.record import default_root, validate_id
            self.name = name or "sb-" + os.urandom(6).hex()
            validate_id(self.name)
        except HutchError as e:
            raise SandboxError.of(e) from None
        self.timeout = timeout
        self.root = root or default_root()
        self.pid = None
        self._paths = {}
        self._lock = threading.Lock()
        self._closed = False
        self._runs = 0
        self._live = set()
        from . import spares
        spares.warm()       # boots while the caller goes on

    # --- lifecycle ------------------------------------------------------------------
    def start(self):
        """Creates and starts the container; returns self."""
        with self._lock:
            if self.pid is not None or self._closed:
                raise SandboxError(f"sandbox {self.name} was started already",
                                   errno.EALREADY)
            from ..container.create import CreateOptions, create
            from ..container.lifecycle import delete, start
            from ..spec.config import parse_config
            from . import spares
            null = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
            try:
                cfg = parse_config(self.settings.config([INIT_PATH, "-P"], self.root,
                                                        cid=self.name), "sandbox")
                attachments = ()
                if self.settings.views:
                    from ..keeper.attach import HELPER_KIND, Views
                    attachments = (Views(spares.take(HELPER_KIND)),)
                net = self.settings.network_attachment(self.name)
                if net is not None:
                    attachments += (net,)
                rec = create(self.root, self.name, "/", CreateOptions(
                    rootless=self.settings.rootless, stdio=(null, null, null),
                    helper=spares.take("create"), attachments=attachments), cfg=cfg)
            except HutchError as e:
                raise SandboxError.of(e) from None
            finally:
                os.close(null)
            self.pid = rec.pid
            self._paths = rec.cgroup_paths
            try:
                start(self.root, self.name)
            except HutchError as e:
                delete(self.root, self.name, force=True)
                self._reap_init()
                self.pid = None
                raise SandboxError.of(e) from None
        return self

    def close(self):
        """Kills everything in the sandbox and removes it (idempotent)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            for p in list(self._live):
                p.kill()
            from ..container.lifecycle import delete
            try:
                delete(self.root, self.name, force=True)
            except HutchError as e:
                raise SandboxError.of(e) from None
            finally:
                for p in list(self._live):
                    try:
                        p.wait()
                    except HutchError:
                        pass
                self._live.clear()
                self._reap_init()

    def _reap_init(self):
        """Waits for the init (our child: we are a subreaper).  A dying pid
        namespace's init waits for every process of the namespace to be reaped,
        and its processes are our children: any of them still unreaped (a
        zombie whose Process was never made) would keep it, and us, waiting for
        ever, so those are reaped too."""
        if not self.pid:
            return
        import time
        try:
            ns = os.readlink(f"/proc/{self.pid}/ns/pid")
        except OSError:
            ns = None
        while True:
            try:
                if os.waitpid(self.pid, os.WNOHANG)[0]:
                    return
            except ChildProcessError:
                return
            if ns is not None:
                live = {p.pid for p in self._live}
                for pid in _zombie_children():
                    try:
                        if pid not in live and os.readlink(f"/proc/{pid}/ns/pid") == ns:
                            os.waitpid(pid, os.WNOHANG)
                    except (OSError, ChildProcessError):
                        pass
            time.sleep(0.005)

    def __enter__(self):
        if self.pid is None:
            self.start()
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        state = "closed" if self._closed else "running" if self.pid else "new"
        return f"<hutch.Sandbox {self.name} {state}>"

    # --- processes ------------------------------------------------------------------
    def spawn(self, args, stdin=None, stdout=None, stderr=None, env=None, cwd=None,
              user=None):
        """Starts ``args`` in the sandbox; returns a :class:`Process`.  Each of
        stdin, stdout, stderr is PIPE, DEVNULL, None (the sandbox's /dev/null; the
        caller's own stdio is never handed to untrusted code implicitly), an fd,
        or a file object; stderr may also be STDOUT."""
        if isinstance(args, str):
            raise SandboxError("args must be a list such as ['sh', '-c', 'echo hi'], "
                               "not a string", errno.EINVAL)
        args = list(args)
        self._check_running()
        import time
        started = time.monotonic()
        opened, ours, theirs = [], [None, None, None], []
        try:
            for i, spec in enumerate((stdin, stdout, stderr)):
                if spec == STDOUT and i == 2:
                    theirs.append(theirs[1])
                    continue
                if spec is None or spec == DEVNULL:
                    fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
                    opened.append(fd)
                    theirs.append(fd)
                elif spec == PIPE:
                    r, w = os.pipe2(os.O_CLOEXEC)
                    mine, child = (w, r) if i == 0 else (r, w)
                    opened.append(child)
                    ours[i] = os.fdopen(mine, "wb" if i == 0 else "rb", buffering=0)
                    theirs.append(child)
                elif isinstance(spec, int) and spec >= 0:
                    theirs.append(spec)
                elif hasattr(spec, "fileno"):
                    theirs.append(spec.fileno())
                else:
                    raise SandboxError(f"invalid stdio {spec!r}: use hutch.PIPE, "
                                       "hutch.DEVNULL, None, an fd or a file",
                                       errno.EINVAL)
            return self._exec(args, theirs, ours, env, cwd, user, started)
        except BaseException:
            for f in ours:
                if f is not None:
                    f.close()
            raise
        finally:
            for fd in opened:
                os.close(fd)

    def _exec(self, args, stdio, ours, env, cwd, user, started):
        from ..container import exec as E
        from ..container.plan import ProcessPlan
        from .process import RunGroup
        with self._lock:
            self._runs += 1
            n = self._runs
        group = None
        try:
            # named apart from any a restored copy brought with it
            group = RunGroup(self._paths, f"hutch-run-{n}-{os.urandom(3).hex()}") \
                if self._paths else None
            count = self._oom_counter()
            cdir, info = E.prepare(self.root, self.name)
            try:
                proc = ProcessPlan.from_record(info.process)
                envl = [f"{k}={v}" for k, v in env.items()] if isinstance(env, dict) \
                    else list(env or ())
                E.apply_overrides(proc, args=args, env=envl, cwd=cwd, user=user)
            except BaseException:
                cdir.unlock()
                raise
            from . import spares
            pid = E.exec_in(cdir, info, proc, E.ExecOptions(
                spawn=True, stdio=tuple(stdio), source="cwd", helper=spares.take("enter"),
                cgroups=(group.spec,) if group and group.spec else ()))
        except HutchError as e:
            if group is not None:
                group.remove()
            raise SandboxError.of(e) from None
        p = Process(args, pid, group, *ours, oom_count=count, started=started)
        with self._lock:
            self._live.add(p)
        p._forget = self._live.discard
        return p

    def _oom_counter(self):
        if self.settings.memory is None or not self._paths:
            return None
        from ..cgroups.stats import oom_kills
        paths = self._paths

        def read():
            return oom_kills(paths)
        return read, read()

    def run(self, args, input=None, timeout=None, env=None, cwd=None, check=False,
            user=None):
        """Runs ``args`` to the end; returns a :class:`Result` with its stdout and
        stderr (bytes, apart), exit code, signal, duration, and whether the
        timeout or the memory limit ended it.  ``timeout`` (s; default: the
        sandbox's) kills the command and all it started.  ``check`` raises
        :class:`hutch.CommandFailed` unless it exited with 0."""
        from ..errors import TimeoutExpired
        if timeout is None:
            timeout = self.timeout
        p = self.spawn(args, stdin=PIPE if input else None, stdout=PIPE, stderr=PIPE,
                       env=env, cwd=cwd, user=user)
        timed_out = False
        try:
            out, err = p.communicate(input, timeout)
        except TimeoutExpired:
            timed_out = True
            p.killed_at_timeout = True
            p.kill()
            out, err = p.communicate()
        finally:
            if p.returncode is None:
                p.kill()
                p.wait()
            self._live.discard(p)
        return _result(p, out, err, timed_out, check)

    def _check_running(self):
        if self._closed:
            raise SandboxError(f"sandbox {self.name} is closed", errno.ESRCH)
        if self.pid is None:
            raise SandboxError(f"sandbox {self.name} is not started: use it in a "
                               "'with' block or call start()", errno.ESRCH)

    # --- files ----------------------------------------------------------------------
    def _root_fd(self):
        self._check_running()
        try:
            return os.open(f"/proc/{self.pid}/root", os.O_PATH | os.O_DIRECTORY |
                           os.O_CLOEXEC)
        except OSError as e:
            raise SandboxError(f"open the root of sandbox {self.name}: {e.strerror}",
                               e.errno) from None

    def _files(self, fn, *args, creates=False):
        """Runs a :mod:`.files` function on the sandbox's root.  To create
        files in a sandbox with a user namespace, this thread takes the
        sandbox root's host ids as its filesystem ids meanwhile (the sandbox's
        own mounts, such as its /tmp, take no owner it does not map), with the
        caller's capabilities kept, so it still reads the host as before."""
        rootfd = self._root_fd()
        k = saved = None
        try:
            uid, gid = self.settings.host_ids()
            if creates and (uid, gid) != (os.geteuid(), os.getegid()):
                from ..linux.kernel import kernel
                k = kernel()
                eff, perm, inh = k.capget()
                saved = k.setfsids(uid, gid)
                k.capset(eff, perm, inh)    # setfsuid dropped the file capabilities
            return fn(rootfd, *args)
        except HutchError as e:
            raise SandboxError.of(e) from None
        except OSError as e:
            raise SandboxError.from_os(f"{fn.__name__} in sandbox {self.name}", e) \
                from None
        finally:
            if saved is not None:
                k.setfsids(*saved)      # back to 0: the kernel restores them
            os.close(rootfd)

    def write_file(self, path, data, mode=0o644):
        """Writes ``data`` (bytes or str) to ``path`` inside, owned by the
        sandbox's user."""
        from . import files
        if isinstance(data, str):
            data = data.encode()
        uid, gid = self.settings.process_host_ids()
        self._files(files.write_file, path, data, mode, uid, gid, creates=True)

    def read_file(self, path):
        """The bytes of the file ``path`` inside."""
        from . import files
        return self._files(files.read_file, path)

    def put(self, src, dst):
        """Copies a host file or tree into the sandbox (like ``cp -a``)."""
        from . import files
        uid, gid = self.settings.process_host_ids()
        self._files(files.put, src, dst, uid, gid, creates=True)

    def get(self, src, dst):
        """Copies a file or tree out of the sandbox onto the host."""
        from . import files
        self._files(files.get, src, dst)

    # --- the cgroup -----------------------------------------------------------------
    def stats(self):
        """Memory, CPU and pids usage, from the sandbox's cgroup: a dict with
        memory (bytes), memory_limit, memory_peak, cpu_seconds, pids,
        pids_limit, oom_kills, and ``raw`` (runc's `events --stats` data)."""
        self._check_running()
        if not self._paths:
            raise SandboxError(f"sandbox {self.name} has no cgroup (rootless, and "
                               "the cgroup tree is not delegated to this user)",
                               errno.EOPNOTSUPP)
        from ..cgroups import stats as S
        data = S.collect(self._paths)
        mem = (data.get("memory") or {}).get("usage") or {}
        pids = data.get("pids") or {}
        limit = mem.get("limit")
        return {"memory": mem.get("usage", 0),
                "memory_limit": limit if limit and limit < 1 << 62 else None,
                "memory_peak": mem.get("max", 0),
                "cpu_seconds": data["cpu"]["usage"]["total"] / 1e9,
                "pids": pids.get("current", 0), "pids_limit": pids.get("limit") or None,
                "oom_kills": S.oom_kills(self._paths), "raw": data}

    # --- checkpoint and restore -----------------------------------------------------
    def checkpoint(self, path, leave_running=True):
        """Saves the sandbox (memory, processes, /tmp and the other private
        mounts) into the directory ``path`` with CRIU; returns a
        :class:`Snapshot` for :meth:`restore`.  Without ``leave_running`` the
        sandbox is gone afterwards."""
        from .snapshot import save
        self._check_running()
        try:
            snap = save(self, path, leave_running)
        except HutchError as e:
            raise SandboxError.of(e) from None
        if not leave_running:
            self.close()
        return snap

    @classmethod
    def restore(cls, snapshot, name=None, root=None, timeout=None):
        """A new running sandbox from a :class:`Snapshot` (or its directory),
        with a new name: a copy of the sandbox as it was, which runs on its
        own (the original, if it still runs, is not touched)."""
        from .snapshot import load
        return load(cls, snapshot, name, root, timeout)


def _result(p, out, err, timed_out, check):
    """The :class:`Result` of a finished run (``p``: its :class:`Process`)."""
    r = Result(list(p.args), p.returncode, out, err, p.duration, timed_out,
               not timed_out and p.oom_killed())
    if check:
        r.check_returncode()
    return r


def _zombie_children():
    """This process's children that are zombies."""
    out = []
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return out
    for t in tasks:
        try:
            with open(f"/proc/self/task/{t}/children") as f:
                pids = f.read().split()
        except OSError:
            continue
        for pid in pids:
            try:
                with open(f"/proc/{pid}/stat") as f:
                    st = f.read()
            except OSError:
                continue
            if st[st.rindex(")") + 2] == "Z":
                out.append(int(pid))
    return out


def run(args, input=None, timeout=None, env=None, cwd=None, check=False, **sandbox):
    """Runs one command in a new sandbox and removes the sandbox; returns its
    :class:`Result`.  ``sandbox`` takes :class:`Sandbox`'s arguments."""
    with Sandbox(**sandbox) as sb:
        return sb.run(args, input=input, timeout=timeout, env=env, cwd=cwd,
                      check=check)


__all__ = ["Sandbox", "Process", "Result", "run", "PIPE", "DEVNULL", "STDOUT"]
