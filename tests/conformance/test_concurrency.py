"""Back-to-back and concurrent calls, as engines make them: `start` the instant
`create` returns, many containers at once, several callers on one id."""

import glob
import json
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from conftest import RUNTIME_NAME, base_config


_OWN = []


@pytest.fixture(autouse=True)
def own_cgroups():
    """The cgroups the test named go afterwards, with whatever a runtime left
    in them: runc 1.1.5 can leak a loser's `runc init` from concurrent creates
    of one id, into the winner's cgroup after the winner's delete.  Only
    processes in these cgroups (started by this test's runtime) are killed."""
    yield
    import signal
    while _OWN:
        cg = _OWN.pop()
        for _ in range(50):
            pids = set()
            for d in glob.glob(f"/sys/fs/cgroup/*/{cg}"):
                try:
                    with open(os.path.join(d, "cgroup.procs")) as f:
                        pids |= {int(x) for x in f.read().split()}
                except OSError:
                    pass
            for pid in pids:
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            for d in glob.glob(f"/sys/fs/cgroup/*/{cg}"):
                for sub, _dirs, _files in sorted(os.walk(d, topdown=False)):
                    try:
                        os.rmdir(sub)
                    except OSError:
                        pass
            if not glob.glob(f"/sys/fs/cgroup/*/{cg}"):
                break
            time.sleep(0.1)


def _cgroup_gone(cg):
    return not glob.glob(f"/sys/fs/cgroup/*/{cg}")


def _setup(b, args, cg):
    cfg = base_config(args)
    cfg["linux"]["cgroupsPath"] = "/" + cg
    b.write(cfg)
    _OWN.append(cg)


def test_back_to_back_create_start_delete(bundle):
    """500 cycles of create && start && delete -f with no pause between them:
    not one may fail (start right after create once failed one time in ten)."""
    b = bundle
    cid = b.new_id()
    cg = f"hutch-b2b-{cid}"
    _setup(b, ["true"], cg)
    failures = []
    for i in range(500):
        for verb in (("create", "--bundle", b.dir, cid), ("start", cid),
                     ("delete", "-f", cid)):
            p = b.rt(*verb)
            if p.returncode != 0:
                failures.append(f"cycle {i} {verb[0]}: {p.stderr.strip()}")
                b.rt("delete", "-f", cid)
                break
    assert not failures, f"{len(failures)} of 500 failed; first: {failures[:3]}"
    assert not os.path.exists(os.path.join(b.root, cid))
    assert _cgroup_gone(cg)


def test_back_to_back_run(bundle):
    """300 `run` cycles of a program that exits at once, each checked."""
    b = bundle
    cid = b.new_id()
    cg = f"hutch-b2b-{cid}"
    _setup(b, ["sh", "-c", "echo ran"], cg)
    failures = []
    for i in range(300):
        p = b.rt("run", "--bundle", b.dir, cid)
        if p.returncode != 0 or p.stdout != "ran\n":
            failures.append(f"cycle {i}: {p.returncode} {p.stdout!r} {p.stderr.strip()}")
            b.rt("delete", "-f", cid)
    assert not failures, f"{len(failures)} of 300 failed; first: {failures[:3]}"
    assert not os.path.exists(os.path.join(b.root, cid))
    assert _cgroup_gone(cg)


def test_parallel_containers(bundle):
    """32 containers created in parallel, all started, all deleted in parallel:
    each ran, and nothing is left of any."""
    b = bundle
    tag = b.new_id()
    _setup(b, ["sleep", "100"], "hutch-par-" + tag)
    ids = [f"{tag}-{i}" for i in range(32)]
    b.ids.extend(ids)

    def create(cid):
        # each its own cgroup: one bundle, a cgroupsPath per id through the flag
        # engines use is not in the spec, so write a bundle copy per container
        d = os.path.join(b.dir, "..", "par-" + cid)
        os.makedirs(d)
        cfg = base_config(["sleep", "100"])
        cfg["root"]["path"] = b.rootfs
        cfg["linux"]["cgroupsPath"] = f"/hutch-par-{cid}"
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f)
        return b.rt("create", "--bundle", d, cid)

    with ThreadPoolExecutor(32) as ex:
        made = list(ex.map(create, ids))
    assert all(p.returncode == 0 for p in made), [p.stderr for p in made if p.returncode]
    with ThreadPoolExecutor(32) as ex:
        started = list(ex.map(lambda c: b.rt("start", c), ids))
    assert all(p.returncode == 0 for p in started), \
        [p.stderr for p in started if p.returncode]
    states = [json.loads(b.rt("state", c).stdout) for c in ids]
    assert {s["status"] for s in states} == {"running"}
    assert len({s["pid"] for s in states}) == 32
    with ThreadPoolExecutor(32) as ex:
        gone = list(ex.map(lambda c: b.rt("delete", "-f", c), ids))
    assert all(p.returncode == 0 for p in gone), [p.stderr for p in gone if p.returncode]
    for s in states:
        assert not os.path.exists(f"/proc/{s['pid']}/root") or \
            _zombie(s["pid"]), s
    assert not [c for c in ids if os.path.exists(os.path.join(b.root, c))]
    assert not [c for c in ids if not _cgroup_gone(f"hutch-par-{c}")]


def _zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
    except OSError:
        return True


@pytest.mark.xfail(RUNTIME_NAME == "runc", strict=False,
                   reason="runc 1.1.5 checks the id with stat, then MkdirAll: "
                          "concurrent creates of one id sometimes all fail (seen "
                          "here: 8 of 8 lost, one with 'unable to store init state')")
def test_concurrent_creates_of_one_id(bundle):
    """8 creates of one id at once: exactly one wins; each loser exits non-zero
    with one line saying the id exists, and the winner's container is intact."""
    b = bundle
    cid = b.new_id()
    cg = f"hutch-same-{cid}"
    _setup(b, ["sh", "-c", "echo winner"], cg)
    go = threading.Barrier(8)

    def create(_):
        go.wait()
        return b.rt("create", "--bundle", b.dir, cid)

    with ThreadPoolExecutor(8) as ex:
        results = list(ex.map(create, range(8)))
    winners = [p for p in results if p.returncode == 0]
    losers = [p for p in results if p.returncode != 0]
    assert len(winners) == 1, [p.stderr for p in results]
    for p in losers:
        lines = p.stderr.strip().splitlines()
        assert len(lines) == 1 and "exists" in lines[0] and cid in lines[0] or \
            "already exists" in lines[0], p.stderr
    st = json.loads(b.rt("state", cid).stdout)
    assert st["status"] == "created"
    assert b.rt("start", cid).returncode == 0
    assert b.rt("delete", "-f", cid).returncode == 0
    assert _cgroup_gone(cg)


def test_start_racing_delete(bundle):
    """`start` and `delete -f` at the same instant, 20 times: whichever wins,
    both end cleanly and nothing is left."""
    b = bundle
    cid = b.new_id()
    cg = f"hutch-race-{cid}"
    _setup(b, ["sleep", "100"], cg)
    for _ in range(20):
        assert b.rt("create", "--bundle", b.dir, cid).returncode == 0
        go = threading.Barrier(2)

        def call(verb):
            go.wait()
            return b.rt(*verb)

        with ThreadPoolExecutor(2) as ex:
            start, delete = ex.map(call, [("start", cid), ("delete", "-f", cid)])
        assert delete.returncode == 0, delete.stderr
        if start.returncode != 0:
            # the container went first (runc's words: "already running" once
            # delete has removed exec.fifo, "container process is already dead")
            assert any(w in start.stderr for w in (
                "does not exist", "stopped", "already running", "already dead")), \
                start.stderr
        end = time.monotonic() + 5
        while os.path.exists(os.path.join(b.root, cid)) and time.monotonic() < end:
            time.sleep(0.01)
        assert not os.path.exists(os.path.join(b.root, cid))
        assert _cgroup_gone(cg)


def test_parallel_containers_without_a_cgroups_path(bundle):
    """Containers without linux.cgroupsPath go under the runtime's own parent
    (/hutch for hutch): created and deleted in parallel, none of theirs is left,
    nor the parent if it was not there before."""
    b = bundle
    cfg = base_config(["true"])
    cfg["linux"].pop("cgroupsPath", None)
    b.write(cfg)
    parent_before = set(glob.glob("/sys/fs/cgroup/*/hutch"))
    ids = [b.new_id() for _ in range(8)]

    def cycle(cid):
        out = []
        for _ in range(5):
            p = b.rt("run", "--bundle", b.dir, cid)
            out.append(p.returncode)
        return out
    with ThreadPoolExecutor(8) as ex:
        codes = list(ex.map(cycle, ids))
    assert codes == [[0] * 5] * 8, codes
    for cid in ids:
        assert not glob.glob(f"/sys/fs/cgroup/*/{cid}") and \
            not glob.glob(f"/sys/fs/cgroup/*/*/{cid}")
    if RUNTIME_NAME == "hutch":
        assert set(glob.glob("/sys/fs/cgroup/*/hutch")) <= parent_before
