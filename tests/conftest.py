"""Shared fixtures: the runtime under test, a busybox rootfs, bundles, and a runner.

HUTCH_TEST_RUNTIME=runc (or a path) makes the conformance tier drive another runtime
with the same assertions; by default the tests drive hutch through its launcher.
Everything a test makes (state root, bundles, cgroups, netns) lives under names the
test owns and is removed afterwards.
"""

import copy
import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(REPO, "src"))

IS_ROOT = os.geteuid() == 0


def runtime_cmd():
    rt = os.environ.get("HUTCH_TEST_RUNTIME", "hutch")
    if rt == "hutch":
        fast = os.path.join(REPO, ".venv", "bin", "hutch-fast")
        if os.path.exists(fast):
            return [fast]
        return [sys.executable, "-m", "hutch"]
    if rt == "runc":
        return [shutil.which("runc") or "/usr/sbin/runc"]
    return [rt]


RUNTIME = runtime_cmd()


def runtime_binary():
    """The file the runtime executes from: for hutch, the interpreter named by its
    launcher (an attacker in a container would try to overwrite this one)."""
    first = RUNTIME[0]
    with open(first, "rb") as f:
        head = f.readline()
    if head.startswith(b"#!"):
        return os.path.realpath(head[2:].split()[0].decode())
    return os.path.realpath(first)
RUNTIME_NAME = os.path.basename(os.environ.get("HUTCH_TEST_RUNTIME", "hutch"))


MEMHOG = r"""
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
static volatile sig_atomic_t again;
static void on_usr1(int s) { (void)s; again = 1; }
static uint64_t sum(const uint64_t *p, size_t n) {
    uint64_t h = 1469598103934665603ULL;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 1099511628211ULL;
    return h;
}
static void put(const char *path, uint64_t v) {
    FILE *f = fopen(path, "w"); fprintf(f, "%016llx\n", (unsigned long long)v); fclose(f);
}
int main(int argc, char **argv) {
    size_t n = (size_t)atol(argv[1]) << 17;          /* MiB -> 8-byte words */
    uint64_t *p = malloc(n * 8), x = 88172645463325252ULL;
    for (size_t i = 0; i < n; i++) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; p[i] = x; }
    signal(SIGUSR1, on_usr1);
    put("/mem.sum", sum(p, n));
    for (;;) { pause(); if (again) { again = 0; put("/mem.sum2", sum(p, n)); } }
}
"""


def build_static(source, dest):
    """Compiles C ``source`` into a static program at ``dest`` (for an image)."""
    if shutil.which("gcc") is None:
        pytest.fail("gcc is missing: setup.sh installs build-essential (for CRIU)")
    with tempfile.TemporaryDirectory() as d:
        src = os.path.join(d, "prog.c")
        with open(src, "w") as f:
            f.write(source)
        subprocess.run(["gcc", "-O2", "-static", "-o", dest, src], check=True)


def build_memhog(dest):
    """A static program that fills N MiB with a PRNG stream, writes its checksum
    to /mem.sum, and writes it again to /mem.sum2 on SIGUSR1."""
    build_static(MEMHOG, dest)


def build_busybox(dest):
    bb = shutil.which("busybox") or "/bin/busybox"
    for d in ("bin", "proc", "sys", "dev", "etc", "tmp", "root", "run"):
        os.makedirs(os.path.join(dest, d), exist_ok=True)
    shutil.copy2(bb, os.path.join(dest, "bin", "busybox"))
    applets = subprocess.run([bb, "--list"], capture_output=True, text=True).stdout.split()
    for a in applets:
        if a != "busybox":
            link = os.path.join(dest, "bin", a)
            if not os.path.lexists(link):
                os.symlink("busybox", link)
    with open(os.path.join(dest, "etc", "passwd"), "w") as f:
        f.write("root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/sh\n"
                "app:x:1000:1000:app:/home/app:/bin/sh\n")
    with open(os.path.join(dest, "etc", "group"), "w") as f:
        f.write("root:x:0:\ntty:x:5:\napp:x:1000:\n")


@pytest.fixture(scope="session")
def busybox_rootfs(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("image") / "rootfs")
    build_busybox(d)
    return d


_RUNC_SPEC = None


def runc_spec():
    """`runc spec`'s default config, the reference every engine and tutorial
    starts from (never hutch's own `hutch spec`: a suite that feeds hutch only
    its own configs proves little)."""
    global _RUNC_SPEC
    if _RUNC_SPEC is None:
        runc = shutil.which("runc") or "/usr/sbin/runc"
        with tempfile.TemporaryDirectory() as d:
            subprocess.run([runc, "spec"], cwd=d, check=True)
            with open(os.path.join(d, "config.json")) as f:
                _RUNC_SPEC = json.load(f)
    return copy.deepcopy(_RUNC_SPEC)


def base_config(args):
    """The bundle config the tests start from: `runc spec`'s output, with the
    program, no terminal, and a writable root."""
    cfg = runc_spec()
    cfg["process"]["terminal"] = False
    cfg["process"]["args"] = list(args)
    cfg["root"] = {"path": "rootfs", "readonly": False}
    cfg["linux"].pop("resources", None)
    return cfg


class Bundle:
    def __init__(self, rootfs_src, root, tmp):
        self.dir = os.path.join(tmp, "bundle-" + uuid.uuid4().hex[:8])
        os.makedirs(self.dir)
        self.rootfs = os.path.join(self.dir, "rootfs")
        shutil.copytree(rootfs_src, self.rootfs, symlinks=True)
        self.root = root
        self.ids = []

    def write(self, cfg):
        with open(os.path.join(self.dir, "config.json"), "w") as f:
            json.dump(cfg, f)

    def rt(self, *args, input=None, timeout=30, check=False, glob=()):
        cmd = RUNTIME + ["--root", self.root] + list(glob) + [str(a) for a in args]
        # files, not pipes: a created container keeps its stdio open, as with runc
        with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
            p = subprocess.run(cmd, stdout=out, stderr=err, input=input.encode() if input else None,
                               timeout=timeout, cwd=self.dir,
                               stdin=None if input is not None else subprocess.DEVNULL)
            out.seek(0)
            err.seek(0)
            p.stdout = out.read().decode(errors="replace")
            p.stderr = err.read().decode(errors="replace")
        if check and p.returncode != 0:
            raise AssertionError(f"{cmd} failed ({p.returncode}): {p.stderr}")
        return p

    def new_id(self):
        cid = "t-" + uuid.uuid4().hex[:10]
        self.ids.append(cid)
        return cid

    def run(self, cfg, timeout=30, extra=()):
        """Runs the config in the foreground; returns the CompletedProcess."""
        self.write(cfg)
        cid = self.new_id()
        return self.rt("run", *extra, "--bundle", self.dir, cid, timeout=timeout)

    def sh(self, script, mutate=None, **kw):
        cfg = base_config(["sh", "-c", script])
        if mutate:
            mutate(cfg)
        return self.run(cfg, **kw)

    def cleanup(self):
        for cid in self.ids:
            self.rt("delete", "--force", cid)


@pytest.fixture
def bundle(busybox_rootfs, tmp_path):
    if not IS_ROOT:
        pytest.skip("needs root")
    root = str(tmp_path / "state")
    b = Bundle(busybox_rootfs, root, str(tmp_path))
    yield b
    b.cleanup()
    # caches the state root keeps on purpose: compiled seccomp programs, and the
    # version of the CRIU binary (by its identity)
    leftover = [e for e in os.listdir(root) if e not in (".seccomp-cache",
                                                         ".criu-version")] \
        if os.path.isdir(root) else []
    assert not leftover, f"state left behind: {leftover}"


@pytest.fixture
def cfg_copy():
    return copy.deepcopy
