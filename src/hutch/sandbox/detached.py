"""What a detached sandbox's keeper is given (`hutch sandbox -d`, and `hutch
restore` of one's checkpoint): the sandbox's OCI config, made here by the front
door, and the keeper's own settings.  The keeper makes or restores the
container from it and knows nothing of the front door's settings."""

import os

from .config import INIT_PATH, Settings


def keeper_spec(root, cid, settings_kw, args, log=None, tty=False, term=None,
                restore=None):
    """The spec :func:`hutch.keeper.launch.start` sends the keeper."""
    from ..keeper.sock import keeper_dir
    s = Settings(**settings_kw)
    devlog = os.path.join(keeper_dir(os.path.join(root, cid)), "dev-log")
    raw = s.config([INIT_PATH, "--"] + list(args), root, cid=cid, extra_mounts=[
        {"destination": "/dev/log", "type": "bind", "source": devlog,
         "options": ["bind", "nosuid", "nodev", "noexec"]}])
    if tty:
        raw["process"]["terminal"] = True
        raw["process"]["env"].append("TERM=" + (term or "xterm"))
    spec = {"root": root, "id": cid, "config": raw, "rootless": s.rootless,
            "userns": s.userns, "views": s.views, "log": log or {}, "tty": bool(tty),
            # for a restore of its checkpoint under another name: made anew
            "settings": settings_kw, "args": list(args), "term": term,
            "network": s.network_kwargs(cid)
            if s.net_mode not in ("none", "loopback", "host") else None}
    if restore:
        spec["restore"] = restore
    return spec
