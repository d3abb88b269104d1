"""The annotations with which any engine's container asks for a keeper
(docs/keeper.md): ``org.hutch.proc: "virtual"`` and ``org.hutch.syslog:
"capture"``.  The CLI's create, run and restore hand :func:`apply` to the core
(as a config hook) when a config has them; the core knows nothing of keepers."""

import errno
import os

from ..errors import ConfigError


def apply(cfg, o, root, cid):
    """org.hutch.proc: "virtual" (the container's own /proc and /sys views) and
    org.hutch.syslog: "capture" (its /dev/log into a log `hutch logs` reads), for
    any engine's container: a keeper serves them (:mod:`hutch.keeper`)."""
    ann = cfg.annotations or {}
    proc, syslog = ann.get("org.hutch.proc"), ann.get("org.hutch.syslog")
    if proc not in (None, "host", "virtual"):
        raise ConfigError(f"config.json: annotations: org.hutch.proc is 'virtual' or "
                          f"'host', not {proc!r}", errno.EINVAL)
    if syslog not in (None, "capture", "none"):
        raise ConfigError(f"config.json: annotations: org.hutch.syslog is 'capture' "
                          f"or 'none', not {syslog!r}", errno.EINVAL)
    if (proc == "virtual" or syslog == "capture") and not any(
            getattr(a, "kind", "").startswith("hutch.keeper.") for a in o.attachments):
        from .attach import Views
        o.attachments = tuple(o.attachments) + (
            Views(views=proc == "virtual", syslog=syslog == "capture"),)
        if proc == "virtual":
            # sysinfo(2) too, answered by the keeper (unless the engine has a
            # seccomp agent of its own: one listener per filter)
            from .attach import keeper_dir
            from .sysinfo import add_rule, allow_all_but_sysinfo
            from .viewsvc import listener_path
            listener = listener_path(keeper_dir(os.path.join(root, cid)))
            if cfg.seccomp is None:
                cfg.seccomp = allow_all_but_sysinfo(listener)
            else:
                add_rule(cfg.seccomp, listener)
