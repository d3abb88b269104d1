"""Copying files into and out of a running container (hutch.sandbox.files).

The "container root" is a tmp directory opened O_PATH; the unit tier's fake
kernel serves openat2 from it without RESOLVE_IN_ROOT, except in the one test
that installs the real kernel to prove that scoping."""

import errno
import os
import signal
import stat

import pytest

from hutch.sandbox import files as F
from hutch.errors import HutchError
from hutch.linux import kernel as K
from hutch.rootfs.paths import IN_ROOT

MTIME = 1_600_000_000_123_456_789


@pytest.fixture
def root(tmp_path):
    r = tmp_path / "root"
    (r / "tmp").mkdir(parents=True)
    return r


@pytest.fixture
def rootfd(root):
    fd = os.open(root, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    yield fd
    os.close(fd)


@pytest.fixture
def no_hang():
    """A test that would block on a FIFO fails instead of hanging."""
    def ring(*_):
        raise TimeoutError("blocked")
    old = signal.signal(signal.SIGALRM, ring)
    signal.alarm(5)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def raised(fn, *args, **kw):
    with pytest.raises(HutchError) as e:
        fn(*args, **kw)
    return e.value


def tree(top):
    """{relative path: (kind, mode, mtime_ns, uid, content or link target)}."""
    out = {}
    for d, dirs, files in os.walk(top):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            kind = "l" if stat.S_ISLNK(st.st_mode) else "d" if stat.S_ISDIR(st.st_mode) \
                else "f"
            body = os.readlink(p) if kind == "l" else \
                open(p, "rb").read() if kind == "f" else None
            mode = None if kind == "l" else stat.S_IMODE(st.st_mode)
            out[os.path.relpath(p, top)] = (kind, mode, st.st_mtime_ns, st.st_uid, body)
    return out


def make_source(src):
    """A tree with nested and empty dirs, odd modes, setuid, and symlinks."""
    (src / "a" / "b").mkdir(parents=True)
    (src / "empty").mkdir()
    (src / "a" / "b" / "deep.txt").write_bytes(b"deep")
    (src / "run.sh").write_bytes(b"#!/bin/sh\n")
    (src / "suid").write_bytes(b"s")
    (src / "abs").symlink_to("/etc/passwd")
    (src / "a" / "rel").symlink_to("b/deep.txt")
    (src / "dangling").symlink_to("nowhere")
    os.chmod(src / "run.sh", 0o750)
    os.chmod(src / "suid", 0o4755)
    os.chmod(src / "a" / "b", 0o2711)
    os.chmod(src / "empty", 0o1777)
    for d, dirs, files in os.walk(src, topdown=False):
        for n in dirs + files + ["."]:
            os.utime(os.path.join(d, n), ns=(MTIME, MTIME), follow_symlinks=False)
    return src


def test_write_and_read_round_trip_with_exact_mode_and_owner(root, rootfd):
    old = os.umask(0o077)
    try:
        F.write_file(rootfd, "/tmp/x", b"hello", mode=0o755, uid=12345, gid=23456)
    finally:
        os.umask(old)
    st = os.stat(root / "tmp" / "x")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o755, 12345, 23456)
    assert F.read_file(rootfd, "/tmp/x") == b"hello"
    F.write_file(rootfd, "tmp/x", b"hi", mode=0o600)        # truncates, same inode
    assert (root / "tmp" / "x").read_bytes() == b"hi"
    assert os.stat(root / "tmp" / "x").st_ino == st.st_ino
    assert stat.S_IMODE(os.stat(root / "tmp" / "x").st_mode) == 0o600
    assert F.read_file(rootfd, "/tmp/../tmp/x") == b"hi"


def test_every_lookup_is_scoped_to_the_root(rootfd, tmp_path, fake_kernel):
    (tmp_path / "h").mkdir()
    (tmp_path / "h" / "f").write_bytes(b"1")
    F.write_file(rootfd, "/tmp/x", b"")
    F.read_file(rootfd, "/tmp/x")
    F.put(rootfd, tmp_path / "h", "/tmp")
    F.get(rootfd, "/tmp/h", tmp_path / "back")
    calls = fake_kernel.of("openat2")
    assert len(calls) == 4 and all(resolve == IN_ROOT for _, resolve in calls)


def test_write_needs_the_parent(rootfd):
    e = raised(F.write_file, rootfd, "/nope/x", b"")
    assert e.errno == errno.ENOENT
    assert str(e) == "write /nope/x in the sandbox: No such file or directory (errno 2)"


def test_a_final_symlink_is_refused_not_followed(root, rootfd):
    (root / "tmp" / "target").write_bytes(b"keep")
    (root / "tmp" / "link").symlink_to("target")
    assert raised(F.write_file, rootfd, "/tmp/link", b"x").errno == errno.ELOOP
    assert raised(F.read_file, rootfd, "/tmp/link").errno == errno.ELOOP
    assert (root / "tmp" / "target").read_bytes() == b"keep"


def test_directories_and_fifos_are_refused_without_blocking(root, rootfd, no_hang):
    os.mkfifo(root / "tmp" / "fifo")
    assert raised(F.read_file, rootfd, "/tmp/fifo").errno == errno.EINVAL
    assert raised(F.write_file, rootfd, "/tmp/fifo", b"x").errno == errno.EINVAL
    assert raised(F.read_file, rootfd, "/tmp").errno == errno.EISDIR
    assert raised(F.write_file, rootfd, "/tmp", b"x").errno == errno.EISDIR
    assert raised(F.write_file, rootfd, "/", b"x").errno == errno.EISDIR
    assert raised(F.read_file, rootfd, "/none").errno == errno.ENOENT


def test_a_large_file_round_trips(root, rootfd, tmp_path):
    data = os.urandom(3 * 1024 * 1024 + 17)
    F.write_file(rootfd, "/tmp/big", data)
    assert F.read_file(rootfd, "/tmp/big") == data
    (tmp_path / "big").write_bytes(data)
    F.put(rootfd, tmp_path / "big", "/tmp/big2")
    assert (root / "tmp" / "big2").read_bytes() == data
    F.get(rootfd, "/tmp/big2", tmp_path / "back")
    assert (tmp_path / "back").read_bytes() == data


def test_put_a_tree_like_cp_a_owned_by_the_given_ids(root, rootfd, tmp_path):
    src = make_source(tmp_path / "src")
    F.put(rootfd, src, "/tmp/dst", uid=12345, gid=54321)
    want, got = tree(src), tree(root / "tmp" / "dst")
    assert set(got) == set(want) == {
        "a", "a/b", "a/b/deep.txt", "a/rel", "empty", "run.sh", "suid", "abs",
        "dangling"}
    for p, (kind, mode, mtime, _, body) in want.items():
        if mode is not None:
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        assert got[p] == (kind, mode, mtime, 12345, body), p
    assert os.lstat(root / "tmp" / "dst" / "abs").st_gid == 54321
    assert os.stat(root / "tmp" / "dst").st_mtime_ns == MTIME
    assert stat.S_IMODE(os.stat(root / "tmp" / "dst" / "suid").st_mode) == 0o755
    assert stat.S_IMODE(os.stat(root / "tmp" / "dst" / "a" / "b").st_mode) == 0o711


def test_put_into_an_existing_directory_goes_inside_and_overwrites(root, rootfd,
                                                                  tmp_path):
    src = make_source(tmp_path / "src")
    F.put(rootfd, src, "/tmp")
    F.put(rootfd, src / "run.sh", "/tmp/src/a")
    (src / "run.sh").write_bytes(b"new")
    F.put(rootfd, src, "/tmp/")                 # again: merges, overwrites files
    assert (root / "tmp" / "src" / "run.sh").read_bytes() == b"new"
    assert (root / "tmp" / "src" / "a" / "run.sh").read_bytes() == b"#!/bin/sh\n"
    assert os.readlink(root / "tmp" / "src" / "abs") == "/etc/passwd"
    F.put(rootfd, src / "run.sh", "/")
    assert (root / "run.sh").read_bytes() == b"new"
    F.put(rootfd, src / "run.sh", "/tmp/renamed")
    assert (root / "tmp" / "renamed").read_bytes() == b"new"


def test_put_refuses_a_destination_of_another_type(root, rootfd, tmp_path):
    src = make_source(tmp_path / "src")
    (root / "tmp" / "src").mkdir()
    (root / "tmp" / "src" / "run.sh").mkdir()
    e = raised(F.put, rootfd, src, "/tmp")
    assert e.errno == errno.EEXIST
    assert str(e).startswith("put /tmp/src/run.sh in the sandbox: File exists")
    before = tree(root / "tmp" / "src")               # what cp made before failing
    (root / "tmp" / "e").mkdir()                      # a link is no directory
    (root / "tmp" / "e" / "src").symlink_to("../src")
    assert raised(F.put, rootfd, src, "/tmp/e").errno == errno.EEXIST
    assert raised(F.put, rootfd, src, "/tmp/e/src").errno == errno.EEXIST
    assert tree(root / "tmp" / "src") == before
    assert raised(F.put, rootfd, src, "/none/x").errno == errno.ENOENT
    assert raised(F.put, rootfd, tmp_path / "none", "/tmp/x").errno == errno.ENOENT


def test_put_refuses_special_files_naming_them(root, rootfd, tmp_path, no_hang):
    src = make_source(tmp_path / "src")
    os.mkfifo(src / "a" / "fifo")
    e = raised(F.put, rootfd, src, "/tmp/dst")
    assert e.errno == errno.EINVAL
    assert f"put {src}/a/fifo on the host: not a regular file" in str(e)


def test_get_a_tree_like_cp_a_owned_by_the_caller(root, rootfd, tmp_path):
    src = make_source(root / "tmp" / "src")
    os.chown(src / "run.sh", 12345, 12345)
    F.get(rootfd, "/tmp/src", tmp_path / "back")
    want, got = tree(src), tree(tmp_path / "back")
    assert set(got) == set(want) and len(got) == 9
    for p, (kind, mode, mtime, _, body) in want.items():
        if mode is not None:
            mode &= ~(stat.S_ISUID | stat.S_ISGID)
        assert got[p] == (kind, mode, mtime, os.getuid(), body), p
    assert os.stat(tmp_path / "back").st_mtime_ns == MTIME
    (tmp_path / "into").mkdir()
    F.get(rootfd, "/tmp/src/a", tmp_path / "into")     # into the existing dir
    assert set(tree(tmp_path / "into")) == {"a", "a/b", "a/b/deep.txt", "a/rel"}
    F.get(rootfd, "/tmp/src/abs", tmp_path / "link")   # a link stays a link
    assert os.readlink(tmp_path / "link") == "/etc/passwd"
    F.get(rootfd, "/", tmp_path / "whole")
    assert (tmp_path / "whole" / "tmp" / "src" / "run.sh").read_bytes() == b"#!/bin/sh\n"
    assert raised(F.get, rootfd, "/", tmp_path / "whole").errno == errno.EINVAL


def test_get_refuses_special_files_naming_them(root, rootfd, tmp_path, no_hang):
    make_source(root / "tmp" / "src")
    os.mkfifo(root / "tmp" / "src" / "a" / "fifo")
    e = raised(F.get, rootfd, "/tmp/src", tmp_path / "back")
    assert e.errno == errno.EINVAL
    assert str(e).startswith("get /tmp/src/a/fifo in the sandbox: not a regular file")
    assert raised(F.get, rootfd, "/tmp/none", tmp_path / "x").errno == errno.ENOENT


def test_a_tree_too_deep_is_refused(root, rootfd, tmp_path, monkeypatch):
    monkeypatch.setattr(F, "MAX_DEPTH", 3)
    (root / "tmp" / "1" / "2" / "3" / "4").mkdir(parents=True)
    e = raised(F.get, rootfd, "/tmp", tmp_path / "back")
    assert e.errno == errno.ELOOP and "/tmp/1/2/3 in the sandbox" in str(e)


def test_the_real_kernel_keeps_symlinks_and_dotdot_inside_the_root(
        root, rootfd, tmp_path, monkeypatch):
    monkeypatch.setattr(K, "_kernel", K.Kernel())
    outside = tmp_path / "outside"                 # what an escape would reach
    outside.mkdir()
    (outside / "secret").write_bytes(b"host")
    inside = root / str(outside).lstrip("/")       # the same path, in the root
    inside.mkdir(parents=True)
    (inside / "secret").write_bytes(b"ctr")
    (root / "outside").mkdir()
    (root / "tmp" / "evil").symlink_to(outside)               # absolute
    (root / "tmp" / "up").symlink_to("../../../../../../..")  # relative, far up

    F.write_file(rootfd, "/tmp/evil/x", b"1")
    F.write_file(rootfd, "/../../outside/y", b"2")
    F.write_file(rootfd, "/tmp/up/outside/z", b"3")
    F.put(rootfd, tmp_path / "outside" / "secret", "/tmp/evil/put")
    assert sorted(os.listdir(outside)) == ["secret"]
    assert (inside / "x").read_bytes() == b"1" and (inside / "put").read_bytes() == b"host"
    assert sorted(os.listdir(root / "outside")) == ["y", "z"]
    assert F.read_file(rootfd, "/tmp/evil/secret") == b"ctr"
    assert F.read_file(rootfd, f"/tmp/up/{outside}/secret") == b"ctr"
    F.get(rootfd, "/tmp/evil/secret", tmp_path / "got")
    assert (tmp_path / "got").read_bytes() == b"ctr"
