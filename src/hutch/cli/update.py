"""hutch update [options] ID

Change the resource limits of a running container.  Only the values given change.

options:
  --resources, -r FILE   linux.resources JSON from FILE, or - for standard input
  --memory VALUE         memory limit (bytes, or with a unit: 512k, 100m, 2g; -1: none)
  --memory-reservation VALUE
  --memory-swap VALUE    memory+swap limit (-1: unlimited)
  --kernel-memory VALUE, --kernel-memory-tcp VALUE
  --cpu-share N, --cpu-period N, --cpu-quota N, --cpu-burst N, --cpu-idle N
  --cpu-rt-period N, --cpu-rt-runtime N
  --cpuset-cpus LIST, --cpuset-mems LIST
  --blkio-weight N
  --pids-limit N         maximum number of processes (-1: unlimited)
"""

import errno
import sys

from . import args

# flag -> (section, key, kind)
FLAGS = {
    "--memory": ("memory", "limit", "bytes"),
    "--memory-reservation": ("memory", "reservation", "bytes"),
    "--memory-swap": ("memory", "swap", "bytes"),
    "--kernel-memory": ("memory", "kernel", "bytes"),
    "--kernel-memory-tcp": ("memory", "kernelTCP", "bytes"),
    "--cpu-share": ("cpu", "shares", "int"),
    "--cpu-period": ("cpu", "period", "int"),
    "--cpu-quota": ("cpu", "quota", "int"),
    "--cpu-burst": ("cpu", "burst", "int"),
    "--cpu-idle": ("cpu", "idle", "int"),
    "--cpu-rt-period": ("cpu", "realtimePeriod", "int"),
    "--cpu-rt-runtime": ("cpu", "realtimeRuntime", "int"),
    "--cpuset-cpus": ("cpu", "cpus", "str"),
    "--cpuset-mems": ("cpu", "mems", "str"),
    "--blkio-weight": ("blockIO", "weight", "int"),
    "--pids-limit": ("pids", "limit", "int"),
}
SPEC = {"--resources": ("resources", "str"), "-r": ("resources", "str")}
SPEC.update({f: (f[2:], "str") for f in FLAGS})

_UNITS = {"": 1, "b": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40,
          "p": 1 << 50}


def parse_bytes(flag, s):
    """runc's RAMInBytes: a number with an optional binary unit (k, m, g, t, p,
    optionally followed by b or ib), or -1."""
    t = s.strip().lower()
    if t == "-1":
        return -1
    for suffix in ("ib", "b"):
        if t.endswith(suffix) and t[:-len(suffix)][-1:].isalpha():
            t = t[:-len(suffix)]
            break
    num = t.rstrip("kmgtpb")
    unit = t[len(num):]
    try:
        val = float(num)
    except ValueError:
        val = None
    if val is None or unit not in _UNITS or val < 0:
        raise args.Usage(f"update: invalid value {s!r} for {flag}")
    return int(val * _UNITS[unit])


def run(g, argv):
    from .. import jsonlite
    from ..container.cgroupverbs import update
    from ..errors import HutchError
    o, pos = args.parse(argv, SPEC, "update")
    cid = args.one_id(pos, "update")
    res = {}
    if o["resources"]:
        try:
            if o["resources"] == "-":
                text = sys.stdin.read()
            else:
                with open(o["resources"]) as f:
                    text = f.read()
        except OSError as e:
            raise HutchError(f"update: read {o['resources']}: {e.strerror}", e.errno) from None
        try:
            res = jsonlite.loads(text)
        except ValueError as e:
            raise HutchError(f"update: the resources are not valid JSON: {e}",
                             errno.EINVAL) from None
        if not isinstance(res, dict):
            raise HutchError("update: the resources must be a JSON object", errno.EINVAL)
        from ..cgroups.resources import normalise
        res = normalise(res)
    for flag, (section, key, kind) in FLAGS.items():
        val = o[flag[2:]]
        if val is None:
            continue
        if kind == "bytes":
            val = parse_bytes(flag, val)
        elif kind == "int":
            try:
                val = int(val)
            except ValueError:
                raise args.Usage(f"update: invalid value {val!r} for {flag}") from None
        res.setdefault(section, {})[key] = val
    if not res:
        raise args.Usage("update: nothing to update: give --resources or a limit flag")
    update(g.root, cid, res)
    return 0
