"""What programs send to a container's /dev/log, parsed for the log file.

Two formats arrive on a unix datagram socket:

- RFC 3164, as glibc's and musl's syslog(3) send it (busybox ``logger`` uses the
  latter): ``<PRI>Mmm dd hh:mm:ss TAG[PID]: text``, where the time, the ``[PID]``
  and the colon may be missing.  No host name is sent on a local socket, so none is
  looked for.  The tag is the first word when it ends with a colon (``app:``,
  ``app[12]:``) or has the form ``NAME[PID]``; a first word like ``hello`` is text.
- RFC 5424: ``<PRI>1 TIMESTAMP HOST APP PROCID MSGID SD text``, ``-`` for a nil
  field, SD ``-`` or ``[...]`` elements (dropped), and an optional UTF-8 BOM before
  the text.  The tag is APP, with ``[PROCID]`` appended unless nil.

PRI is facility * 8 + severity.  Without a valid PRI the facility is ``user`` and the
severity ``notice`` (what syslogd assumes), and the whole datagram is the text.  NULs
and one trailing newline are removed.  Bytes that are not UTF-8 appear as ``\\xNN``.
The times sent are ignored: the keeper stamps the record when it arrives.
"""

FACILITIES = ("kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp",
              "cron", "authpriv", "ftp", "ntp", "security", "console", "solaris-cron",
              "local0", "local1", "local2", "local3", "local4", "local5", "local6", "local7")
SEVERITIES = ("emerg", "alert", "crit", "err", "warning", "notice", "info", "debug")
_MONTHS = frozenset(b"Jan Feb Mar Apr May Jun Jul Aug Sep Oct Nov Dec".split())
_BOM = b"\xef\xbb\xbf"


def _text(b):
    return b.decode("utf-8", "backslashreplace")


def parse(datagram):
    """``(facility, severity, tag, text)`` of one datagram (bytes); never raises."""
    try:
        return _parse(bytes(datagram))
    except Exception:  # a bug here must not cost the keeper or the message
        return "user", "notice", "", _text(bytes(datagram).replace(b"\0", b""))


def _parse(data):
    data = data.replace(b"\0", b"")
    if data.endswith(b"\n"):
        data = data[:-1]
    end = data.find(b">", 1, 5) if data[:1] == b"<" else -1
    digits = data[1:end] if end > 1 else b""
    if not (digits.isdigit() and int(digits) < 192):
        return "user", "notice", "", _text(data)
    pri, data = int(digits), data[end + 1:]
    head = FACILITIES[pri >> 3], SEVERITIES[pri & 7]
    if data.startswith(b"1 "):
        tail = _rfc5424(data[2:])
        if tail is not None:
            return head + tail
    return head + _rfc3164(data)


def _rfc5424(data):
    parts = data.split(b" ", 5)
    if len(parts) < 5:
        return None
    _, _, app, procid, _ = parts[:5]
    rest = parts[5] if len(parts) == 6 else b""
    if rest[:1] == b"-":
        end = 1
    elif rest[:1] == b"[":
        end = _sd_end(rest)
    else:
        end = 0                           # no SD at all: lenient, all text
    if end is None or rest[end:end + 1] not in (b"", b" "):
        end = 0                           # not structured data after all
    msg = rest[end + 1:] if end else rest
    if msg.startswith(_BOM):
        msg = msg[3:]
    tag = "" if app == b"-" else _text(app)
    if procid != b"-":
        tag += f"[{_text(procid)}]"
    return tag, _text(msg)


def _sd_end(s):
    """The index just after the SD elements that ``s`` starts with, or None."""
    i, n = 0, len(s)
    while i < n and s[i:i + 1] == b"[":
        i += 1
        quoted = False
        while i < n:
            c = s[i:i + 1]
            if quoted and c == b"\\":
                i += 1                    # \" \\ \] in a PARAM-VALUE
            elif c == b'"':
                quoted = not quoted
            elif c == b"]" and not quoted:
                break
            i += 1
        if i >= n:
            return None
        i += 1
    return i


def _rfc3164(data):
    if (len(data) >= 16 and data[:3] in _MONTHS and data[3:4] == data[6:7] == b" "
            and data[9:10] == data[12:13] == b":" and data[15:16] == b" "):
        data = data[16:]
    word, _, rest = data.partition(b" ")
    if len(word) > 1 and word.endswith(b":"):
        return _text(word[:-1]), _text(rest)
    name, _, pid = word[:-1].partition(b"[")
    if name and word.endswith(b"]") and pid.isdigit():
        return _text(word), _text(rest)
    return "", _text(data)
