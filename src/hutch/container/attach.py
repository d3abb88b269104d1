"""Attachments: host-side work that belongs to one container, each with its own
undo.  A container network (a veth into the init's network namespace, addresses,
NAT rules) or a per-container keeper process is one.

`create` runs a container's attachments in order once the init exists, with all
its namespaces, and is held before its rootfs is made; so whatever an attachment
sets up is there before any hook or the user's program runs.  Each is recorded in
state.json *before* it starts (kind, then the data its ``attach`` returns), so
that the undo runs whatever happens: `delete`, a create that fails at any later
step, and `delete -f` after a hutch that was killed part-way all run the undo of
every recorded attachment, newest first.

An attachment class has:

- ``kind``: its name in the record: a name given to :func:`register` (in-process
  users, such as tests or a library caller), or ``"hutch.MODULE:CLASS"``, which
  any later hutch command can import to undo it;
- ``attach(self, ctx) -> data``: does the work; returns JSON-able data for the
  undo.  If it raises, it is undone at once (with ``data`` None);
- ``settle(self, ctx, data) -> data`` (optional): the rest of work that
  ``attach`` began and that goes on while the init makes its rootfs (a
  network's veth is made by its daemon meanwhile); called once the init has
  made it, before the container's hooks.  If it raises, the create fails and
  its rollback undoes every attachment;
- ``detach(ctx, data)`` (a classmethod or staticmethod): undoes it.  ``data`` is
  None when ``attach`` did not finish (it failed, or hutch was killed during it):
  the undo must then find what may have been made by the container's id, and it
  must succeed when there is nothing to undo (it may run twice).

Containers without attachments pay nothing: this module is imported only when a
create is given attachments or a record lists some.
"""

import importlib

from ..errors import HutchError

_REGISTERED = {}


def register(cls):
    """Makes ``cls`` resolvable by its ``kind`` in this process (for kinds that
    are not a ``hutch.MODULE:CLASS`` path)."""
    _REGISTERED[cls.kind] = cls
    return cls


def resolve(kind):
    cls = _REGISTERED.get(kind)
    if cls is not None:
        return cls
    mod, sep, name = kind.partition(":")
    if not sep or not mod.startswith("hutch.") or not name.isidentifier():
        raise HutchError(f"attachment {kind!r} is not known to this hutch (neither "
                         "registered in this process nor a hutch.MODULE:CLASS path)")
    try:
        return getattr(importlib.import_module(mod), name)
    except (ImportError, AttributeError) as e:
        raise HutchError(f"attachment {kind!r} is not known to this hutch: {e}") \
            from None


class Context:
    """What an attachment sees: the container's id, its init's host pid (0 once
    it is gone), the state root, the bundle, the parsed config (None in an undo
    run by a later command) and the record."""

    __slots__ = ("cid", "pid", "root", "bundle", "cfg", "record", "mounts")

    def __init__(self, cid, pid, root, bundle, cfg, record):
        self.cid, self.pid, self.root, self.bundle = cid, pid, root, bundle
        self.cfg, self.record = cfg, record
        # (host path, destination): read-only binds an attachment asks for (the
        # keeper's views); made in the container after its config's mounts, from
        # clones of the host's mounts (they may be newer than the init's namespace)
        self.mounts = []


def attach_all(attachments, ctx, save):
    """Runs each attachment in order.  ``save()`` writes the record: called
    before each one starts (with its entry, data None) and after it succeeded
    (with its data).  If one fails, it and those before it are undone, newest
    first, and the error is raised."""
    entries = ctx.record.setdefault("attachments", [])
    for a in attachments:
        entry = {"kind": a.kind, "data": None}
        entries.append(entry)
        save()
        try:
            entry["data"] = a.attach(ctx)
        except BaseException:
            detach_all(ctx)
            save()
            raise
        save()


def settle_all(attachments, ctx, save):
    """Calls ``settle`` of each attachment that has one, in order (see above);
    its data is recorded again."""
    entries = (ctx.record.get("attachments") or [])[-len(attachments):] \
        if attachments else []
    for a, entry in zip(attachments, entries):
        fn = getattr(a, "settle", None)
        if fn is not None:
            entry["data"] = fn(ctx, entry["data"])
            save()


def detach_all(ctx):
    """Undoes every attachment the record lists, newest first; each one's entry
    is dropped once its undo succeeded.  Returns the errors of those that failed
    (their entries stay, so that a later delete tries again)."""
    entries = ctx.record.get("attachments") or []
    errors = []
    for entry in reversed(list(entries)):
        try:
            resolve(entry["kind"]).detach(ctx, entry.get("data"))
        except Exception as e:      # noqa: BLE001 - each undo is tried, and reported
            errors.append(f"undo attachment {entry['kind']}: {e}")
            continue
        entries.remove(entry)
    return errors
