"""The cgroup v2 device filter (eBPF), loaded for real into a cgroup of the host's
cgroup2 hierarchy that the test creates and removes."""

import os

import pytest

from conftest import IS_ROOT
from hutch.cgroups import devices_bpf as D, hierarchies

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="needs root")


def _v2_mount():
    for h in hierarchies():
        if h.version == 2:
            return h.mountpoint
    pytest.skip("no cgroup2 hierarchy")


def _try_opens(cg, attempts):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.close(r)
            with open(os.path.join(cg, "cgroup.procs"), "w") as f:
                f.write("0")
            res = []
            for path, mode in attempts:
                try:
                    os.close(os.open(path, mode))
                    res.append("ok")
                except OSError as e:
                    res.append(str(e.errno))
            os.write(w, " ".join(res).encode())
        finally:
            os._exit(0)
    os.close(w)
    out = os.read(r, 1000).decode().split()
    os.close(r)
    os.waitpid(pid, 0)
    return out


def test_device_filter_allows_and_denies(tmp_path):
    cg = os.path.join(_v2_mount(), f"hutch-test-bpf-{os.getpid()}")
    os.mkdir(cg)
    try:
        # first a filter that denies /dev/kmsg (1:11) entirely, then an update that
        # allows reading it but not writing: the update replaces the first program
        D.apply_v2(cg, [{"allow": False, "type": "c", "major": 1, "minor": 11}])
        assert _try_opens(cg, [("/dev/kmsg", os.O_RDONLY)]) == ["1"]
        D.apply_v2(cg, [{"allow": True, "type": "c", "major": 1, "minor": 11,
                         "access": "r"}])
        fd = os.open(cg, os.O_RDONLY)
        assert len(D.attached(fd)) == 1
        os.close(fd)
        got = _try_opens(cg, [("/dev/kmsg", os.O_RDONLY), ("/dev/kmsg", os.O_WRONLY),
                              ("/dev/null", os.O_RDWR), ("/dev/loop-control", os.O_RDWR)])
        # read allowed, write denied, a default device allowed, anything else denied
        assert got == ["ok", "1", "ok", "1"]
    finally:
        os.rmdir(cg)
