"""A hutch command SIGKILLed at every step of create, start, delete and exec
(HUTCH_FAILPOINT=VERB:STEP makes it kill itself there, deterministically): the
container is either untouched (exec) or `delete -f` exits 0 and leaves nothing
behind: no state entry, cgroup, mount or process."""

import glob
import os
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import RUNTIME, RUNTIME_NAME, base_config

pytestmark = pytest.mark.skipif(RUNTIME_NAME != "hutch", reason="hutch's failpoints")

STEPS = {
    "create": ("dir", "state", "cgroups", "helper", "resources", "spawn", "pid",
               "rootfs", "ready", "saved", "done"),
    "start": ("locked", "released", "ran", "saved"),
    "delete": ("locked", "killed", "cgroups", "hooks"),
    "exec": ("locked", "helper", "sent", "pid", "started"),
}


def _hutch(b, tag, *args, failpoint=None, timeout=30):
    env = dict(os.environ, HUTCH_TEST_TAG=tag)
    env.pop("HUTCH_FAILPOINT", None)
    if failpoint:
        env["HUTCH_FAILPOINT"] = failpoint
    if "-d" in args:
        # a detached container gets /dev/null (CRIU cannot dump a deleted file
        # as its stdio); errors come back through --log
        with tempfile.NamedTemporaryFile() as log:
            p = subprocess.run(RUNTIME + ["--root", b.root, "--log", log.name] +
                               [str(a) for a in args], stdin=subprocess.DEVNULL,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               env=env, timeout=timeout)
            p.stdout, p.stderr = "", log.read().decode()
        return p
    # files, not pipes: a container left behind would hold a pipe open
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(RUNTIME + ["--root", b.root] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=env,
                           timeout=timeout)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read().decode(), err.read().decode()
    return p


def _tagged(tag):
    """Processes that carry the test's tag in their environment (hutch, its
    helpers and the init before its exec)."""
    out = []
    needle = f"HUTCH_TEST_TAG={tag}".encode()
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    out.append(int(name))
        except OSError:
            pass
    return out


def _rooted_in(*roots):
    """Processes whose root is the bundle's rootfs (the container's), or under
    the state root (a restore's bind of the rootfs)."""
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                root = os.readlink(f"/proc/{name}/root")
                if root == roots[0] or root.startswith(tuple(r + "/" for r in roots)):
                    out.append(int(name))
            except OSError:
                pass
    return out


def _assert_nothing_left(b, cid, cg, tag):
    assert not os.path.exists(os.path.join(b.root, cid)), os.listdir(b.root)
    assert not glob.glob(f"/sys/fs/cgroup/*/{cg}"), glob.glob(f"/sys/fs/cgroup/*/{cg}")
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f]
    assert not [m for m in mounts if m.startswith((b.root, b.dir))], mounts
    # a helper that lost its hutch sees EOF and exits; give it a moment to do so
    end = time.monotonic() + 5
    while (_tagged(tag) or _rooted_in(b.rootfs, b.root)) and time.monotonic() < end:
        time.sleep(0.02)
    assert not _tagged(tag), _tagged(tag)
    assert not _rooted_in(b.rootfs, b.root), _rooted_in(b.rootfs, b.root)


def _setup(b, args=("sleep", "100"), hooks=False):
    cid = b.new_id()
    cg = f"hutch-fp-{cid}"
    cfg = base_config(list(args))
    cfg["linux"]["cgroupsPath"] = "/" + cg
    cfg["linux"]["resources"] = {"pids": {"limit": 64}}
    if hooks:
        cfg["hooks"] = {"poststop": [{"path": "/bin/true"}]}
    b.write(cfg)
    return cid, cg, uuid.uuid4().hex


def _delete_leaves_nothing(b, cid, cg, tag):
    """`delete -f` after the kill exits 0 and leaves nothing behind."""
    d = _hutch(b, tag, "delete", "-f", cid)
    assert d.returncode == 0, d.stderr
    _assert_nothing_left(b, cid, cg, tag)


def _killed(p):
    assert p.returncode == -9, (p.returncode, p.stderr)


@pytest.mark.parametrize("step", STEPS["create"])
def test_killed_create(bundle, step):
    b = bundle
    cid, cg, tag = _setup(b)
    _killed(_hutch(b, tag, "create", "--bundle", b.dir, "--pid-file",
                   os.path.join(b.dir, "pid"), cid, failpoint=f"create:{step}"))
    _delete_leaves_nothing(b, cid, cg, tag)


@pytest.mark.parametrize("step", STEPS["start"])
def test_killed_start(bundle, step):
    b = bundle
    cid, cg, tag = _setup(b)
    assert _hutch(b, tag, "create", "--bundle", b.dir, cid).returncode == 0
    _killed(_hutch(b, tag, "start", cid, failpoint=f"start:{step}"))
    _delete_leaves_nothing(b, cid, cg, tag)


@pytest.mark.parametrize("step", STEPS["delete"])
def test_killed_delete(bundle, step):
    b = bundle
    cid, cg, tag = _setup(b, hooks=True)
    assert _hutch(b, tag, "run", "-d", "--bundle", b.dir, cid).returncode == 0
    _killed(_hutch(b, tag, "delete", "-f", cid, failpoint=f"delete:{step}"))
    _delete_leaves_nothing(b, cid, cg, tag)


@pytest.mark.parametrize("step", STEPS["exec"])
def test_killed_exec(bundle, step):
    b = bundle
    cid, cg, tag = _setup(b)
    assert _hutch(b, tag, "run", "-d", "--bundle", b.dir, cid).returncode == 0
    before = _hutch(b, tag, "state", cid).stdout
    _killed(_hutch(b, tag, "exec", cid, "sh", "-c", "echo killed-exec",
                   failpoint=f"exec:{step}"))
    # the container is untouched: running, same init, and a new exec works
    assert _hutch(b, tag, "state", cid).stdout == before
    assert '"running"' in before
    p = _hutch(b, tag, "exec", cid, "sh", "-c", "echo again; cat /proc/1/cmdline")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("again\nsleep"), p.stdout
    _delete_leaves_nothing(b, cid, cg, tag)


def test_failpoint_unset_costs_no_import():
    """Unset, a failpoint is a comparison: nothing is imported for it."""
    src = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(
        os.path.abspath(__file__)))), "src", "hutch", "errors.py")
    with open(src) as f:
        text = f.read()
    body = text[text.index("def failpoint"):text.index("class HutchError")]
    assert "import" not in body


CKPT_STEPS = ("locked", "frozen", "sent", "dumped", "killed")
RESTORE_STEPS = ("prepared", "sent", "notified", "restored", "saved")
COUNTER = ["sh", "-c", "i=0; while :; do i=$((i+1)); echo $i > /count.t; mv /count.t /count; "
           "sleep 0.05; done"]


def _count(b, tag, cid):
    p = _hutch(b, tag, "exec", cid, "cat", "/count")
    assert p.returncode == 0, p.stderr
    return int(p.stdout)


def _wait_running_on(b, tag, cid, timeout=20):
    """The container runs again (a killed checkpoint's guard thaws it once CRIU
    is done): its counter moves."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        st = _hutch(b, tag, "state", cid).stdout
        if '"running"' in st:
            first = _count(b, tag, cid)
            time.sleep(0.3)
            if _count(b, tag, cid) > first:
                return
        time.sleep(0.1)
    raise AssertionError(f"{cid} does not run on: {st}")


@pytest.mark.parametrize("step", CKPT_STEPS)
def test_killed_checkpoint_leaves_it_running(bundle, tmp_path, step):
    b = bundle
    cid, cg, tag = _setup(b, COUNTER)
    assert _hutch(b, tag, "run", "-d", "--bundle", b.dir, cid).returncode == 0
    _killed(_hutch(b, tag, "checkpoint", "--image-path", tmp_path / "ck", cid,
                   failpoint=f"checkpoint:{step}", timeout=60))
    if step == "killed":
        # past the point of no return: the images are complete and the processes
        # killed, so the checkpoint has taken effect; delete -f finishes it and
        # the images restore
        assert '"stopped"' in _hutch(b, tag, "state", cid).stdout
        assert _hutch(b, tag, "delete", "-f", cid).returncode == 0
        _assert_nothing_left(b, cid, cg, tag)
        p = _hutch(b, tag, "restore", "-d", "--bundle", b.dir, "--image-path",
                   tmp_path / "ck", cid, timeout=60)
        assert p.returncode == 0, p.stderr
    _wait_running_on(b, tag, cid)
    # and it can be checkpointed again, for real this time
    p = _hutch(b, tag, "checkpoint", "--image-path", tmp_path / "ck2", cid, timeout=60)
    assert p.returncode == 0, p.stderr
    assert not os.path.exists(os.path.join(b.root, cid))
    _assert_nothing_left(b, cid, cg, tag)


@pytest.mark.parametrize("step", RESTORE_STEPS)
def test_killed_restore_is_cleaned_by_delete(bundle, tmp_path, step):
    b = bundle
    cid, cg, tag = _setup(b, COUNTER)
    assert _hutch(b, tag, "run", "-d", "--bundle", b.dir, cid).returncode == 0
    p = _hutch(b, tag, "checkpoint", "--image-path", tmp_path / "ck", cid, timeout=60)
    assert p.returncode == 0, p.stderr
    _killed(_hutch(b, tag, "restore", "-d", "--bundle", b.dir, "--image-path",
                   tmp_path / "ck", cid, failpoint=f"restore:{step}", timeout=60))
    _delete_leaves_nothing(b, cid, cg, tag)
    # the images are intact: a restore now works
    p = _hutch(b, tag, "restore", "-d", "--bundle", b.dir, "--image-path",
               tmp_path / "ck", cid, timeout=60)
    assert p.returncode == 0, p.stderr
    first = _count(b, tag, cid)
    time.sleep(0.3)
    assert _count(b, tag, cid) > first
    assert _hutch(b, tag, "delete", "-f", cid).returncode == 0
    _assert_nothing_left(b, cid, cg, tag)
