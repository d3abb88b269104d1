"""cgroup v1: per-hierarchy details."""

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
            raise HutchError(f"freezer {path} did not reach {want} (stuck in {cur})", 16)
        time.sleep(0.001)
