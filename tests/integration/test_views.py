"""The keeper's /proc and /sys views: what a container sees of its own limits,
checked from inside it."""

import errno
import json
import os
import signal
import subprocess
import time

import pytest

from conftest import IS_ROOT, REPO, base_config

import hutch

pytestmark = pytest.mark.skipif(not IS_ROOT, reason="containers need root")
HUTCH = os.path.join(REPO, ".venv", "bin", "hutch-fast")


def keeper_mounts():
    with open("/proc/self/mountinfo") as f:
        return [line for line in f if "hutch-keeper" in line]


@pytest.fixture
def root(tmp_path):
    d = str(tmp_path / "state")
    yield d
    if os.path.isdir(d):
        for n in os.listdir(d):
            if not n.startswith("."):
                subprocess.run([HUTCH, "--root", d, "delete", "-f", n],
                               capture_output=True)
    assert keeper_mounts() == []


def test_cli_sandbox_sees_its_limits(root):
    p = subprocess.run([HUTCH, "--root", root, "sandbox", "--memory", "256m",
                        "--cpuset-cpus", "0", "--", "sh", "-c",
                        "grep MemTotal /proc/meminfo; nproc; grep -c ^processor "
                        "/proc/cpuinfo; cat /sys/devices/system/cpu/online "
                        "/sys/devices/system/cpu/present /sys/devices/system/cpu/possible;"
                        " cut -d' ' -f1 /proc/uptime; free | sed -n 2p;"
                        " busybox free | sed -n 2p; busybox uptime"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.splitlines()
    assert lines[0] == "MemTotal:         262144 kB"
    assert lines[1:6] == ["1", "1", "0", "0", "0"]
    assert float(lines[6]) < 5
    assert lines[7].split()[1] == "262144"          # procps free reads meminfo
    assert lines[8].split()[1] == "262144"          # busybox free asks sysinfo(2)
    assert " up 0 min" in lines[9]                  # so does busybox uptime


def test_proc_host_and_no_limit_show_the_host(root):
    host = open("/proc/meminfo").readline()
    p = subprocess.run([HUTCH, "--root", root, "sandbox", "--memory", "256m", "--proc",
                        "host", "--", "head", "-1", "/proc/meminfo"],
                       capture_output=True, text=True, timeout=30)
    assert p.stdout == host
    p = subprocess.run([HUTCH, "--root", root, "sandbox", "--", "head", "-1",
                        "/proc/meminfo"], capture_output=True, text=True, timeout=30)
    assert p.stdout == host


def test_update_changes_memtotal_at_once(root):
    with hutch.Sandbox(root=root, memory="256m") as sb:
        assert sb.run(["grep", "MemTotal", "/proc/meminfo"]).stdout.split()[1] == b"262144"
        subprocess.run([HUTCH, "--root", root, "update", "--memory", "512m",
                        "--memory-swap", "512m", sb.name], check=True)
        assert sb.run(["grep", "MemTotal", "/proc/meminfo"]).stdout.split()[1] == b"524288"
        st = json.loads(subprocess.run([HUTCH, "--root", root, "state", sb.name],
                                       capture_output=True, check=True).stdout)
        assert st["annotations"]["org.hutch.proc"] == "virtual"
        assert st["annotations"]["org.hutch.keeper"] == "running"


def test_a_killed_keeper_fails_reads_fast_and_the_container_runs_on(root):
    with hutch.Sandbox(root=root, memory="256m") as sb:
        pid = int(open(os.path.join(root, sb.name, "keeper", "pid")).read().split()[0])
        os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
        t = time.monotonic()
        r = sb.run(["cat", "/proc/meminfo"], timeout=5)
        assert time.monotonic() - t < 1.0 and not r.timed_out
        assert r.returncode != 0
        assert b"Transport endpoint is not connected" in r.stderr or \
            b"Input/output error" in r.stderr, r.stderr
        assert sb.run(["echo", "alive"]).stdout == b"alive\n"
        st = json.loads(subprocess.run([HUTCH, "--root", root, "state", sb.name],
                                       capture_output=True, check=True).stdout)
        assert st["annotations"]["org.hutch.keeper"] == "gone"
    # delete took the dead keeper's mount away too (the fixture checks none is left)


def test_oci_bundle_with_the_annotation(root, busybox_rootfs, tmp_path):
    import shutil
    import tempfile
    image = tempfile.mkdtemp(prefix="hutch-views-")
    try:
        b = os.path.join(image, "bundle")
        shutil.copytree(busybox_rootfs, os.path.join(b, "rootfs"), symlinks=True)
        cfg = base_config(["sh", "-c", "grep MemTotal /proc/meminfo; "
                           "cat /sys/devices/system/cpu/online"])
        cfg["annotations"] = {"org.hutch.proc": "virtual"}
        cfg["linux"]["resources"] = {"memory": {"limit": 128 << 20},
                                     "cpu": {"cpus": "0"}}
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)
        p = subprocess.run([HUTCH, "--root", root, "run", "-b", b, "oci-views"],
                           capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        assert p.stdout.splitlines() == ["MemTotal:         131072 kB", "0"]
        cfg["annotations"] = {"org.hutch.proc": "lots"}
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)
        p = subprocess.run([HUTCH, "--root", root, "run", "-b", b, "oci-views"],
                           capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert p.returncode != 0 and "org.hutch.proc" in p.stderr
    finally:
        shutil.rmtree(image)


def test_oci_bundle_syslog_capture(root, busybox_rootfs):
    import shutil
    import tempfile
    image = tempfile.mkdtemp(prefix="hutch-syslog-")
    try:
        b = os.path.join(image, "bundle")
        shutil.copytree(busybox_rootfs, os.path.join(b, "rootfs"), symlinks=True)
        cfg = base_config(["sh", "-c", "logger -t web started; logger -p local3.err "
                           "-t web failed"])
        cfg["annotations"] = {"org.hutch.syslog": "capture"}
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)
        p = subprocess.run([HUTCH, "--root", root, "run", "-b", b, "oci-syslog"],
                           capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        # `run` deleted it, and its log with it: keep one with run -d instead
        p = subprocess.run([HUTCH, "--root", root, "run", "-d", "-b", b, "oci-syslog2"],
                           capture_output=True, text=True, timeout=30,
                           stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr
        deadline = time.monotonic() + 5
        out = ""
        while time.monotonic() < deadline and out.count("\n") < 2:
            time.sleep(0.1)
            out = subprocess.run([HUTCH, "--root", root, "logs", "oci-syslog2"],
                                 capture_output=True, text=True).stdout
        assert out.splitlines() == ["user.notice web: started", "local3.err web: failed"]
        st = json.loads(subprocess.run([HUTCH, "--root", root, "state", "oci-syslog2"],
                                       capture_output=True, check=True).stdout)
        assert st["annotations"]["org.hutch.syslog"] == "capture"
        assert "org.hutch.proc" not in st["annotations"] or \
            st["annotations"]["org.hutch.proc"] != "virtual"
    finally:
        shutil.rmtree(image)


def test_detached_sandbox_has_views(root):
    p = subprocess.run([HUTCH, "--root", root, "sandbox", "-d", "--name", "dv",
                        "--memory", "64m", "--", "sleep", "100"],
                       capture_output=True, text=True, timeout=30)
    assert p.returncode == 0, p.stderr
    p = subprocess.run([HUTCH, "--root", root, "exec", "dv", "grep", "MemTotal",
                        "/proc/meminfo"], capture_output=True, text=True, timeout=30)
    assert p.stdout.split()[1] == "65536"
    subprocess.run([HUTCH, "--root", root, "delete", "-f", "dv"], check=True)
    assert keeper_mounts() == []


def test_views_latency_is_reported():
    """Not a timed test: prints the p50 of a read of /proc/meminfo through the
    views, for the record (bench/keeper.sh compares with LXCFS)."""
    with hutch.Sandbox(memory="256m") as sb:
        r = sb.run(["python3", "-c", "import time\nts=[]\nfor i in range(300):\n"
                    "  t=time.perf_counter(); open('/proc/meminfo','rb').read(); "
                    "ts.append(time.perf_counter()-t)\nts.sort(); print(ts[150]*1e6)"])
        assert r.returncode == 0, r.stderr
        print(f"p50 read of /proc/meminfo through the views: {float(r.stdout):.0f} us")
    assert errno.ENOTCONN


def test_checkpoint_and_restore_with_the_views(busybox_rootfs):
    """The keeper is not in the dump: the view mounts are external, and the
    restored copy gets a keeper of its own, which serves its own limits.  (CRIU
    binds them from inside the copy's user namespace: the state root must be
    reachable by the sandbox's root, as the default /run/hutch is.)"""
    import shutil
    import tempfile
    from hutch.criu import find
    try:
        find(None)
    except hutch.HutchError as e:
        pytest.skip(f"no CRIU: {e}")
    image = tempfile.mkdtemp(prefix="hutch-views-ck-")
    os.chmod(image, 0o755)
    root = os.path.join(image, "state")
    try:
        rootfs = os.path.join(image, "rootfs")
        shutil.copytree(busybox_rootfs, rootfs, symlinks=True)
        with hutch.Sandbox(root=root, rootfs=rootfs, memory="64m") as sb:
            sb.run(["sh", "-c", "(while :; do sleep 0.1; done) >/dev/null 2>&1 &"])
            snap = sb.checkpoint(os.path.join(image, "snap"))
            with hutch.Sandbox.restore(snap, name="views-copy", root=root) as copy:
                r = copy.run(["sh", "-c", "grep MemTotal /proc/meminfo; "
                              "free | sed -n 2p"])
                assert r.stdout.splitlines()[0] == b"MemTotal:          65536 kB"
                assert r.stdout.splitlines()[1].split()[1] == b"65536"   # sysinfo
                keepers = {open(os.path.join(root, n, "keeper", "pid")).read()
                           for n in (sb.name, copy.name)}
                assert len(keepers) == 2            # one keeper each
            assert sb.run(["grep", "MemTotal", "/proc/meminfo"]).stdout.split()[1] \
                == b"65536"
        assert [n for n in os.listdir(root) if not n.startswith(".")] == []
    finally:
        shutil.rmtree(image)


def test_detached_sandbox_checkpoint_and_restore(busybox_rootfs):
    """A detached sandbox goes through checkpoint and restore with its keeper:
    the restored one has a new keeper, which takes its output into the log
    (from where the old one left it) and records its exit code."""
    import shutil
    import tempfile
    from hutch.criu import find
    try:
        find(None)
    except hutch.HutchError as e:
        pytest.skip(f"no CRIU: {e}")
    image = tempfile.mkdtemp(prefix="hutch-dck-")
    os.chmod(image, 0o755)
    root = os.path.join(image, "state")
    rootfs = os.path.join(image, "rootfs")
    shutil.copytree(busybox_rootfs, rootfs, symlinks=True)

    def rt(*args, check=True):
        p = subprocess.run([HUTCH, "--root", root] + list(args), capture_output=True,
                           text=True, timeout=60, stdin=subprocess.DEVNULL)
        assert not check or p.returncode == 0, (args, p.stderr)
        return p
    try:
        rt("sandbox", "-d", "--name", "dck", "--rootfs", rootfs, "--memory", "64m",
           "--", "sh", "-c", "i=0; while [ $i -lt 30 ]; do i=$((i+1)); echo tick $i; "
           "sleep 0.1; done; exit 5")
        time.sleep(0.5)
        img = os.path.join(image, "img")
        rt("checkpoint", "--image-path", img, "dck")
        assert os.path.exists(os.path.join(img, "hutch-sandbox.json"))
        rt("restore", "--image-path", img, "dck")
        assert rt("exec", "dck", "grep", "MemTotal", "/proc/meminfo").stdout.split()[1] \
            == "65536"
        assert rt("wait", "dck", check=False).returncode == 5
        ticks = [int(x.split()[1]) for x in rt("logs", "dck").stdout.splitlines()]
        assert ticks[-1] == 30 and ticks == sorted(ticks) and len(ticks) >= 25
        rt("delete", "dck")
        # with -t: CRIU makes the terminal's master anew, for the new keeper
        rt("sandbox", "-d", "-t", "--name", "dtt", "--rootfs", rootfs, "--", "sh",
           "-c", "i=0; while :; do i=$((i+1)); echo tock $i; sleep 0.1; done")
        time.sleep(0.4)
        img2 = os.path.join(image, "img2")
        rt("checkpoint", "--image-path", img2, "dtt")
        before = len(rt("logs", "dtt", check=False).stdout.splitlines())
        rt("restore", "--image-path", img2, "dtt")
        time.sleep(0.8)
        lines = rt("logs", "dtt").stdout.split("\n")
        tocks = [int(x.split()[1]) for x in lines if x.startswith("tock")]
        assert len(tocks) > max(before, 3) + 3 and tocks == sorted(tocks), tocks
        rt("delete", "-f", "dtt")
    finally:
        subprocess.run([HUTCH, "--root", root, "delete", "-f", "dck"],
                       capture_output=True)
        shutil.rmtree(image)


def test_oci_checkpoint_restore_keeps_the_views(root, busybox_rootfs):
    import shutil
    import tempfile
    from hutch.criu import find
    try:
        find(None)
    except hutch.HutchError as e:
        pytest.skip(f"no CRIU: {e}")
    image = tempfile.mkdtemp(prefix="hutch-views-oci-")
    try:
        b = os.path.join(image, "bundle")
        shutil.copytree(busybox_rootfs, os.path.join(b, "rootfs"), symlinks=True)
        cfg = base_config(["sh", "-c", "while :; do sleep 0.1; done"])
        cfg["annotations"] = {"org.hutch.proc": "virtual"}
        cfg["linux"]["resources"] = {"memory": {"limit": 96 << 20}}
        with open(os.path.join(b, "config.json"), "w") as f:
            json.dump(cfg, f)

        def rt(*args, check=True):
            # files, not pipes: a detached container keeps its stdio open
            with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
                p = subprocess.run([HUTCH, "--root", root] + list(args), stdout=out,
                                   stderr=err, timeout=60, stdin=subprocess.DEVNULL)
                out.seek(0)
                err.seek(0)
                p.stdout, p.stderr = out.read().decode(), err.read().decode()
            assert not check or p.returncode == 0, (args, p.stderr)
            return p
        # stdio /dev/null: CRIU cannot dump a host file the container holds
        subprocess.run([HUTCH, "--root", root, "run", "-d", "-b", b, "ck"],
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, check=True, timeout=60)
        img = os.path.join(image, "img")
        rt("checkpoint", "--image-path", img, "ck")
        assert keeper_mounts() == []            # gone with the container
        subprocess.run([HUTCH, "--root", root, "restore", "-d", "--image-path", img,
                        "-b", b, "ck"], stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=True,
                       timeout=60)
        assert rt("exec", "ck", "grep", "MemTotal", "/proc/meminfo").stdout.split()[1] \
            == "98304"
        assert rt("exec", "ck", "free").stdout.splitlines()[1].split()[1] == "98304"
        rt("delete", "-f", "ck")
    finally:
        shutil.rmtree(image)
