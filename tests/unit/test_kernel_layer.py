"""The kernel layer's contract, and the strict fake's: the fake models exactly
the calls it names, with the real signatures, and refuses every other one."""

import errno
import inspect
import os
import stat

import pytest

from hutch.linux import kernel as K
from hutch.linux.fake import FakeKernel

_HELPERS = ("names", "of", "fail")


def test_the_installed_fake_is_the_process_wide_kernel(fake_kernel):
    assert K.kernel() is fake_kernel


def test_every_model_has_the_kernel_method_s_signature():
    models = [n for n, v in vars(FakeKernel).items()
              if callable(v) and not n.startswith("_") and n not in _HELPERS]
    assert {"mknod", "chroot", "ioctl", "setsid", "setresuid"} <= set(models)
    for name in models:
        assert inspect.signature(getattr(FakeKernel, name)) == \
            inspect.signature(getattr(K.Kernel, name)), name


def test_an_unmodelled_call_raises_naming_it(fake_kernel):
    for name in ("capset", "prctl", "unshare", "setns", "seccomp_set_filter", "bpf",
                 "syscall"):
        with pytest.raises(NotImplementedError, match=f"Kernel.{name}\\(\\)"):
            getattr(fake_kernel, name)
    with pytest.raises(NotImplementedError, match="ioctl 0x1234"):
        fake_kernel.ioctl(0, 0x1234)
    assert fake_kernel.calls == [("ioctl", 0, 0x1234, 0)]
    # not a kernel call at all: the same error as with the real kernel
    with pytest.raises(AttributeError):
        fake_kernel.no_such_call  # noqa: B018


def test_a_refused_call_is_recorded_and_raises_as_the_layer_does(fake_kernel, tmp_path):
    fake_kernel.fail("mknod", errno.EPERM, when=lambda path, mode, dev: path.endswith("/b"))
    dfd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        fake_kernel.mknod("a", stat.S_IFCHR | 0o600, os.makedev(1, 3), dir_fd=dfd)
        with pytest.raises(PermissionError) as e:
            fake_kernel.mknod("b", stat.S_IFCHR | 0o600, os.makedev(1, 5), dir_fd=dfd,
                              what="create device /dev/b")
    finally:
        os.close(dfd)
    assert e.value.errno == errno.EPERM
    assert str(e.value) == "[Errno 1] create device /dev/b: Operation not permitted"
    root = os.path.realpath(tmp_path)
    assert fake_kernel.calls == [
        ("mknod", f"{root}/a", stat.S_IFCHR | 0o600, os.makedev(1, 3)),
        ("mknod", f"{root}/b", stat.S_IFCHR | 0o600, os.makedev(1, 5))]
    # the made node is a stand-in with the node's permissions; the refused one is not
    assert stat.S_IMODE((tmp_path / "a").stat().st_mode) == 0o600
    assert not (tmp_path / "b").exists()


def test_mount_fds_name_what_they_mount(fake_kernel, tmp_path):
    tfd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        fs = fake_kernel.fsopen("tmpfs")
        m = fake_kernel.fsmount(fs, 0)
        fake_kernel.move_mount(m, "", tfd, "", K.MOVE_MOUNT_F_EMPTY_PATH)
        t = fake_kernel.open_tree(K.AT_FDCWD, "/dev/null", K.OPEN_TREE_CLONE)
        fake_kernel.move_mount(t, "", tfd, "", K.MOVE_MOUNT_F_EMPTY_PATH)
        for fd in (fs, m, t):
            os.close(fd)
    finally:
        os.close(tfd)
    root = os.path.realpath(tmp_path)
    assert fake_kernel.of("move_mount") == [("tmpfs", root, K.MOVE_MOUNT_F_EMPTY_PATH),
                                            ("/dev/null", root, K.MOVE_MOUNT_F_EMPTY_PATH)]


# --- the real layer: only calls that change nothing -------------------------------

def test_os_calls_in_the_layer_carry_the_errno_and_name_what_failed(tmp_path):
    k = K.Kernel()
    dfd = os.open(tmp_path, os.O_PATH | os.O_DIRECTORY)
    try:
        k.mknod("f", stat.S_IFIFO | 0o600, dir_fd=dfd)      # a fifo needs no privilege
        with pytest.raises(FileExistsError) as e:
            k.mknod("f", stat.S_IFIFO | 0o600, dir_fd=dfd, what="create device /dev/f")
    finally:
        os.close(dfd)
    assert e.value.errno == errno.EEXIST
    assert e.value.strerror == "create device /dev/f: File exists"
    assert stat.S_ISFIFO((tmp_path / "f").stat().st_mode)


def test_ioctl_carries_the_errno_and_names_what_failed(tmp_path):
    (tmp_path / "plain").write_text("")
    fd = os.open(tmp_path / "plain", os.O_RDONLY | os.O_CLOEXEC)
    try:
        with pytest.raises(OSError) as e:
            K.Kernel().ioctl(fd, K.NS_GET_NSTYPE, what="the type of plain")
    finally:
        os.close(fd)
    assert e.value.errno == errno.ENOTTY
    assert e.value.strerror == "the type of plain: Inappropriate ioctl for device"
