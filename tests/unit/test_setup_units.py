"""Container setup that needed root, against the strict fake kernel: device
nodes and their fallbacks, mount fallbacks, entering the root, the console, the
namespaces given by path, the loopback interface."""

import ast
import errno
import os
import socket
import stat
import struct

import pytest

from hutch.errors import HutchError
from hutch.linux import exeguard
from hutch.linux import kernel as K
from hutch.namespaces import open_join_fds
from hutch.namespaces import loopback_up
from hutch.process import finalize
from hutch.rootfs.setup import DEFAULT_DEVICES, Rootfs

BIND = K.OPEN_TREE_CLONE | K.OPEN_TREE_CLOEXEC
ATTACH = K.MOVE_MOUNT_F_EMPTY_PATH | K.MOVE_MOUNT_T_EMPTY_PATH


@pytest.fixture
def rootfs(fake_kernel, tmp_path):
    """make(**plan) -> a Rootfs on tmp_path/root, on the fake kernel."""
    made = []

    def make(**extra):
        root = tmp_path / "root"
        root.mkdir(exist_ok=True)
        plan = {"root": str(root), "rootfs_propagation": "", "userns": False,
                "mounts": [], "devices": [], "masked_paths": [], "readonly_paths": [],
                "bundle": str(tmp_path), "cgroup_paths": {}, "new_cgroupns": False,
                "root_readonly": False, "console_socket": -1}
        plan.update(extra)
        rf = Rootfs(fake_kernel, plan)
        rf.rootfd = os.open(root, os.O_PATH | os.O_DIRECTORY)
        rf.devnull = os.open("/dev/null", os.O_PATH)
        made.append(rf)
        return rf
    yield make
    for rf in made:
        rf.close()


def _root(tmp_path):
    return os.path.realpath(tmp_path / "root")


def _no_lookups(k):
    return [c for c in k.calls if c[0] != "openat2"]


# --- /dev ------------------------------------------------------------------------

def test_default_devices_are_made_with_mknod(fake_kernel, rootfs, tmp_path):
    rootfs().make_devices()
    root = _root(tmp_path)
    assert _no_lookups(fake_kernel) == [
        ("mknod", root + path, stat.S_IFCHR | mode, os.makedev(major, minor))
        for path, _, major, minor, mode in DEFAULT_DEVICES]
    assert stat.S_IMODE(os.stat(root + "/dev/null").st_mode) == 0o666
    assert os.readlink(root + "/dev/fd") == "/proc/self/fd"


def test_a_refused_mknod_binds_the_host_node(fake_kernel, rootfs, tmp_path):
    # the device cgroup refuses this node: the host's is bound instead
    fake_kernel.fail("mknod", errno.EPERM, when=lambda p, mode, dev: p.endswith("/tty"))
    rootfs().make_devices()
    root = _root(tmp_path)
    tty = ("mknod", root + "/dev/tty", stat.S_IFCHR | 0o666, os.makedev(5, 0))
    calls = _no_lookups(fake_kernel)
    i = calls.index(tty)
    assert calls[i:] == [tty, ("open_tree", "/dev/tty", BIND),
                         ("move_mount", "/dev/tty", root + "/dev/tty", ATTACH)]
    assert stat.S_ISREG(os.stat(root + "/dev/tty").st_mode)     # the mount point


def test_a_refused_fifo_is_an_error_not_a_bind(fake_kernel, rootfs):
    fake_kernel.fail("mknod", errno.EPERM, when=lambda p, mode, dev: stat.S_ISFIFO(mode))
    rf = rootfs(devices=[("/dev/pipe", "p", 0, 0, 0o600, None, None)])
    with pytest.raises(HutchError) as e:
        rf.make_devices()
    assert e.value.errno == errno.EPERM
    assert str(e.value) == "create device /dev/pipe: Operation not permitted (errno 1)"
    assert "open_tree" not in fake_kernel.names()


def test_in_a_user_namespace_every_node_is_bound(fake_kernel, rootfs, tmp_path):
    rootfs(userns=True,
           devices=[("/dev/pipe", "p", 0, 0, 0o600, None, None)]).make_devices()
    root = _root(tmp_path)
    assert fake_kernel.of("mknod") == [(root + "/dev/pipe", stat.S_IFIFO | 0o600, 0)]
    assert [c[0] for c in fake_kernel.of("open_tree")] == \
        [path for path, *_ in DEFAULT_DEVICES]
    assert stat.S_ISFIFO(os.stat(root + "/dev/pipe").st_mode)


def test_a_device_gets_its_owner_and_mode(fake_kernel, rootfs, tmp_path):
    uid, gid = os.getuid(), os.getgid()
    rootfs(devices=[("/dev/fuse", "c", 10, 229, 0o620, uid, gid)]).make_devices()
    st = os.stat(_root(tmp_path) + "/dev/fuse")
    assert (stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid) == (0o620, uid, gid)


def test_a_directory_in_a_device_s_place_is_refused(fake_kernel, rootfs, tmp_path):
    rf = rootfs()
    os.makedirs(tmp_path / "root" / "dev" / "null")
    with pytest.raises(HutchError) as e:
        rf.make_devices()
    assert e.value.errno == errno.EEXIST
    assert "/dev/null already exists and is not a device" in str(e.value)
    assert "mknod" not in fake_kernel.names()


# --- mount fallbacks -------------------------------------------------------------

def test_sysfs_refused_binds_the_host_s_read_only(fake_kernel, rootfs, tmp_path):
    fake_kernel.fail("fsopen", errno.EPERM, when=lambda fstype: fstype == "sysfs")
    rootfs(mounts=[{"destination": "/sys", "type": "sysfs", "source": "sysfs",
                    "options": ["nosuid", "noexec", "nodev", "ro"]}]).do_mounts()
    root = _root(tmp_path)
    assert _no_lookups(fake_kernel) == [
        ("fsopen", "sysfs"),
        ("open_tree", "/sys", BIND | K.AT_RECURSIVE),
        ("mount_setattr", K.AT_EMPTY_PATH, K.MOUNT_ATTR_RDONLY | K.MOUNT_ATTR_NOSUID |
         K.MOUNT_ATTR_NODEV | K.MOUNT_ATTR_NOEXEC, 0, 0),
        ("move_mount", "/sys", root + "/sys", ATTACH)]


@pytest.mark.parametrize("err", [errno.EPERM, errno.EACCES])
def test_mqueue_refused_binds_the_host_s(fake_kernel, rootfs, tmp_path, err):
    fake_kernel.fail("fsopen", err, when=lambda fstype: fstype == "mqueue")
    rootfs(mounts=[{"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
                    "options": ["nosuid", "noexec", "nodev"]}]).do_mounts()
    assert fake_kernel.of("open_tree") == [("/dev/mqueue", BIND | K.AT_RECURSIVE)]
    assert fake_kernel.of("move_mount") == [
        ("/dev/mqueue", _root(tmp_path) + "/dev/mqueue", ATTACH)]


def test_devpts_refusing_the_gid_is_mounted_again_without_it(fake_kernel, rootfs):
    # the tty group is not mapped in the container's user namespace
    fake_kernel.fail("fsconfig", errno.EINVAL, when=lambda cmd, key, val: key == "gid")
    rootfs(mounts=[{"destination": "/dev/pts", "type": "devpts", "source": "devpts",
                    "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666",
                                "mode=0620", "gid=5"]}]).do_mounts()
    assert fake_kernel.names().count("fsopen") == 2
    opts = [(1, "source", "devpts"), (0, "newinstance", None), (1, "ptmxmode", "0666"),
            (1, "mode", "0620")]
    assert fake_kernel.of("fsconfig") == opts + [(1, "gid", "5")] + \
        opts + [(6, None, None)]      # FSCONFIG_CMD_CREATE
    assert len(fake_kernel.of("move_mount")) == 1


def test_other_refusals_fail_the_mount_with_their_errno(fake_kernel, rootfs):
    fake_kernel.fail("fsmount", errno.EPERM)
    rf = rootfs(mounts=[{"destination": "/tmp", "type": "tmpfs", "source": "tmpfs",
                         "options": ["nosuid"]}])
    with pytest.raises(HutchError) as e:
        rf.do_mounts()
    assert e.value.errno == errno.EPERM
    assert str(e.value) == "mount tmpfs tmpfs on /tmp: fsmount: Operation not " \
        "permitted (errno 1)"


# --- entering the root -----------------------------------------------------------

def test_pivot_root_then_the_old_root_is_detached(fake_kernel, rootfs, monkeypatch,
                                                  tmp_path):
    monkeypatch.chdir(tmp_path)     # enter() changes the cwd
    rootfs(root_readonly=True).enter(no_pivot=False)
    assert fake_kernel.calls == [
        ("pivot_root", ".", "."), ("umount2", ".", K.MNT_DETACH),
        ("mount_setattr", 0, K.MOUNT_ATTR_RDONLY, 0, 0)]


def test_no_pivot_hides_the_host_s_proc_then_moves_and_chroots(fake_kernel, rootfs,
                                                                monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    rootfs(rootfs_propagation="rprivate").enter(no_pivot=True)
    calls = fake_kernel.calls
    hidden = [c[1] for c in calls if c[0] == "umount2"]
    assert "/proc" in hidden
    assert all(c[2] == K.MNT_DETACH for c in calls if c[0] == "umount2")
    assert calls[len(hidden):] == [
        ("mount", ".", "/", None, K.MS_MOVE, None), ("chroot", "."),
        ("mount", None, "/", None, K.MS_PRIVATE | K.MS_REC, None)]


def test_no_pivot_covers_what_it_cannot_detach(fake_kernel, rootfs, monkeypatch,
                                               tmp_path):
    monkeypatch.chdir(tmp_path)
    fake_kernel.fail("umount2", errno.EINVAL)
    rootfs().enter(no_pivot=True)
    covered = [c for c in fake_kernel.calls if c[0] == "mount" and c[1] == "tmpfs"]
    assert covered and ("mount", "tmpfs", "/proc", "tmpfs", K.MS_RDONLY | K.MS_NOSUID |
                        K.MS_NODEV | K.MS_NOEXEC, "size=0,mode=0") in covered
    assert fake_kernel.names()[-1] == "chroot"


def test_a_refused_chroot_names_it(fake_kernel, rootfs, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    fake_kernel.fail("chroot", errno.EPERM)
    with pytest.raises(PermissionError, match="chroot into the rootfs: Operation not "
                                              "permitted"):
        rootfs().enter(no_pivot=True)


# --- the console -----------------------------------------------------------------

def _console_socket():
    a, b = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    return a.detach(), b


def _closed(fd):
    try:
        os.fstat(fd)
    except OSError as e:
        return e.errno == errno.EBADF
    return False


def test_the_pty_is_unlocked_sized_and_its_master_sent(fake_kernel):
    master = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    sock, peer = _console_socket()
    slave = finalize.hand_over_pty(fake_kernel, master, sock, (24, 80))
    try:
        assert fake_kernel.calls == [
            ("ioctl", master, K.TIOCSPTLCK, struct.pack("i", 0)),
            ("ioctl", master, K.TIOCGPTPEER, os.O_RDWR | os.O_NOCTTY),
            ("ioctl", slave, K.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))]
        assert _closed(master) and _closed(sock)
        name, fds, _, _ = socket.recv_fds(peer, 64, 1)
        assert name == b"/dev/ptmx" and len(fds) == 1
        assert os.fstat(fds[0]).st_rdev == os.makedev(1, 3)      # the master itself
        os.close(fds[0])
    finally:
        os.close(slave)
        peer.close()


def test_no_console_size_no_winsize(fake_kernel):
    master = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    sock, peer = _console_socket()
    os.close(finalize.hand_over_pty(fake_kernel, master, sock, None))
    peer.close()
    assert [c[2] for c in fake_kernel.calls] == [K.TIOCSPTLCK, K.TIOCGPTPEER]


def test_a_refused_pty_sends_nothing_and_closes_both(fake_kernel):
    fake_kernel.fail("ioctl", errno.EIO, when=lambda fd, req, arg: req == K.TIOCGPTPEER)
    master = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
    sock, peer = _console_socket()
    with pytest.raises(OSError) as e:
        finalize.hand_over_pty(fake_kernel, master, sock, (24, 80))
    assert e.value.errno == errno.EIO and "open the pty's slave" in str(e.value)
    assert _closed(master) and _closed(sock)
    assert peer.recv(64) == b""
    peer.close()


def test_take_console_makes_the_slave_stdio_and_the_controlling_tty(fake_kernel):
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:        # stdio changes: in a child
        try:
            slave = os.memfd_create("the slave", 0)
            ino = os.fstat(slave).st_ino
            finalize.take_console(fake_kernel, slave)
            stdio = [os.fstat(fd).st_ino == ino for fd in (0, 1, 2)]
            os.write(w, repr((fake_kernel.calls, stdio, _closed(slave))).encode())
        finally:
            os._exit(0)
    os.close(w)
    with os.fdopen(r) as f:
        out = f.read()
    os.waitpid(pid, 0)
    calls, stdio, closed = ast.literal_eval(out)
    assert calls == [("ioctl", 0, K.TIOCSCTTY, 0)]
    assert stdio == [True, True, True] and closed


def test_a_terminal_needs_devpts_and_a_socket(fake_kernel, rootfs):
    rf = rootfs()
    with pytest.raises(HutchError) as e:
        finalize.open_console(fake_kernel, rf, {"console_socket": 9})
    assert e.value.errno == errno.ENOENT and "devpts mount at /dev/pts" in str(e.value)
    with pytest.raises(HutchError, match="no --console-socket"):
        finalize.open_console(fake_kernel, rf, {"console_socket": -1})


# --- namespaces given by path ----------------------------------------------------

def _ns_files(tmp_path, fake_kernel, types):
    paths = {}
    for t, flag in types.items():
        p = tmp_path / t
        p.write_text("")
        paths[t] = str(p)
        if flag is not None:
            fake_kernel.ns_types[os.path.realpath(p)] = flag
    return paths


def _open_fds():
    return len(os.listdir("/proc/self/fd"))


def test_namespace_files_are_opened_in_join_order_and_checked(fake_kernel, tmp_path):
    paths = _ns_files(tmp_path, fake_kernel, {"network": K.CLONE_NEWNET,
                                              "user": K.CLONE_NEWUSER})
    out = open_join_fds({"network": paths["network"], "user": paths["user"], "pid": ""})
    try:
        assert [t for t, _ in out] == ["user", "network"]
        assert fake_kernel.calls == [("ioctl", fd, K.NS_GET_NSTYPE, 0) for _, fd in out]
    finally:
        for _, fd in out:
            os.close(fd)


def test_a_namespace_file_of_another_type_is_refused(fake_kernel, tmp_path):
    paths = _ns_files(tmp_path, fake_kernel, {"user": K.CLONE_NEWUSER,
                                              "network": K.CLONE_NEWIPC})
    before = _open_fds()
    with pytest.raises(HutchError) as e:
        open_join_fds(paths)
    assert e.value.errno == errno.EINVAL
    assert str(e.value) == f"{paths['network']} is not a network namespace (it is a " \
        "ipc namespace) (errno 22)"
    assert _open_fds() == before


def test_a_file_that_is_no_namespace_is_refused(fake_kernel, tmp_path):
    paths = _ns_files(tmp_path, fake_kernel, {"uts": None})
    with pytest.raises(HutchError) as e:
        open_join_fds(paths)
    assert e.value.errno == errno.EINVAL
    assert str(e.value) == f"{paths['uts']} is not a namespace file (errno 22)"


# --- loopback, immutable interpreter ----------------------------------------------

def test_loopback_is_brought_up_keeping_its_flags(fake_kernel):
    loopback_up(fake_kernel)
    (fd1, get, arg1), (fd2, put, arg2) = fake_kernel.of("ioctl")
    assert fd1 == fd2 and (get, put) == (K.SIOCGIFFLAGS, K.SIOCSIFFLAGS)
    assert arg1 == struct.pack("16sH14x", b"lo", 0)
    assert arg2 == struct.pack("16sH14x", b"lo", 0x8 | 0x1)      # LOOPBACK | UP
    assert fake_kernel.if_flags["lo"] == 0x9


def test_loopback_refused_is_one_line_with_the_errno(fake_kernel):
    fake_kernel.fail("ioctl", errno.EPERM, when=lambda fd, req, arg: req == K.SIOCSIFFLAGS)
    with pytest.raises(HutchError) as e:
        loopback_up(fake_kernel)
    assert str(e.value) == "bring up the loopback interface: Operation not permitted " \
        "(errno 1)"


def test_the_immutable_flag_is_read_through_the_layer(fake_kernel):
    path = os.path.realpath("/etc/passwd")      # root-owned, as the interpreter is
    assert not exeguard.is_immutable(path)
    fake_kernel.inode_flags[path] = exeguard.FS_IMMUTABLE_FL
    assert exeguard.is_immutable(path)
    assert fake_kernel.of("ioctl")[-1][1:] == (K.FS_IOC_GETFLAGS, b"\0" * 8)
    fake_kernel.fail("ioctl", errno.ENOTTY)
    assert not exeguard.is_immutable(path)
