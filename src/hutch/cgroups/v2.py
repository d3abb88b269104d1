"""cgroup v2: the unified hierarchy."""

import errno
import os
import time

from ..errors import HutchError


def set_frozen(path, on, timeout):
    with open(os.path.join(path, "cgroup.freeze"), "w") as f:
        f.write("1" if on else "0")
    want = "frozen 1" if on else "frozen 0"
    deadline = time.monotonic() + timeout
    events = os.path.join(path, "cgroup.events")
    while True:
        with open(events) as f:
            if want in f.read().splitlines():
                return
        if time.monotonic() > deadline:
            raise HutchError(f"cgroup {path} did not become "
                             f"{'frozen' if on else 'thawed'}", errno.EBUSY)
        time.sleep(0.001)
