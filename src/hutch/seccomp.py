"""seccomp: ``linux.seccomp`` compiled into a BPF program with libseccomp (the
field's own library, through ctypes), and loaded by hutch itself with seccomp(2).

Compiling happens in the hutch command, on the host, before anything changes:
a bad profile is a clear error and nothing is left behind.  The program travels
to the container's process as bytes and is loaded as late as possible: just
before execve when no_new_privs is set, and just before the capabilities are
dropped otherwise (without no_new_privs, loading a filter needs CAP_SYS_ADMIN).
A profile with SCMP_ACT_NOTIFY is loaded before the process reports ready,
because its listener fd must reach the hutch command, which sends it with the
container's state to ``listenerPath`` (runtime-spec, "seccomp notify").

Syscall names that libseccomp does not know for any architecture are skipped, as
runc skips them; a rule whose action equals the default action is skipped too
(libseccomp refuses it).  Several conditions on the same argument cannot be
ANDed by libseccomp: such a rule becomes one rule per condition, as in runc.
"""

import errno
import os

from .errors import ConfigError, HutchError

ACTIONS = {
    "SCMP_ACT_KILL": 0x00000000, "SCMP_ACT_KILL_THREAD": 0x00000000,
    "SCMP_ACT_KILL_PROCESS": 0x80000000, "SCMP_ACT_TRAP": 0x00030000,
    "SCMP_ACT_ERRNO": 0x00050000, "SCMP_ACT_TRACE": 0x7FF00000,
    "SCMP_ACT_LOG": 0x7FFC0000, "SCMP_ACT_ALLOW": 0x7FFF0000,
    "SCMP_ACT_NOTIFY": 0x7FC00000,
}
OPS = {"SCMP_CMP_NE": 1, "SCMP_CMP_LT": 2, "SCMP_CMP_LE": 3, "SCMP_CMP_EQ": 4,
       "SCMP_CMP_GE": 5, "SCMP_CMP_GT": 6, "SCMP_CMP_MASKED_EQ": 7}
FLAGS = {"SECCOMP_FILTER_FLAG_TSYNC": 1, "SECCOMP_FILTER_FLAG_LOG": 2,
         "SECCOMP_FILTER_FLAG_SPEC_ALLOW": 4,
         "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV": 32}
FLAG_NEW_LISTENER = 8
FLAG_TSYNC_ESRCH = 16
U64 = (1 << 64) - 1

_lib = None


def libseccomp():
    global _lib
    if _lib is None:
        import ctypes
        try:
            lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
        except OSError as e:
            raise HutchError("linux.seccomp needs libseccomp (the libseccomp2 "
                             f"package), which cannot be loaded: {e}",
                             errno.ENOENT) from None
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]
        lib.seccomp_arch_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32]
        lib.seccomp_arch_resolve_name.restype = ctypes.c_uint32
        lib.seccomp_arch_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32,
                                               ctypes.c_int, ctypes.c_uint,
                                               ctypes.c_void_p]
        lib.seccomp_export_bpf.argtypes = [ctypes.c_void_p, ctypes.c_int]
        _lib = lib
    return _lib


class _Reader:
    """Typed access to the seccomp object, with config.json error paths."""

    def __init__(self, where):
        self.where = where

    def err(self, path, msg):
        return ConfigError(f"{self.where}.{path}: {msg}")

    def str(self, d, key, path, required=False):
        v = d.get(key)
        if v is None:
            if required:
                raise self.err(path + key, "is required")
            return None
        if not isinstance(v, str):
            raise self.err(path + key, f"expected a string, got {type(v).__name__}")
        return v

    def uint(self, d, key, path, hi=U64, default=None):
        v = d.get(key)
        if v is None:
            return default
        if not isinstance(v, int) or isinstance(v, bool) or not 0 <= v <= hi:
            raise self.err(path + key, f"expected an integer from 0 to {hi}, got {v!r}")
        return v

    def strlist(self, d, key, path):
        v = d.get(key)
        if v is None:
            return []
        if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
            raise self.err(path + key, "expected a list of strings")
        return v


def _action(r, name, errno_ret, path, default_errno):
    if name not in ACTIONS:
        raise r.err(path + "action", f"unknown action {name!r} (one of "
                    f"{', '.join(sorted(ACTIONS))})")
    base = ACTIONS[name]
    if name in ("SCMP_ACT_ERRNO", "SCMP_ACT_TRACE"):
        ret = errno_ret if errno_ret is not None else default_errno
        return base | (ret & 0xFFFF)
    return base


def parse(sec, where="config.json: linux.seccomp"):
    """Validates the seccomp object; returns (default, arches, flags, listener,
    metadata, rules) with rules [(action, [names], [(index, op, a, b)])]."""
    r = _Reader(where)
    if not isinstance(sec, dict):
        raise ConfigError(f"{where}: expected an object")
    default_errno = r.uint(sec, "defaultErrnoRet", "", hi=0xFFFF)
    dname = r.str(sec, "defaultAction", "", required=True)
    default = _action(r, dname, default_errno, "default", errno.EPERM)
    if dname == "SCMP_ACT_NOTIFY":
        raise r.err("defaultAction", "SCMP_ACT_NOTIFY cannot be the default action "
                    "(the notify listener's own syscalls would be caught)")
    arches = r.strlist(sec, "architectures", "")
    flags = 0
    for i, f in enumerate(r.strlist(sec, "flags", "")):
        if f not in FLAGS:
            raise r.err(f"flags[{i}]", f"unknown flag {f!r} (one of "
                        f"{', '.join(sorted(FLAGS))})")
        flags |= FLAGS[f]
    listener = r.str(sec, "listenerPath", "")
    metadata = r.str(sec, "listenerMetadata", "") or ""
    calls = sec.get("syscalls")
    calls = [] if calls is None else calls
    if not isinstance(calls, list):
        raise r.err("syscalls", "expected a list")
    rules = []
    notify = False
    for i, c in enumerate(calls):
        p = f"syscalls[{i}]."
        if not isinstance(c, dict):
            raise r.err(f"syscalls[{i}]", "expected an object")
        names = r.strlist(c, "names", p)
        if not names:
            raise r.err(p + "names", "must name at least one syscall")
        aname = r.str(c, "action", p, required=True)
        action = _action(r, aname, r.uint(c, "errnoRet", p, hi=0xFFFF), p, errno.EPERM)
        notify |= aname == "SCMP_ACT_NOTIFY"
        if aname == "SCMP_ACT_NOTIFY" and "write" in names:
            # the init writes to exec.fifo and its error pipe under the filter:
            # it would wait for an agent that waits for it (runc refuses too)
            raise r.err(p + "names", "SCMP_ACT_NOTIFY cannot be used for the write "
                        "syscall")
        args = c.get("args")
        args = [] if args is None else args
        if not isinstance(args, list):
            raise r.err(p + "args", "expected a list")
        conds = []
        for j, a in enumerate(args):
            q = f"{p}args[{j}]."
            if not isinstance(a, dict):
                raise r.err(f"{p}args[{j}]", "expected an object")
            op = r.str(a, "op", q, required=True)
            if op not in OPS:
                raise r.err(q + "op", f"unknown operator {op!r} (one of "
                            f"{', '.join(sorted(OPS))})")
            index = r.uint(a, "index", q, hi=5)
            if index is None:
                raise r.err(q + "index", "is required")
            conds.append((index, OPS[op], r.uint(a, "value", q, default=0),
                          r.uint(a, "valueTwo", q, default=0)))
        rules.append((action, names, conds))
    if notify and not listener:
        raise r.err("listenerPath", "is required when a rule uses SCMP_ACT_NOTIFY")
    if flags & FLAGS["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"] and not notify:
        raise r.err("flags", "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV applies only to "
                    "filters with SCMP_ACT_NOTIFY rules (the kernel refuses it "
                    "otherwise)")
    return default, arches, flags, listener, metadata, rules, notify


CACHE_KEEP = 64


def compile(sec, where="config.json: linux.seccomp", cache_dir=None):
    """The profile as {"bpf": bytes, "flags", "notify", "listener_path",
    "listener_metadata"}, ready for :func:`load`.

    With ``cache_dir``, programs are kept there by a hash of the profile (and the
    libseccomp version), so that the next container with the same profile (an
    engine uses one for all of them) skips libseccomp's compilation (~12 ms for
    Podman's default profile here)."""
    default, arches, flags, listener, metadata, rules, notify = parse(sec, where)
    if notify:
        flags |= FLAG_NEW_LISTENER
        if flags & FLAGS["SECCOMP_FILTER_FLAG_TSYNC"]:
            flags |= FLAG_TSYNC_ESRCH
    out = {"flags": flags, "notify": notify, "listener_path": listener,
           "listener_metadata": metadata}
    key = _cache_key(sec) if cache_dir else None
    if key:
        try:
            with open(os.path.join(cache_dir, key), "rb") as f:
                out["bpf"] = f.read()
            if out["bpf"] and len(out["bpf"]) % 8 == 0:
                return out
        except OSError:
            pass
    out["bpf"] = _build(default, arches, rules, where)
    if key:
        _cache_put(cache_dir, key, out["bpf"])
    return out


def _cache_key(sec):
    from . import jsonlite
    try:
        import _sha256
        h = _sha256.sha256()
    except ImportError:
        import hashlib
        h = hashlib.sha256()
    lib = libseccomp()
    ver = _lib_version(lib)
    # the program's own layout version: 2 has the -ENOSYS stub
    h.update(f"{ver}\0{os.uname().machine}\0layout 2\0".encode())
    # the listener is not in the program: containers that differ only by it
    # (each keeper's own socket) share one compiled filter
    h.update(jsonlite.dumps({k: v for k, v in sec.items() if k not in
                             ("listenerPath", "listenerMetadata")},
                            compact=True).encode())
    return h.hexdigest()


def _lib_version(lib):
    import ctypes

    class Ver(ctypes.Structure):
        _fields_ = [("major", ctypes.c_uint), ("minor", ctypes.c_uint),
                    ("micro", ctypes.c_uint)]
    lib.seccomp_version.restype = ctypes.POINTER(Ver)
    v = lib.seccomp_version().contents
    return f"{v.major}.{v.minor}.{v.micro}"


def _cache_put(cache_dir, key, bpf):
    try:
        os.makedirs(cache_dir, 0o700, exist_ok=True)
        tmp = os.path.join(cache_dir, f".{key}.{os.getpid()}")
        with open(tmp, "wb") as f:
            f.write(bpf)
        os.replace(tmp, os.path.join(cache_dir, key))
        names = [n for n in os.listdir(cache_dir) if not n.startswith(".")]
        if len(names) > CACHE_KEEP:
            names.sort(key=lambda n: os.stat(os.path.join(cache_dir, n)).st_mtime)
            for n in names[:len(names) - CACHE_KEEP]:
                os.unlink(os.path.join(cache_dir, n))
    except OSError:
        pass        # a cache only: compiling again next time is fine


def _build(default, arches, rules, where):
    import ctypes
    lib = libseccomp()
    ctx = lib.seccomp_init(default)
    if not ctx:
        raise HutchError(f"{where}: libseccomp refused the default action", errno.EINVAL)
    try:
        for i, a in enumerate(arches):
            token = lib.seccomp_arch_resolve_name(_arch_name(a).encode())
            if not token:
                raise ConfigError(f"{where}.architectures[{i}]: unknown architecture "
                                  f"{a!r}")
            rc = lib.seccomp_arch_add(ctx, token)
            if rc < 0 and rc != -17:        # EEXIST: the native one is there already
                raise HutchError(f"{where}.architectures[{i}]: add {a}: "
                                 f"{os.strerror(-rc)}", -rc)

        class Cmp(ctypes.Structure):
            _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                        ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]
        top = -1       # the newest syscall the profile names (native numbers)
        for i, (action, names, conds) in enumerate(rules):
            for name in names:
                top = max(top, lib.seccomp_syscall_resolve_name(name.encode()))
            if action == default:
                continue
            by_index = [c[0] for c in conds]
            groups = [[c] for c in conds] if len(set(by_index)) < len(by_index) \
                else [conds]
            for name in names:
                nr = lib.seccomp_syscall_resolve_name(name.encode())
                if nr == -1:        # __NR_SCMP_ERROR: unknown everywhere; skipped
                    continue
                for group in groups:
                    arr = (Cmp * max(1, len(group)))(*[Cmp(*c) for c in group])
                    rc = lib.seccomp_rule_add_array(ctx, action, nr, len(group),
                                                    ctypes.cast(arr, ctypes.c_void_p))
                    if rc < 0:
                        raise HutchError(f"{where}.syscalls[{i}]: add the rule for "
                                         f"{name}: {os.strerror(-rc)}", -rc)
        fd = os.memfd_create("hutch-seccomp", os.MFD_CLOEXEC)
        try:
            rc = lib.seccomp_export_bpf(ctx, fd)
            if rc < 0:
                raise HutchError(f"{where}: export the filter: {os.strerror(-rc)}", -rc)
            size = os.lseek(fd, 0, os.SEEK_CUR)
            bpf = os.pread(fd, size, 0)
        finally:
            os.close(fd)
    finally:
        lib.seccomp_release(ctx)
    if default != ACTIONS["SCMP_ACT_ALLOW"] and top >= 0:
        bpf = enosys_stub(top) + bpf
    return bpf


# the native architecture's audit token (a syscall from it carries it in
# seccomp_data.arch); x32 calls come as x86_64 with this bit set in their number
_AUDIT_ARCH = {"x86_64": 0xC000003E, "aarch64": 0xC00000B7}
_X32_BIT = 0x40000000


def enosys_stub(top):
    """BPF put before the profile's program: a native syscall newer than any the
    profile names gets -ENOSYS instead of the default action.  A program (glibc,
    Go) then falls back to an older call, as it would on an older kernel: a
    profile written before clone3 or openat2 existed must not make them fail
    with EPERM.  runc does the same.  Empty where the architecture is unknown."""
    import struct
    arch = _AUDIT_ARCH.get(os.uname().machine)
    if arch is None:
        return b""
    ins = [
        (0x20, 0, 0, 4),                        # ld  [4]          arch
        (0x15, 0, 4, arch),                     # jeq native ? : -> program
        (0x20, 0, 0, 0),                        # ld  [0]          nr
        (0x45, 2, 0, _X32_BIT),                 # jset x32 -> program
        (0x25, 0, 1, top),                      # jgt top ? enosys : program
        (0x06, 0, 0, 0x00050000 | 38),          # ret ERRNO(ENOSYS)
    ]
    return b"".join(struct.pack("HBBI", *i) for i in ins)


def _arch_name(a):
    n = a.lower()
    return n[len("scmp_arch_"):] if n.startswith("scmp_arch_") else n


def load(k, prog):
    """Loads the program into the calling thread; returns the notify fd or -1."""
    try:
        fd = k.seccomp_set_filter(prog["bpf"], prog["flags"])
    except OSError as e:
        why = ""
        if e.errno == errno.EINVAL and \
                prog["flags"] & FLAGS["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]:
            why = " (SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV needs Linux 6.0)"
        raise HutchError(f"load the seccomp filter: {e.strerror}{why}", e.errno) \
            from None
    return fd if prog["notify"] else -1


def to_state(prog):
    """JSON-safe form for state.json (what exec loads again)."""
    if prog is None:
        return None
    out = dict(prog)
    out["bpf"] = prog["bpf"].hex()
    return out


def from_state(d):
    if d is None or isinstance(d.get("bpf"), bytes):
        return d
    out = dict(d)
    out["bpf"] = bytes.fromhex(d["bpf"])
    return out


# the listenerMetadata of the listener a hutch keeper holds (sysinfo for the
# container's views): if that keeper is gone, a new process goes without it (its
# sysinfo fails with ENOSYS) rather than failing to start, as an agent's must
KEEPER_METADATA = "hutch-keeper-sysinfo"


def send_to_listener(path, fd, pid, state, metadata):
    """Sends the notify fd with the container process state (runtime-spec
    "containerProcessState") to the listener's unix socket."""
    try:
        _send_to_listener(path, fd, pid, state, metadata)
    except HutchError as e:
        if metadata != KEEPER_METADATA:
            raise
        from .log import warn
        warn(f"sysinfo is not answered for pid {pid}: its keeper is gone ({e})")


def _send_to_listener(path, fd, pid, state, metadata):
    import _socket
    from . import jsonlite
    from .linux.fdpass import pack_fds
    msg = jsonlite.dumps({"ociVersion": state.get("ociVersion", ""),
                          "fds": ["seccompFd"], "pid": pid, "metadata": metadata,
                          "state": state}, compact=True).encode()
    s = _socket.socket(_socket.AF_UNIX, _socket.SOCK_STREAM)
    dirfd = -1
    try:
        try:
            if len(path.encode()) >= 100:
                # past sockaddr_un's 108 bytes: through the directory's fd
                d, name = os.path.split(path)
                dirfd = os.open(d, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
                s.connect(f"/proc/self/fd/{dirfd}/{name}")
            else:
                s.connect(path)
        except OSError as e:
            raise HutchError(f"failed to connect with seccomp agent specified in the "
                             f"seccomp profile: listenerPath {path}: {e.strerror}",
                             e.errno) from None
        s.sendmsg([msg], [(_socket.SOL_SOCKET, _socket.SCM_RIGHTS, pack_fds([fd]))])
    except OSError as e:
        raise HutchError(f"send the seccomp notify fd to listenerPath {path}: "
                         f"{e.strerror}", e.errno) from None
    finally:
        s.close()
        if dirfd >= 0:
            os.close(dirfd)
