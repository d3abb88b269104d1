"""A sandbox saved by CRIU, and new sandboxes made from it.

A snapshot directory holds:

* ``images/``: CRIU's images of the sandbox (its processes, their memory, and
  the contents of its private /tmp, /run and /dev);
* ``bundle/config.json``: the container's OCI config, which restore needs;
* ``sandbox.json``: the arguments the sandbox was made with, so that a restored
  copy is the same kind of sandbox (limits, user namespace, seccomp, volumes).

Restoring makes a new container with a new name, so one warmed-up sandbox can be
forked any number of times, while it runs on or after it is gone.  The volumes
it had must still exist.  A process the library still talks to over a pipe
(a :meth:`Sandbox.spawn` that runs) cannot be saved: CRIU refuses pipes to
outside the sandbox.
"""

import errno
import os

from ..errors import SandboxError

FORMAT = 1


class Snapshot:
    """A saved sandbox: ``path``, ``settings`` (the :class:`Sandbox` arguments)
    and ``name`` (of the sandbox it was taken from)."""

    def __init__(self, path):
        from .. import jsonlite
        self.path = os.path.abspath(path)
        try:
            with open(os.path.join(self.path, "sandbox.json"), "rb") as f:
                meta = jsonlite.loads(f.read())
        except FileNotFoundError:
            raise SandboxError(f"{self.path} holds no sandbox snapshot (sandbox.json "
                               "is missing)", errno.ENOENT) from None
        except (OSError, ValueError) as e:
            raise SandboxError(f"read the snapshot {self.path}: {e}",
                               getattr(e, "errno", None) or errno.EINVAL) from None
        if meta.get("format", 0) > FORMAT:
            raise SandboxError(f"the snapshot {self.path} was made by a newer hutch "
                               f"(format {meta.get('format')})", errno.EPROTO)
        self.settings = meta["settings"]
        self.name = meta["name"]

    @property
    def images(self):
        return os.path.join(self.path, "images")

    @property
    def bundle(self):
        return os.path.join(self.path, "bundle")

    def __repr__(self):
        return f"<hutch.Snapshot {self.path} of {self.name}>"


def _nested_mounts(settings):
    """Host mounts below a directory the sandbox binds from the host (its view
    of the host's root, its volumes).  In a user namespace CRIU restores such a
    bind without what is mounted below it, which the kernel refuses (the mounts
    below are locked to it): the checkpoint is refused up front instead."""
    sources = [src for src, _dst, _ro in settings.volumes]
    if settings.rootfs == "/":
        from .config import OWN_DIRS
        sources += ["/" + n for n in os.listdir("/") if n not in OWN_DIRS]
    with open("/proc/self/mountinfo", "rb") as f:
        points = [line.split()[4].decode() for line in f]
    return sorted({p for p in points for s in sources
                   if s != "/" and p.startswith(s.rstrip("/") + "/")})


def save(sb, path, leave_running):
    from .. import jsonlite
    from ..container.checkpoint import CheckpointOptions, checkpoint
    from .config import INIT_PATH
    path = os.path.abspath(path)
    if sb.settings.userns:
        nested = _nested_mounts(sb.settings)
        if nested:
            raise SandboxError(
                f"checkpoint of sandbox {sb.name}: it binds host directories with "
                f"mounts below them ({', '.join(nested[:3])}"
                f"{', ...' if len(nested) > 3 else ''}), which CRIU cannot restore "
                "in a user namespace; use rootfs=, or user='root-host'",
                errno.EOPNOTSUPP)
    images = os.path.join(path, "images")
    bundle = os.path.join(path, "bundle")
    # the snapshot holds the sandbox's memory: only its owner may enter it; CRIU
    # opens the images through a descriptor of their directory, from inside the
    # sandbox's user namespace on restore, so that directory lets anyone search it
    os.makedirs(path, 0o700, exist_ok=True)
    for d in (images, bundle):
        os.makedirs(d, 0o711, exist_ok=True)
        os.chmod(d, 0o711)
    if os.listdir(images):
        raise SandboxError(f"checkpoint into {path}: it holds a snapshot already",
                           errno.EEXIST)
    with open(os.path.join(bundle, "config.json"), "w") as f:
        f.write(jsonlite.dumps(sb.settings.config([INIT_PATH, "-P"], sb.root)))
    work = os.path.join(path, "work")
    checkpoint(sb.root, sb.name, images, CheckpointOptions(
        leave_running=leave_running, work_path=work))
    with open(os.path.join(path, "sandbox.json"), "w") as f:
        f.write(jsonlite.dumps({"format": FORMAT, "name": sb.name,
                                "settings": sb._kwargs}))
    return Snapshot(path)


def load(cls, snapshot, name, root, timeout):
    from ..container.lifecycle import load as load_container
    from ..container.restore import Restore, RestoreOptions
    from ..errors import HutchError
    from ..linux.fs import rmtree
    snap = snapshot if isinstance(snapshot, Snapshot) else Snapshot(snapshot)
    settings = dict(snap.settings)
    settings["volumes"] = [tuple(v) if isinstance(v, list) else v
                           for v in settings.get("volumes") or ()]
    from .. import jsonlite
    from .config import INIT_PATH
    sb = cls(**settings, name=name, root=root, timeout=timeout)
    work = os.path.join(snap.path, f"work-{sb.name}")
    # the copy's own config: the same sandbox, its keeper's paths under its name
    bundle = os.path.join(snap.path, f"bundle-{sb.name}")
    try:
        os.makedirs(bundle, 0o711, exist_ok=True)
        with open(os.path.join(bundle, "config.json"), "w") as f:
            f.write(jsonlite.dumps(sb.settings.config([INIT_PATH, "-P"], sb.root,
                                                      cid=sb.name)))
        attachments = ()
        if sb.settings.views:
            from ..keeper.attach import HELPER_KIND, Views
            from . import spares
            attachments = (Views(spares.take(HELPER_KIND)),)
        r = Restore(sb.root, sb.name, bundle, RestoreOptions(
            detach=True, work_path=work, attachments=attachments))
        r.run(snap.images)
        sb.pid = r.pid
        cdir = load_container(sb.root, sb.name, lock=False)
        sb._paths = cdir.data.cgroup_paths
    except HutchError as e:
        raise SandboxError.of(e) from None
    try:
        rmtree(work)
    except (OSError, HutchError):
        pass
    return sb
