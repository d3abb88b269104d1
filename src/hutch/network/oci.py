"""The annotations with which any engine's container asks for a hutch network
(docs/networks.md): ``org.hutch.network`` takes what ``--network`` takes, and
``org.hutch.publish`` is a comma-separated list in the ``-p`` form.  The
container's name on its networks is its id."""

import errno

from ..errors import ConfigError, HutchError

NETWORK, PUBLISH = "org.hutch.network", "org.hutch.publish"


def apply(cfg, o, root, cid):
    from . import spec as S
    ann = cfg.annotations or {}
    value, publish = ann.get(NETWORK), ann.get(PUBLISH)
    try:
        mode, names = S.parse_networks(value or "loopback")
        ports = S.parse_publish([p for p in (publish or "").split(",") if p.strip()])
    except HutchError as e:
        raise ConfigError(f"config.json: annotations: {e}", e.errno) from None
    if mode in ("none", "loopback", "host"):
        if ports:
            raise ConfigError(f"config.json: annotations: {PUBLISH} needs {NETWORK} "
                              "to name a network", errno.EINVAL)
        return
    if not cfg.new_ns("network"):
        raise ConfigError(f"config.json: annotations: {NETWORK}: the container needs "
                          "a new network namespace (linux.namespaces: network, "
                          "without a path)", errno.EINVAL)
    if mode == "bridge" and o.rootless:
        raise ConfigError(f"config.json: annotations: {NETWORK}: bridge networks need "
                          "root; a rootless container uses slirp4netns or pasta",
                          errno.EPERM)
    from .attach import Network
    o.attachments = tuple(o.attachments) + (Network(
        mode, names, dns_name=cid, publish=ports, hostname=cfg.hostname),)
