"""Sets or clears the immutable flag of a file (used by setup.sh for the guarded
interpreter; see :mod:`hutch.linux.exeguard`).

usage: python3 immutable.py set|clear PATH
"""

import fcntl
import os
import sys

FS_IOC_GETFLAGS = 0x80086601
FS_IOC_SETFLAGS = 0x40086602
FS_IMMUTABLE_FL = 0x10


def set_immutable(path, on=True):
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOCTTY)
    try:
        flags = int.from_bytes(fcntl.ioctl(fd, FS_IOC_GETFLAGS, bytes(8))[:4], "little")
        new = flags | FS_IMMUTABLE_FL if on else flags & ~FS_IMMUTABLE_FL
        if new != flags:
            fcntl.ioctl(fd, FS_IOC_SETFLAGS, new.to_bytes(8, "little"))
    finally:
        os.close(fd)


def main(argv):
    if len(argv) != 3 or argv[1] not in ("set", "clear"):
        sys.stderr.write(__doc__)
        return 2
    try:
        set_immutable(argv[2], argv[1] == "set")
    except OSError as e:
        sys.stderr.write(f"immutable: {argv[1]} {argv[2]}: {e.strerror}\n")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
