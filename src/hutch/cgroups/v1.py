"""cgroup v1: per-hierarchy details."""

import errno
import os
import time

from ..errors import HutchError


def init_cpuset(path):
    """A new v1 cpuset cgroup starts empty; copy cpus and mems from the parent."""
    for name in ("cpuset.cpus", "cpuset.mems"):
        f = os.path.join(path, name)
        try:
            with open(f) as fh:
                if fh.read().strip():
                    continue
        except OSError:
            continue
        parent = os.path.dirname(path)
        if not os.path.exists(os.path.join(parent, name)):
            continue
        with open(os.path.join(parent, name)) as fh:
            val = fh.read().strip()
        if not val:
            init_cpuset(parent)
            with open(os.path.join(parent, name)) as fh:
                val = fh.read().strip()
        with open(f, "w") as fh:
            fh.write(val)


def set_frozen(path, on, timeout):
    want = "FROZEN" if on else "THAWED"
    state = os.path.join(path, "freezer.state")
    deadline = time.monotonic() + timeout
    while True:
        with open(state, "w") as f:
            f.write(want)
        with open(state) as f:
            cur = f.read().strip()
        if cur == want:
            return
        if time.monotonic() > deadline:
            with open(state, "w") as f:
                f.write("THAWED")
            raise HutchError(f"freezer {path} did not reach {want} (stuck in {cur})",
                             errno.EBUSY)
        time.sleep(0.001)


# what every container may use, whatever its device list says (as runc allows)
DEFAULT_ALLOW = ("c 1:3 rwm", "c 1:5 rwm", "c 1:7 rwm", "c 1:8 rwm", "c 1:9 rwm",
                 "c 5:0 rwm", "c 5:1 rwm", "c 5:2 rwm", "c 136:* rwm", "c 10:200 rwm")


def device_rule(d):
    """The v1 rule text; None when no access is left (only r, w and m are the
    kernel's; other letters, as in "rwa", are not written)."""
    t = d.get("type") or "a"
    major = d.get("major")
    minor = d.get("minor")
    access = "".join(c for c in "rwm" if c in (d.get("access") or "rwm"))
    if not access:
        return None
    if t == "a":
        return "a"
    return (f"{t} {'*' if major is None or major == -1 else major}:"
            f"{'*' if minor is None or minor == -1 else minor} {access}")


def apply_devices(path, rules):
    """Applies linux.resources.devices in order, then the defaults every container
    needs.  The cgroup starts from deny-all."""
    def w(name, val):
        with open(f"{path}/{name}", "w") as f:
            f.write(val)
    w("devices.deny", "a")
    allowed = False
    for d in rules:
        if not d.get("allow") and not allowed:
            continue    # nothing is allowed yet: a deny changes nothing (runc folds it)
        rule = device_rule(d)
        if rule is None:
            continue
        w("devices.allow" if d.get("allow") else "devices.deny", rule)
        allowed = allowed or bool(d.get("allow"))
    for r in DEFAULT_ALLOW:
        w("devices.allow", r)
