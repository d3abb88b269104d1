"""Resources running out: a full --root, a parent cgroup whose memory or pids
are too few for the container, a hutch command with only 64 file descriptors.
Each is one clear line, a non-zero exit, and nothing left behind."""

import glob
import os
import resource
import shutil
import subprocess
import tempfile
import time
import uuid

import pytest

from conftest import RUNTIME, RUNTIME_NAME, base_config

pytestmark = pytest.mark.skipif(RUNTIME_NAME != "hutch", reason="hutch's own errors")

CG = "/sys/fs/cgroup"


def _hutch(root, *args, preexec=None):
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        p = subprocess.run(RUNTIME + ["--root", root] + [str(a) for a in args],
                           stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                           preexec_fn=preexec, timeout=60)
        out.seek(0)
        err.seek(0)
        p.stdout, p.stderr = out.read().decode(), err.read().decode()
    return p


def _one_line_error(p):
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("hutch: "), p.stderr
    assert "Traceback" not in p.stderr
    return lines[0]


def _nothing_left(root, cid, cg, rootfs):
    assert not os.path.exists(os.path.join(root, cid))
    assert not glob.glob(f"{CG}/*/{cg.strip('/')}"), glob.glob(f"{CG}/*/{cg.strip('/')}")
    end = time.monotonic() + 5
    while _rooted(rootfs) and time.monotonic() < end:
        time.sleep(0.02)
    assert not _rooted(rootfs)


def _rooted(rootfs):
    out = []
    for name in os.listdir("/proc"):
        if name.isdigit():
            try:
                if os.readlink(f"/proc/{name}/root") == rootfs:
                    out.append(name)
            except OSError:
                pass
    return out


def test_full_state_root(bundle, tmp_path):
    b = bundle
    full = str(tmp_path / "full")
    os.makedirs(full)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "hutch-test-full", full],
                   check=True)
    try:
        with open(os.path.join(full, "fill"), "wb") as f:
            try:
                f.write(b"\0" * (1 << 20))
            except OSError:
                pass
        cid = b.new_id()
        cg = f"/hutch-exh-{cid}"
        cfg = base_config(["true"])
        cfg["linux"]["cgroupsPath"] = cg
        b.write(cfg)
        root = os.path.join(full, "state")
        line = _one_line_error(_hutch(root, "create", "--bundle", b.dir, cid))
        assert "No space left on device" in line and "errno 28" in line, line
        _nothing_left(root, cid, cg, b.rootfs)
        assert sorted(os.listdir(full)) == ["fill", "state"]
        assert not os.listdir(root)
    finally:
        subprocess.run(["umount", full], check=True)


@pytest.fixture
def parent_cgroup():
    """A parent cgroup the test owns, in the hierarchy asked for."""
    made = []

    def make(controller, settings):
        name = f"hutch-exh-{uuid.uuid4().hex[:8]}"
        path = f"{CG}/{controller}/{name}"
        os.mkdir(path)
        made.append(name)
        for k, v in settings.items():
            with open(os.path.join(path, k), "w") as f:
                f.write(str(v))
        return name
    yield make
    for name in made:
        for d in glob.glob(f"{CG}/*/{name}"):
            for sub in sorted(glob.glob(f"{d}/*/"), reverse=True):
                os.rmdir(sub)
            os.rmdir(d)


def _create_under(b, parent):
    """create in a cgroup below ``parent``: its one-line error, and the path."""
    cid = b.new_id()
    cg = f"/{parent}/{cid}"
    cfg = base_config(["true"])
    cfg["linux"]["cgroupsPath"] = cg
    b.write(cfg)
    return _one_line_error(_hutch(b.root, "create", "--bundle", b.dir, cid)), cid, cg


def test_parent_memory_too_small(bundle, parent_cgroup):
    b = bundle
    parent = parent_cgroup("memory", {"memory.limit_in_bytes": 64 << 10})
    line, cid, cg = _create_under(b, parent)
    assert "Cannot allocate memory" in line or "OOM killer" in line, line
    _nothing_left(b.root, cid, cg, b.rootfs)
    # hutch removed the parents it made in the other hierarchies; the test's stays
    assert [p.split("/")[-2] for p in glob.glob(f"{CG}/*/{parent}")] == ["memory"]


def test_parent_pids_exhausted(bundle, parent_cgroup):
    b = bundle
    line, cid, cg = _create_under(b, parent_cgroup("pids", {"pids.max": 1}))
    assert "Resource temporarily unavailable" in line and "pids limit" in line, line
    assert "errno 11" in line
    _nothing_left(b.root, cid, cg, b.rootfs)


def _nofile_64():
    resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))


def test_64_file_descriptors(bundle):
    """With 64 fds hutch still works; a config that asks for more than the hard
    limit it was given is refused in one line naming the limit."""
    b = bundle
    cid = b.new_id()
    cg = f"/hutch-exh-{cid}"
    cfg = base_config(["sleep", "100"])
    cfg["linux"]["cgroupsPath"] = cg
    cfg["process"]["rlimits"] = [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}]
    b.write(cfg)
    line = _one_line_error(_hutch(b.root, "create", "--bundle", b.dir, cid,
                                  preexec=_nofile_64))
    assert "RLIMIT_NOFILE" in line and "hard limit is 64" in line, line
    _nothing_left(b.root, cid, cg, b.rootfs)
    del cfg["process"]["rlimits"]
    b.write(cfg)
    for verb in (("create", "--bundle", b.dir, cid), ("start", cid)):
        p = _hutch(b.root, *verb, preexec=_nofile_64)
        assert p.returncode == 0, p.stderr
    p = _hutch(b.root, "exec", cid, "sh", "-c", "ulimit -n", preexec=_nofile_64)
    assert p.returncode == 0 and p.stdout == "64\n", (p.stdout, p.stderr)
    p = _hutch(b.root, "delete", "-f", cid, preexec=_nofile_64)
    assert p.returncode == 0, p.stderr
    _nothing_left(b.root, cid, cg, b.rootfs)


def test_no_temporary_state_file_after_a_failed_write(tmp_path):
    """write_atomic removes its temporary file when the write fails."""
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "src"))
    from hutch.container.record import write_atomic
    full = str(tmp_path / "f")
    os.makedirs(full)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=8k", "hutch-test-full", full],
                   check=True)
    try:
        with pytest.raises(OSError):
            write_atomic(os.path.join(full, "x"), "y" * (1 << 16))
        assert os.listdir(full) == []
    finally:
        subprocess.run(["umount", full], check=True)
    shutil.rmtree(full)
