"""Container logs in the CRI format, the one kubelet writes and Kubernetes and
Podman tools read.  Each record is one line::

    2026-12-01T13:02:40.123456789Z stdout F hello

the time in UTC with exactly nine fraction digits (so records sort as text), the
stream (``stdout``, ``stderr`` or ``syslog``), the tag ``F`` (a full line) or ``P``
(a piece of one), and the message bytes exactly as the program wrote them, never
decoded, so invalid UTF-8 survives.  A logical line is a stream's P records up to
and including its next F record.

Syslog: a message sent to the container's /dev/log is one F record on the stream
``syslog`` whose message is ``FACILITY.SEVERITY TAG: text`` (``user.info app[12]:
hello``), or ``FACILITY.SEVERITY text`` without a tag.  The ``<PRI>`` number is not
kept verbatim: the names are what people grep for, and no CRI reader decodes it.
A text of several lines gives one record per line, each with that prefix.

The writer (the keeper) rotates by size.  ``path`` is always the newest file and
plain; older ones are ``path.1.gz`` (the next older) to ``path.N.gz``.  Rotation
compresses the full file to ``path.1.gz``, then replaces ``path`` by a new empty
file with rename(2): ``path`` never goes missing, and a follower still reading the
old file finishes it through its fd, sees the new inode and reopens ``path``.  (A
reader listing the files at that very moment may see the last records twice.)

The readers (``hutch logs``) skip malformed lines and an unterminated last line.
"""

import errno
import os
import time

from hutch.errors import HutchError

_CHUNK = 1 << 20
_MDAYS = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)
_UNITS = {"ms": 10**6, "s": 10**9, "m": 60 * 10**9, "h": 3600 * 10**9}


def format_time(ns):
    """RFC 3339 in UTC with nanoseconds: ``2026-12-01T13:02:40.123456789Z``."""
    sec, frac = divmod(ns, 1_000_000_000)
    return "%04d-%02d-%02dT%02d:%02d:%02d.%09dZ" % (time.gmtime(sec)[:6] + (frac,))


def _digits(s):
    return s.isascii() and s.isdigit()


def _days(y, m, d):
    """Days from 1970-01-01 to a proleptic Gregorian date (H. Hinnant's method)."""
    y -= m <= 2
    era, yoe = divmod(y, 400)
    doy = (153 * (m - 3 if m > 2 else m + 9) + 2) // 5 + d - 1
    return era * 146097 + yoe * 365 + yoe // 4 - yoe // 100 + doy - 719468


def parse_time(text):
    """Nanoseconds since the epoch of an RFC 3339 time, or None if it is not one."""
    if (len(text) < 20 or text[4] != "-" or text[7] != "-" or text[10] not in "Tt "
            or text[13] != ":" or text[16] != ":"):
        return None
    fields = text[0:4], text[5:7], text[8:10], text[11:13], text[14:16], text[17:19]
    if not all(map(_digits, fields)):
        return None
    y, mo, d, h, mi, s = map(int, fields)
    rest, frac = text[19:], 0
    if rest[:1] == ".":
        i = 1
        while i < len(rest) and rest[i] in "0123456789":
            i += 1
        if i == 1:
            return None
        frac, rest = int(rest[1:i][:9].ljust(9, "0")), rest[i:]
    if rest in ("Z", "z"):
        off = 0
    elif (len(rest) == 6 and rest[0] in "+-" and rest[3] == ":"
          and _digits(rest[1:3] + rest[4:6]) and int(rest[1:3]) < 24 and int(rest[4:6]) < 60):
        off = (int(rest[1:3]) * 3600 + int(rest[4:6]) * 60) * (1 if rest[0] == "+" else -1)
    else:
        return None
    leap = y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)
    if not (1 <= mo <= 12 and 1 <= d <= (29 if mo == 2 and leap else _MDAYS[mo - 1] - (mo == 2))
            and h < 24 and mi < 60 and s <= 60):
        return None
    return (_days(y, mo, d) * 86400 + h * 3600 + mi * 60 + s - off) * 1_000_000_000 + frac


def parse_since(text, now_ns):
    """``--since``: an RFC 3339 time, a duration before ``now_ns`` (``10s``, ``5m``,
    ``2h``, ``1h30m``, ``500ms``) or Unix seconds (``1764594000.5``), in ns."""
    s = text.strip()
    ns = parse_time(s)
    if ns is not None:
        return ns
    whole, dot, frac = s.partition(".")
    if _digits(whole) and (not dot or _digits(frac)):
        return int(whole) * 1_000_000_000 + int(frac[:9].ljust(9, "0") if dot else 0)
    i, total = 0, 0
    while i < len(s) and total is not None:
        j = i
        while j < len(s) and s[j] in "0123456789":
            j += 1
        k = j
        while k < len(s) and s[k].isascii() and s[k].isalpha():
            k += 1
        unit = _UNITS.get(s[j:k])
        total = None if j == i or unit is None else total + int(s[i:j]) * unit
        i = k
    if s and total is not None:
        return now_ns - total
    raise HutchError(f"invalid time {text!r}: use RFC 3339 (2026-12-01T13:00:00Z), "
                     "a duration (1h30m) or Unix seconds", errno.EINVAL)


class LogWriter:
    """Appends records to ``path`` and rotates it (see the module's docstring).

    ``write(stream, chunk)`` takes raw chunks from a pipe; an unterminated piece
    waits for the rest, and is written as a P record when it reaches ``max_line``
    bytes or on ``flush_partials()``.  Messages are cut in pieces of ``max_line``
    bytes at most.  One os.write on an O_APPEND fd per record; an OSError (a full
    disk) goes to the caller.  ``clock`` gives the time in ns."""

    def __init__(self, path, max_size=10 * 1024 * 1024, max_files=5, max_line=16 * 1024,
                 clock=None):
        if max_files < 1 or max_line < 1:
            raise ValueError("max_files and max_line must be at least 1")
        self.path = os.fspath(path)
        self.max_size, self.max_files, self.max_line = max_size, max_files, max_line
        self._clock = clock or time.time_ns
        self._pending = {}
        self._fd = self._create(self.path, os.O_APPEND)
        self._size = os.fstat(self._fd).st_size

    @staticmethod
    def _create(path, flags):
        return os.open(path, os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC | flags, 0o640)

    def write(self, stream, data):
        """Logs a chunk read from the program's ``stream`` (``stdout``, ``stderr``)."""
        if not data:
            return
        *lines, rest = (self._pending.pop(stream, b"") + bytes(data)).split(b"\n")
        for line in lines:
            self._line(stream, line)
        m, i = self.max_line, 0
        while len(rest) - i >= m:
            self._record(stream, b"P", rest[i:i + m])
            i += m
        if i < len(rest):
            self._pending[stream] = rest[i:]

    def syslog(self, facility, severity, text, *, tag=""):
        """Logs a /dev/log message (:func:`hutch.keeper.syslog.parse`'s parts)."""
        head = f"{facility}.{severity} {tag}: " if tag else f"{facility}.{severity} "
        for line in text.split("\n"):
            self._line("syslog", (head + line).encode("utf-8", "backslashreplace"))

    def flush_partials(self):
        """Writes every waiting piece as a P record (after quiet, and at the end)."""
        pending, self._pending = self._pending, {}
        for stream, rest in pending.items():
            self._record(stream, b"P", rest)

    def close(self):
        if self._fd is not None:
            try:
                self.flush_partials()
            finally:
                os.close(self._fd)
                self._fd = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def _line(self, stream, line):
        m, i = self.max_line, 0
        while len(line) - i > m:
            self._record(stream, b"P", line[i:i + m])
            i += m
        self._record(stream, b"F", line[i:])

    def _record(self, stream, tag, msg):
        rec = b"%s %s %s %s\n" % (format_time(self._clock()).encode(), stream.encode(), tag, msg)
        if self._size and self._size + len(rec) > self.max_size:
            self._rotate()
        view = memoryview(rec)
        while view:
            view = view[os.write(self._fd, view):]
        self._size += len(rec)

    def _rotate(self):
        p, keep = self.path, self.max_files - 1       # keep: how many .gz files
        for i, old in _rotated(p, numbered=True):
            if i >= keep:
                os.unlink(old)
        if keep:
            import gzip
            tmp = p + ".1.gz.tmp"
            with open(p, "rb") as src, open(self._create(tmp, os.O_TRUNC), "wb") as raw, \
                    gzip.GzipFile("", "wb", 6, raw, 0) as dst:
                while chunk := src.read(_CHUNK):
                    dst.write(chunk)
            for i in range(keep - 1, 0, -1):
                try:
                    os.replace(f"{p}.{i}.gz", f"{p}.{i + 1}.gz")
                except FileNotFoundError:
                    pass
            os.replace(tmp, p + ".1.gz")
        fd = self._create(p + ".new", os.O_TRUNC | os.O_APPEND)
        os.replace(p + ".new", p)
        os.close(self._fd)
        self._fd, self._size = fd, 0


def _rotated(path, numbered=False):
    """The rotated files of ``path``, oldest (highest number) first."""
    d, base = os.path.split(path)
    try:
        names = os.listdir(d or ".")
    except OSError:
        names = []
    found = sorted(((int(n[len(base) + 1:-3]), os.path.join(d, n)) for n in names
                    if n.startswith(base + ".") and n.endswith(".gz")
                    and _digits(n[len(base) + 1:-3])), reverse=True)
    return found if numbered else [f for _, f in found]


def _parse(line):
    parts = line.split(b" ", 3)
    if len(parts) == 3:
        parts.append(b"")
    if len(parts) != 4 or parts[2] not in (b"F", b"P") or not parts[1].isalpha():
        return None
    try:
        ts = parts[0].decode("ascii")
    except UnicodeDecodeError:
        return None
    ns = parse_time(ts)
    return None if ns is None else (ns, ts, parts[1].decode(), parts[2].decode(), parts[3])


def _feed(buf, chunk, since_ns):
    """The records of the complete lines in ``buf + chunk``, and what is left."""
    *lines, buf = (buf + chunk).split(b"\n")
    recs = [r for r in map(_parse, lines) if r is not None]
    return ([r for r in recs if r[0] >= since_ns] if since_ns else recs), buf


def _gz_records(path, since_ns=None):
    import gzip
    import zlib
    buf = b""
    try:
        with gzip.open(path, "rb") as f:
            while chunk := f.read(_CHUNK):
                recs, buf = _feed(buf, chunk, since_ns)
                yield from recs
    except (OSError, EOFError, zlib.error):
        pass                              # rotated away, or damaged: what was read


def _drain(fd, pos, since_ns=None):
    """The records of ``fd``'s complete lines from ``pos``, and the end of the last."""
    out, buf, end = [], b"", pos
    while chunk := os.pread(fd, _CHUNK, end):
        end += len(chunk)
        recs, buf = _feed(buf, chunk, since_ns)
        out += recs
    return out, end - len(buf)


def _open(path):
    """A read-only fd on ``path`` and its (device, inode), or (None, None)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError:
        return None, None
    st = os.fstat(fd)
    return fd, (st.st_dev, st.st_ino)


def read_records(path, since_ns=None):
    """Every record ``(ts_ns, ts_text, stream, tag, message)``, oldest file first,
    those at ``since_ns`` or later if given.  Nothing if there is no log."""
    path = os.fspath(path)
    fd, _ = _open(path)                   # before the listing: rotation duplicates
    try:
        for old in _rotated(path):
            yield from _gz_records(old, since_ns)
        if fd is not None:
            buf, pos = b"", 0
            while chunk := os.pread(fd, _CHUNK, pos):
                pos += len(chunk)
                recs, buf = _feed(buf, chunk, since_ns)
                yield from recs
    finally:
        if fd is not None:
            os.close(fd)


def _group(records):
    """Logical lines ``(records, first)`` in the order they end, the unfinished
    last; ``first``: the first of its stream here (it may have begun earlier)."""
    pending, seen = {}, set()
    for r in records:
        pending.setdefault(r[2], []).append(r)
        if r[3] == "F":
            yield pending.pop(r[2]), r[2] not in seen
            seen.add(r[2])
    for stream, recs in pending.items():
        yield recs, stream not in seen


def _tail(path, n, fd):
    recs, end = _drain(fd, 0) if fd is not None else ([], 0)
    older = _rotated(path)
    while True:
        lines = list(_group(recs))[-n:] if n > 0 else []
        if not older or (len(lines) == n and not any(first for _, first in lines)):
            return [r for group, _ in lines for r in group], end
        recs = list(_gz_records(older.pop())) + recs


def tail(path, n):
    """The records of the last ``n`` logical lines, for :func:`format_text`: the
    lines in the order they ended, the records of each together."""
    fd, _ = _open(os.fspath(path))
    try:
        return _tail(os.fspath(path), n, fd)[0]
    finally:
        if fd is not None:
            os.close(fd)


def follow(path, stop, poll=0.1, offset=None, history=None, since_ns=None):
    """A generator of the records appended to ``path`` from ``offset`` (default:
    its end now, when follow is called), through rotations, until ``stop()`` is
    true and everything is read.  ``history`` first yields the old records without
    a gap: ``"all"``, or a number of last logical lines as :func:`tail`.  If ``path``
    is missing, it waits for it.  A poll that misses two rotations misses the file
    between them (``poll`` is short and files are big, so it needs a stalled reader)."""
    path = os.fspath(path)
    fd, ident = _open(path)
    backlog, pos = [], 0
    if fd is not None:
        try:
            if history == "all":
                for old in _rotated(path):
                    backlog += _gz_records(old, since_ns)
                recs, pos = _drain(fd, 0, since_ns)
                backlog += recs
            elif history is not None:
                backlog, pos = _tail(path, history, fd)
            else:
                pos = os.fstat(fd).st_size if offset is None else offset
        except BaseException:
            os.close(fd)
            raise
    return _follow(path, stop, poll, fd, ident, pos, backlog, since_ns)


def _follow(path, stop, poll, fd, ident, pos, backlog, since_ns):
    yield from backlog
    buf, stopping = b"", False
    try:
        while True:
            chunk = os.pread(fd, _CHUNK, pos) if fd is not None else b""
            if chunk:
                pos += len(chunk)
                recs, buf = _feed(buf, chunk, since_ns)
                yield from recs
                continue
            try:
                st = os.stat(path)
            except FileNotFoundError:
                st = None
            if st is not None and (st.st_dev, st.st_ino) != ident:
                if fd is not None:        # rotated: the writer is done with the old one
                    recs, _ = _drain(fd, pos - len(buf), since_ns)
                    yield from recs
                    os.close(fd)
                fd, ident = _open(path)
                pos, buf = 0, b""
                continue
            if st is not None and st.st_size < pos:
                pos, buf = 0, b""         # truncated in place
                continue
            if stopping:
                return
            stopping = stop()             # then one more pass for the last writes
            if not stopping:
                time.sleep(poll)
    finally:
        if fd is not None:
            os.close(fd)


def _logical(records, streams):
    if streams is not None:
        streams = set(streams)
        records = (r for r in records if r[2] in streams)
    for recs, _ in _group(records):
        yield recs[0][1], recs[0][2], b"".join(r[4] for r in recs)


def iter_text(records, timestamps=False, streams=None):
    """:func:`format_text` line by line, as they end (for :func:`follow`)."""
    for ts, _, msg in _logical(records, streams):
        yield b"%s %s\n" % (ts.encode(), msg) if timestamps else msg + b"\n"


def format_text(records, timestamps=False, streams=None):
    """One line per logical line (the P pieces joined to their F), optionally
    prefixed by its first piece's time, of the ``streams`` named (default: all).
    A line still unfinished at the end is written with a newline too."""
    return b"".join(iter_text(records, timestamps, streams))


def iter_json(records, timestamps=True, streams=None):
    """:func:`format_json` line by line, as they end (for :func:`follow`)."""
    from hutch.jsonlite import dumps
    for ts, stream, msg in _logical(records, streams):
        obj = {"time": ts, "stream": stream, "log": msg.decode("utf-8", "replace")}
        yield dumps(obj).encode() + b"\n"


def format_json(records, timestamps=True, streams=None):
    """One JSON object per logical line, ``{"time", "stream", "log"}`` (the text
    without its newline); ``timestamps`` is ignored: the time is always there."""
    return b"".join(iter_json(records, timestamps, streams))
