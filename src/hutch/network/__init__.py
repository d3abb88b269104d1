"""Networking inside the container's namespace.

Like runc, a new network namespace gets its loopback interface brought up; every
other interface is the engine's business (CNI, netavark, slirp4netns)."""

import os

from ..errors import HutchError

IFF_UP = 0x1


def loopback_up(k):
    import _socket
    import struct

    from ..linux import kernel as K
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", k.ioctl(s.fileno(), K.SIOCGIFFLAGS, req,
                                                 what="get the flags of lo"))[1]
        k.ioctl(s.fileno(), K.SIOCSIFFLAGS,
                struct.pack("16sH14x", b"lo", flags | IFF_UP), what="set the flags of lo")
    except OSError as e:
        raise HutchError(f"bring up the loopback interface: {os.strerror(e.errno)}",
                         e.errno) from None
    finally:
        s.close()


