"""Networking inside the container's namespace.

Like runc, a new network namespace gets its loopback interface brought up; every
other interface is the engine's business (CNI, netavark, slirp4netns)."""


from .errors import HutchError

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def loopback_up():
    import _socket
    import fcntl
    import struct
    s = _socket.socket(_socket.AF_INET, _socket.SOCK_DGRAM)
    try:
        req = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH14x", b"lo",
                                                         flags | IFF_UP))
    except OSError as e:
        raise HutchError(f"bring up the loopback interface: {e.strerror}",
                         e.errno) from None
    finally:
        s.close()


