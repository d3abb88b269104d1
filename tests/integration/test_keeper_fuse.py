"""The keeper's FUSE server (hutch.keeper.fuse) on the real kernel: mounted on a
directory and served from a thread that polls its fd, as the keeper's loop will."""

import errno
import os
import select
import stat
import statistics
import subprocess
import tempfile
import threading
import time

import pytest

from conftest import IS_ROOT

pytestmark = pytest.mark.skipif(not IS_ROOT or not os.path.exists("/dev/fuse"),
                                reason="mounting FUSE needs root and /dev/fuse")

from hutch.keeper.fuse import FuseServer, Unmounted  # noqa: E402

BIG = os.urandom(300 * 1024)
TEXT = b"".join(b"line %04d\n" % i for i in range(100))


def mounted_paths():
    with open("/proc/self/mountinfo") as f:
        return {line.split()[4] for line in f}


class Served:
    """A FuseServer mounted on a fresh directory and served by a thread."""

    def __init__(self, files, **kw):
        # not under pytest's tmp_path (0700): other users must reach the mount
        self.dir = tempfile.mkdtemp(prefix="hutch-fuse-")
        self.srv = FuseServer(files, **kw)
        self.srv.mount(self.dir)
        self.stop = threading.Event()
        self.handled, self.unmounted, self.error = 0, False, None
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self):
        try:
            while not self.stop.is_set():
                ready, _, _ = select.select([self.srv], [], [], 0.1)
                while ready and self.srv.serve_one():
                    self.handled += 1
        except Unmounted:
            self.unmounted = True
        except BaseException as e:  # noqa: BLE001 - reported by close()
            self.error = e

    def path(self, name):
        return os.path.join(self.dir, name)

    def halt(self):
        self.stop.set()
        self.thread.join(5)
        assert not self.thread.is_alive()

    def close(self):
        self.halt()
        self.srv.unmount()
        self.srv.unmount()                  # twice is fine
        assert self.srv.fileno() == -1
        assert self.dir not in mounted_paths()
        os.rmdir(self.dir)
        assert self.error is None, self.error


@pytest.fixture
def serve():
    made = []

    def make(files, **kw):
        made.append(Served(files, **kw))
        return made[-1]

    yield make
    for s in made:
        s.close()


@pytest.fixture
def fs(serve):
    count = [0]

    def counter():
        count[0] += 1
        return b"%d\n" % count[0]

    def broken():
        raise RuntimeError("generator failed")

    s = serve({"counter": counter, "text": lambda: TEXT, "big": lambda: BIG,
               "broken": broken, "empty": lambda: b"", "str": lambda: "not bytes"},
              uid=1234, gid=4321, mode=0o440)
    s.count = count
    return s


def read(path):
    with open(path, "rb") as f:
        return f.read()


def test_listdir_and_mount(fs):
    assert sorted(os.listdir(fs.dir)) == ["big", "broken", "counter", "empty", "str",
                                          "text"]
    assert fs.dir in mounted_paths()
    with open("/proc/self/mountinfo") as f:
        line = next(ln for ln in f if ln.split()[4] == fs.dir)
    assert " fuse hutch-keeper " in line
    opts = line.split()[5].split(",")
    assert {"ro", "nosuid", "nodev", "noexec"} <= set(opts)
    st = os.statvfs(fs.dir)
    assert st.f_bsize == 4096 and st.f_namemax == 255


def test_read_regenerates_on_each_open(fs):
    assert read(fs.path("counter")) == b"1\n"
    assert read(fs.path("counter")) == b"2\n"
    assert read(fs.path("text")) == TEXT
    assert read(fs.path("empty")) == b""
    # stat and listing do not run the generator
    os.stat(fs.path("counter"))
    os.listdir(fs.dir)
    assert fs.count[0] == 2


def test_one_open_sees_one_snapshot(fs):
    with open(fs.path("counter"), "rb") as a, open(fs.path("counter"), "rb") as b:
        assert b.read() == b"2\n"
        assert a.read() == b"1\n"
        a.seek(0)
        assert a.read() == b"1\n"


def test_pread_at_offsets(fs):
    fd = os.open(fs.path("text"), os.O_RDONLY)
    try:
        assert os.pread(fd, 10, 505) == TEXT[505:515]
        assert os.pread(fd, 100, len(TEXT) - 3) == TEXT[-3:]
        assert os.pread(fd, 10, len(TEXT) + 100) == b""
        assert os.pread(fd, 4, 0) == TEXT[:4]
        os.lseek(fd, 990, os.SEEK_SET)
        assert os.read(fd, 100) == TEXT[990:]
    finally:
        os.close(fd)


def test_big_file_reads_fully(fs):
    assert read(fs.path("big")) == BIG
    chunks = []
    with open(fs.path("big"), "rb", buffering=0) as f:
        while c := f.read(7000):
            chunks.append(c)
    assert b"".join(chunks) == BIG


def test_stat(fs):
    st = os.stat(fs.path("text"))
    assert stat.S_ISREG(st.st_mode) and stat.S_IMODE(st.st_mode) == 0o440
    assert (st.st_uid, st.st_gid, st.st_nlink, st.st_size) == (1234, 4321, 1, 1 << 20)
    assert abs(st.st_mtime - time.time()) < 5
    root = os.stat(fs.dir)
    assert stat.S_ISDIR(root.st_mode) and stat.S_IMODE(root.st_mode) == 0o555
    assert root.st_ino == 1 and root.st_nlink == 2


def test_unknown_name(fs):
    with pytest.raises(FileNotFoundError):
        open(fs.path("nope"), "rb")
    with pytest.raises(FileNotFoundError):
        os.stat(fs.path("nope"))
    with pytest.raises(NotADirectoryError):
        os.stat(fs.path("text/x"))


def test_no_writes(fs):
    for flags in (os.O_WRONLY, os.O_RDWR, os.O_WRONLY | os.O_TRUNC):
        with pytest.raises(OSError) as e:
            os.open(fs.path("text"), flags)
        assert e.value.errno in (errno.EROFS, errno.EACCES)
    with pytest.raises(OSError):
        os.open(fs.path("new"), os.O_WRONLY | os.O_CREAT, 0o644)
    with pytest.raises(OSError):
        os.mkdir(fs.path("d"))
    assert read(fs.path("text")) == TEXT


def test_failing_generator_is_eio_and_serving_goes_on(fs):
    for name in ("broken", "str"):
        with pytest.raises(OSError) as e:
            open(fs.path(name), "rb")
        assert e.value.errno == errno.EIO
    assert read(fs.path("text")) == TEXT
    assert fs.thread.is_alive() and fs.error is None


def test_xattrs(fs):
    assert os.listxattr(fs.path("text")) == []
    with pytest.raises(OSError) as e:
        os.getxattr(fs.path("text"), "user.x")
    assert e.value.errno == errno.ENODATA


def test_other_users(fs):
    """allow_other lets them in, default_permissions checks the mode (0440, 1234:4321)."""
    ok = subprocess.run(["cat", fs.path("text")], user=1234, capture_output=True)
    assert ok.returncode == 0 and ok.stdout == TEXT
    ok = subprocess.run(["cat", fs.path("text")], user=4000, group=4321,
                        extra_groups=[], capture_output=True)
    assert ok.returncode == 0 and ok.stdout == TEXT
    no = subprocess.run(["cat", fs.path("text")], user=65534, group=65534,
                        extra_groups=[], capture_output=True)
    assert no.returncode != 0 and b"Permission denied" in no.stderr


def test_concurrent_readers(fs):
    errors = []

    def reader(i):
        try:
            for _ in range(20):
                name, want = [("big", BIG), ("text", TEXT)][i % 2]
                assert read(fs.path(name)) == want
                fd = os.open(fs.path(name), os.O_RDONLY)
                try:
                    assert os.pread(fd, 100, 1000 + i) == want[1000 + i:1100 + i]
                finally:
                    os.close(fd)
        except BaseException as e:  # noqa: BLE001 - checked below
            errors.append(e)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []


def test_directory_listing_pages(serve):
    names = ["file-%03d-%s" % (i, "x" * (i % 50)) for i in range(400)]
    s = serve({n: (lambda n=n: n.encode()) for n in names})
    assert sorted(os.listdir(s.dir)) == sorted(names)
    with os.scandir(s.dir) as it:
        kinds = {e.name: e.is_file() for e in it}
    assert len(kinds) == 400 and all(kinds.values())
    assert read(s.path(names[-1])) == names[-1].encode()


def test_bad_names():
    for bad in ("", ".", "..", "a/b", "a\0b", "x" * 256):
        with pytest.raises(ValueError):
            FuseServer({bad: lambda: b""})


def _in_thread(fn, timeout=5):
    """Runs fn in a thread: (finished, result or exception)."""
    out = []
    t = threading.Thread(target=lambda: out.append(_catch(fn)), daemon=True)
    t.start()
    t.join(timeout)
    return (not t.is_alive()), (out[0] if out else None)


def _catch(fn):
    try:
        return fn()
    except BaseException as e:  # noqa: BLE001 - returned to the test
        return e


def test_open_file_after_unmount_fails_fast(fs):
    fd = os.open(fs.path("text"), os.O_RDONLY)
    assert os.pread(fd, 4, 0) == TEXT[:4]
    fs.halt()                           # nobody serves now
    pending = []
    t = threading.Thread(target=lambda: pending.append(_catch(
        lambda: os.pread(fd, 4, 10))), daemon=True)
    t.start()                           # this read waits on the server
    time.sleep(0.2)
    assert t.is_alive()
    start = time.monotonic()
    fs.srv.unmount()
    t.join(5)
    assert not t.is_alive(), "a pending read hung after unmount"
    # the request in flight is aborted, later ones find no connection
    assert isinstance(pending[0], OSError)
    assert pending[0].errno in (errno.ECONNABORTED, errno.ENOTCONN)
    done, res = _in_thread(lambda: os.pread(fd, 4, 0))
    assert done, "a read hung after unmount"
    assert isinstance(res, OSError) and res.errno == errno.ENOTCONN
    assert time.monotonic() - start < 2
    os.close(fd)        # no flush is asked for at close (FOPEN_NOFLUSH): it succeeds
    assert fs.dir not in mounted_paths()
    with pytest.raises(Unmounted):
        fs.srv.serve_one()


def test_unmounted_by_someone_else(serve):
    s = serve({"a": lambda: b"a"})
    assert read(s.path("a")) == b"a"
    subprocess.run(["umount", s.dir], check=True)
    s.thread.join(5)
    assert s.unmounted and not s.thread.is_alive()


def test_nothing_pending(serve):
    s = serve({"a": lambda: b"a"})
    assert read(s.path("a")) == b"a"
    s.halt()
    time.sleep(0.1)                     # the release of "a" is answered
    while s.srv.serve_one():
        pass
    assert s.srv.serve_one() is False
    s.srv._reply(0xdead_beef_0000, [])  # no such request (as if interrupted): ENOENT, ignored


def test_latency_open_read_close(fs):
    path = fs.path("text")
    read(path)
    times = []
    for _ in range(2000):
        t0 = time.perf_counter_ns()
        with open(path, "rb") as f:
            f.read()
        times.append(time.perf_counter_ns() - t0)
    p50 = statistics.median(times) / 1000
    p99 = sorted(times)[int(len(times) * 0.99)] / 1000
    print(f"\nFUSE open+read+close of a {len(TEXT)} B file: p50 {p50:.1f} us, "
          f"p99 {p99:.1f} us (2000 iterations, server in a thread)")
    assert p50 < 50_000


def test_tools(fs, tmp_path):
    """cat reads, cp copies, busybox's cat (sendfile) and shutil.copyfile
    (sendfile) too: the nominal size lets splice read to the real end."""
    import shutil
    cat = subprocess.run(["cat", fs.path("big")], capture_output=True, check=True)
    assert cat.stdout == BIG
    bb = subprocess.run(["busybox", "cat", fs.path("big")], capture_output=True,
                        check=True)
    assert bb.stdout == BIG
    shutil.copyfile(fs.path("text"), tmp_path / "copy")
    assert (tmp_path / "copy").read_bytes() == open(fs.path("text"), "rb").read()
    subprocess.run(["cp", fs.path("big"), tmp_path / "big"], check=True)
    assert (tmp_path / "big").read_bytes() == BIG
    tail = subprocess.run(["tail", "-n", "2", fs.path("text")], capture_output=True,
                          check=True)
    assert tail.stdout == b"line 0098\nline 0099\n"
