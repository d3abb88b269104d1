"""Decisions of the CRIU layer that need no root: the network lock, the cgroup
yard's names, the CRIU process started without subprocess."""

import os

from hutch.cgroups import Hierarchy
from hutch.criu import Worker
from hutch.criu.host import lock_for, yard_binds


def test_no_network_lock_only_for_an_own_namespace_with_nothing_outside():
    assert lock_for(True, False, ["lo"]) == "skip"
    assert lock_for(True, False, ["lo", "sit0", "tunl0", "ip6tnl0"]) == "skip"
    assert lock_for(True, False, ["lo", "eth0"]) is None      # a veth reaches out
    assert lock_for(True, True, ["lo"]) is None               # joined (Podman's)
    assert lock_for(False, False, ["lo"]) is None             # the host's


HYBRID = """12:net_cls,net_prio:/
9:name=systemd:/
2:cpu,cpuacct:/x
4:memory:/process_api/abc
0::/
"""


def _hs(root="/"):
    return [Hierarchy("cpu,cpuacct", "/sys/fs/cgroup/cpu,cpuacct", root, 1,
                      ["cpu", "cpuacct"]),
            Hierarchy("memory", "/sys/fs/cgroup/memory", "/", 1, ["memory"]),
            Hierarchy("name=systemd", "/sys/fs/cgroup/systemd", "/", 1,
                      ["name=systemd"]),
            Hierarchy("net_cls,net_prio", "/sys/fs/cgroup/net_cls,net_prio", "/", 1,
                      ["net_prio", "net_cls"]),
            Hierarchy("unified", "/sys/fs/cgroup/unified", "/", 2, None)]


def test_the_yard_uses_criu_s_names_for_every_hierarchy():
    assert yard_binds(_hs(), HYBRID) == {
        "net_cls,net_prio": "/sys/fs/cgroup/net_cls,net_prio",
        "systemd": "/sys/fs/cgroup/systemd", "cpu,cpuacct": "/sys/fs/cgroup/cpu,cpuacct",
        "memory": "/sys/fs/cgroup/memory", "unified": "/sys/fs/cgroup/unified"}


def test_no_yard_when_a_hierarchy_is_mounted_in_part_or_missing():
    assert yard_binds(_hs(root="/kubepods/x"), HYBRID) is None
    assert yard_binds(_hs(), HYBRID + "13:perf_event:/\n") is None


def test_a_worker_gets_only_what_it_is_given(tmp_path):
    out = tmp_path / "fds"
    leak = os.open("/dev/null", os.O_RDONLY)          # not close-on-exec
    os.set_inheritable(leak, True)
    r, w = os.pipe()                                   # close-on-exec, passed on
    try:
        p = Worker(["/bin/sh", "-c", f"ls /proc/self/fd > {out}; echo x > /proc/self/fd/{w}"],
                   keep_fds=(w,), quiet=True)
        assert p.wait(10) == 0
        fds = set(out.read_text().split())
        assert str(w) in fds and str(leak) not in fds, fds
        assert os.read(r, 10) == b"x\n"
        assert not os.get_inheritable(w)               # only the child's copy was
    finally:
        for fd in (leak, r, w):
            os.close(fd)


FAKE_CRIU = """#!{python}
import os, socket, sys, time
sys.path.insert(0, {src!r})
from hutch.criu import rpc
sock = socket.socket(fileno=int(sys.argv[2]))
req = rpc.decode("req", sock.recv(1 << 16))
time.sleep(0.3)                     # a dump in progress
open({marker!r}, "w").write("finished")
sock.send(rpc.encode("resp", {{"type": req["type"], "success": True}}))
"""


def test_a_failure_alongside_criu_lets_it_finish_first(tmp_path):
    """If hutch's own work alongside a dump fails, CRIU is not killed half-way
    (it would leave its parasite in the container): its answer is awaited, then
    the failure is raised."""
    import sys
    import pytest
    from hutch import criu as C
    from hutch.criu import rpc
    marker = tmp_path / "done"
    fake = tmp_path / "criu"
    fake.write_text(FAKE_CRIU.format(python=sys.executable, marker=str(marker),
                                     src=os.path.join(os.path.dirname(os.path.dirname(
                                         os.path.dirname(__file__))), "src")))
    fake.chmod(0o755)

    def boom():
        raise OSError(104, "the destination went away")
    with pytest.raises(OSError):
        C.call(str(fake), {"type": rpc.DUMP, "opts": {"images_dir_fd": 3}},
               meanwhile=boom)
    assert marker.read_text() == "finished"
