"""Live migration between two "hosts" on one machine: two network namespaces
joined by a veth pair, each with its own hutch root.  The container keeps its
counter and its memory; a migration killed part-way leaves the source running
and the destination clean."""

import glob
import json
import os
import shutil
import signal
import subprocess
import time
import uuid

import pytest

from conftest import IS_ROOT, RUNTIME, RUNTIME_NAME, base_config, build_memhog

pytestmark = [pytest.mark.skipif(not IS_ROOT, reason="needs root"),
              pytest.mark.skipif(RUNTIME_NAME != "hutch", reason="hutch's migration")]

A_IP, B_IP = "10.199.7.1", "10.199.7.2"


@pytest.fixture
def hosts(tmp_path):
    tag = uuid.uuid4().hex[:6]
    a, b = f"hutch-a-{tag}", f"hutch-b-{tag}"
    for n in (a, b):
        subprocess.run(["ip", "netns", "add", n], check=True)
        subprocess.run(["ip", "-n", n, "link", "set", "lo", "up"], check=True)
    subprocess.run(["ip", "link", "add", "va" + tag, "netns", a, "type", "veth", "peer",
                    "name", "vb" + tag, "netns", b], check=True)
    for n, dev, ip in ((a, "va" + tag, A_IP), (b, "vb" + tag, B_IP)):
        subprocess.run(["ip", "-n", n, "addr", "add", ip + "/24", "dev", dev], check=True)
        subprocess.run(["ip", "-n", n, "link", "set", dev, "up"], check=True)
    h = {"a": a, "b": b, "root_a": str(tmp_path / "root-a"),
         "root_b": str(tmp_path / "root-b"), "bundles_b": str(tmp_path / "bundles-b"),
         "cg_b": f"/hutch-t-dst-{tag}", "port": 7000 + int(tag, 16) % 2000}
    yield h
    for root in (h["root_a"], h["root_b"]):
        for cid in (os.listdir(root) if os.path.isdir(root) else ()):
            if not cid.startswith("."):
                subprocess.run(RUNTIME + ["--root", root, "delete", "-f", cid])
    for n in (a, b):
        subprocess.run(["ip", "netns", "del", n])
    assert not glob.glob(f"/sys/fs/cgroup/*{h['cg_b']}")


def _in(ns, *cmd, **kw):
    return ["nsenter", f"--net=/run/netns/{ns}"] + list(cmd)


def _receiver(h):
    log = open(os.path.join(os.path.dirname(h["root_b"]), "receiver.log"), "w")
    return subprocess.Popen(_in(h["b"], *RUNTIME, "--root", h["root_b"], "receive",
                                "--listen", f"{B_IP}:{h['port']}", "--bundle-dir",
                                h["bundles_b"], "--cgroup-parent", h["cg_b"]),
                            stdout=log, stderr=log, stdin=subprocess.DEVNULL)


def _wait_listening(h):
    for _ in range(100):
        p = subprocess.run(_in(h["b"], "sh", "-c", "cat /proc/net/tcp"),
                           capture_output=True, text=True)
        if f":{h['port']:04X} " in p.stdout:
            return
        time.sleep(0.05)
    raise AssertionError("the receiver does not listen")


def _start(bundle, h, args):
    cfg = base_config(args)
    cfg["linux"]["cgroupsPath"] = f"/hutch-t-src-{uuid.uuid4().hex[:6]}"
    bundle.write(cfg)
    cid = bundle.new_id()
    # no pipe to us: the detached container would hold it open
    log = os.path.join(bundle.dir, "run.log")
    p = subprocess.run(RUNTIME + ["--root", h["root_a"], "--log", log, "run", "-d",
                                  "--bundle", bundle.dir, cid], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert p.returncode == 0, open(log).read() if os.path.exists(log) else ""
    return cid, cfg["linux"]["cgroupsPath"]


def _state(root, cid):
    p = subprocess.run(RUNTIME + ["--root", root, "state", cid], capture_output=True,
                       text=True)
    return json.loads(p.stdout) if p.returncode == 0 else None


def _read(path):
    for _ in range(200):
        try:
            with open(path) as f:
                v = f.read().strip()
            if v:
                return v
        except OSError:
            pass
        time.sleep(0.02)
    raise AssertionError(f"{path} stays empty")


@pytest.fixture
def memhog(bundle):
    build_memhog(os.path.join(bundle.rootfs, "memhog"))


SCRIPT = ("/memhog 64 & i=0; while :; do i=$((i+1)); echo $i > /count; "
          "sleep 0.05; done")


@pytest.fixture
def pipe_max():
    """Lazy pages need 4 MiB pipes; the host's setting is put back afterwards."""
    path = "/proc/sys/fs/pipe-max-size"
    with open(path) as f:
        before = f.read().strip()
    if int(before) < 4 << 20:
        with open(path, "w") as f:
            f.write(str(4 << 20))
    yield
    with open(path, "w") as f:
        f.write(before)


@pytest.mark.parametrize("mode", ["page-server", "lazy-pages"])
def test_migration_keeps_the_counter_and_the_memory(bundle, hosts, memhog, mode,
                                                     request):
    if mode == "lazy-pages":
        request.getfixturevalue("pipe_max")
    h = hosts
    cid, _ = _start(bundle, h, ["sh", "-c", SCRIPT])
    total = _read(os.path.join(bundle.rootfs, "mem.sum"))
    time.sleep(0.3)
    recv = _receiver(h)
    try:
        _wait_listening(h)
        lazy = ["--lazy-pages"] if mode == "lazy-pages" else []
        p = subprocess.run(_in(h["a"], *RUNTIME, "--root", h["root_a"], "migrate",
                               "--json", *lazy, cid, f"{B_IP}:{h['port']}"),
                           capture_output=True, text=True, timeout=120,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        report = json.loads(p.stdout.strip().splitlines()[-1])
        assert recv.wait(30) == 0
    finally:
        recv.kill()
    assert report["downtime_ms"] > 0, report
    assert report["page_bytes"] >= 64 << 20, report    # the memory went over
    if mode == "lazy-pages":
        assert report["pages_pulled_ms"] >= report["downtime_ms"], report
    assert _state(h["root_a"], cid) is None            # gone from the source
    st = _state(h["root_b"], cid)
    assert st["status"] == "running"
    rootfs_b = os.path.join(h["bundles_b"], cid, "rootfs")
    last = int(_read(os.path.join(bundle.rootfs, "count")))
    time.sleep(0.3)
    now = int(_read(os.path.join(rootfs_b, "count")))
    assert now > last, (last, now)                     # it counts on, at B
    with open(os.path.join(rootfs_b, "count")) as f:
        assert int(f.read()) >= now
    p = subprocess.run(RUNTIME + ["--root", h["root_b"], "exec", cid, "sh", "-c",
                                  "kill -USR1 $(pidof memhog)"], capture_output=True,
                       text=True)
    assert p.returncode == 0, p.stderr
    assert _read(os.path.join(rootfs_b, "mem.sum2")) == total
    assert glob.glob(f"/sys/fs/cgroup/memory{h['cg_b']}/{cid}")


@pytest.mark.parametrize("when", ["rootfs", "frozen"])
def test_a_killed_migration_leaves_the_source_running(bundle, hosts, memhog, when):
    h = hosts
    if when == "rootfs":
        # a big file makes the rootfs phase long enough to be interrupted
        with open(os.path.join(bundle.rootfs, "big"), "wb") as f:
            f.truncate(0)
            f.write(os.urandom(1 << 20) * 300)
    cid, cg = _start(bundle, h, ["sh", "-c", SCRIPT.replace("64", "256")])
    _read(os.path.join(bundle.rootfs, "mem.sum"))
    recv = _receiver(h)
    try:
        _wait_listening(h)
        mig = subprocess.Popen(_in(h["a"], *RUNTIME, "--root", h["root_a"], "migrate",
                                   cid, f"{B_IP}:{h['port']}"),
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               stdin=subprocess.DEVNULL)
        freezer = f"/sys/fs/cgroup/freezer{cg}/freezer.state"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and mig.poll() is None:
            if when == "frozen":
                with open(freezer) as f:
                    if f.read().strip() == "FROZEN":
                        break
            elif glob.glob(os.path.join(h["bundles_b"], cid, "rootfs", "bin")):
                break
            time.sleep(0.001)
        assert mig.poll() is None, "the migration ended before it could be killed"
        mig.send_signal(signal.SIGKILL)
        mig.wait()
        assert recv.wait(30) != 0          # the receiver saw the source go
    finally:
        recv.kill()
        recv.wait()
    # the source runs on: thawed, counting
    for _ in range(100):
        st = _state(h["root_a"], cid)
        if st and st["status"] == "running":
            break
        time.sleep(0.05)
    assert st and st["status"] == "running", st
    a = int(_read(os.path.join(bundle.rootfs, "count")))
    time.sleep(0.3)
    assert int(_read(os.path.join(bundle.rootfs, "count"))) > a
    # and the destination is clean
    assert not os.path.exists(os.path.join(h["bundles_b"], cid))
    assert not os.path.isdir(h["root_b"]) or \
        [e for e in os.listdir(h["root_b"]) if not e.startswith(".")] == []
    assert not glob.glob(f"/sys/fs/cgroup/*{h['cg_b']}")


def _fds_rss(pid):
    with open(f"/proc/{pid}/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return len(os.listdir(f"/proc/{pid}/fd")), rss


def test_a_serving_receiver_does_not_grow(bundle, hosts):
    """`hutch receive --serve` takes migration after migration: its fds stay
    the same and its memory does not creep.  HUTCH_RECEIVE_SOAK sets how many
    (bench/soak.sh runs as many as its cycles)."""
    h = hosts
    log = open(os.path.join(os.path.dirname(h["root_b"]), "receiver.log"), "w")
    recv = subprocess.Popen(_in(h["b"], *RUNTIME, "--root", h["root_b"], "receive",
                                "--serve", "--listen", f"{B_IP}:{h['port']}",
                                "--bundle-dir", h["bundles_b"], "--cgroup-parent",
                                h["cg_b"]), stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    try:
        _wait_listening(h)
        # nsenter execs the runtime: the receiver is recv.pid itself
        samples = []
        n = int(os.environ.get("HUTCH_RECEIVE_SOAK", "24"))
        for i in range(n):
            cid, _ = _start(bundle, h, ["sleep", "1000"])
            p = subprocess.run(_in(h["a"], *RUNTIME, "--root", h["root_a"], "migrate",
                                   cid, f"{B_IP}:{h['port']}"), capture_output=True,
                               text=True, timeout=120, stdin=subprocess.DEVNULL)
            assert p.returncode == 0, p.stderr
            assert _state(h["root_b"], cid)["status"] == "running"
            d = subprocess.run(RUNTIME + ["--root", h["root_b"], "delete", "-f", cid])
            assert d.returncode == 0
            shutil.rmtree(os.path.join(h["bundles_b"], cid))
            if i >= 3:      # after the first few: imports and caches are in place
                samples.append(_fds_rss(recv.pid))
        assert recv.poll() is None
    finally:
        recv.kill()
        recv.wait()
    print(f"\nreceive --serve: {n} migrations; after the 4th: {samples[0][0]} fds, "
          f"{samples[0][1]} KiB RSS; after the last: {samples[-1][0]} fds, "
          f"{samples[-1][1]} KiB RSS")
    fds = {s[0] for s in samples}
    assert len(fds) == 1, samples
    assert samples[-1][1] - samples[0][1] < 2048, samples     # KiB
