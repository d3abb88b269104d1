"""The keeper's log files (CRI format, rotation, the readers of ``hutch logs``) and
its /dev/log parser, on real files in a temporary directory."""

import calendar
import errno
import gzip
import json
import os
import threading
import time

import pytest
from hypothesis import given, settings, strategies as st

from hutch.errors import HutchError
from hutch.keeper import logfile as L
from hutch.keeper import syslog as S

T0 = calendar.timegm((2026, 12, 1, 13, 2, 40)) * 10**9 + 123456789
TS = "2026-12-01T13:02:40.123456789Z"


class Clock:
    """A fixed time, moved by hand (or by ``step`` ns at every reading)."""

    def __init__(self, t=T0, step=0):
        self.t, self.step = t, step

    def __call__(self):
        t, self.t = self.t, self.t + self.step
        return t


def content(path):
    with open(path, "rb") as f:
        return f.read()


def messages(records):
    return [r[4] for r in records]


# --- times -------------------------------------------------------------------------

def test_time_is_rfc3339_utc_with_nine_digits_and_parses_back():
    assert L.format_time(T0) == TS
    assert L.format_time(0) == "1970-01-01T00:00:00.000000000Z"
    assert L.parse_time(TS) == T0
    for t in (0, 951782400 * 10**9 + 5, 4107542399 * 10**9 + 999999999, T0):  # 2000-02-29
        assert L.parse_time(L.format_time(t)) == t


@pytest.mark.parametrize("text,ns", [
    ("2026-12-01T13:00:00Z", calendar.timegm((2026, 12, 1, 13, 0, 0)) * 10**9),
    ("2026-12-01T13:00:00.5Z", calendar.timegm((2026, 12, 1, 13, 0, 0)) * 10**9 + 5 * 10**8),
    ("2026-12-01T14:00:00+01:00", calendar.timegm((2026, 12, 1, 13, 0, 0)) * 10**9),
    ("2026-12-01t07:30:00.000000001-05:30", calendar.timegm((2026, 12, 1, 13, 0, 0)) * 10**9 + 1),
    ("2024-02-29T00:00:00Z", calendar.timegm((2024, 2, 29, 0, 0, 0)) * 10**9),
    ("10s", T0 - 10 * 10**9), ("5m", T0 - 300 * 10**9), ("2h", T0 - 7200 * 10**9),
    ("1h30m", T0 - 5400 * 10**9), ("500ms", T0 - 5 * 10**8), (" 90s ", T0 - 90 * 10**9),
    ("1764594000", 1764594000 * 10**9), ("1764594000.25", 1764594000 * 10**9 + 25 * 10**7),
])
def test_since_accepts_rfc3339_durations_and_unix_seconds(text, ns):
    assert L.parse_since(text, T0) == ns


@pytest.mark.parametrize("bad", ["", "abc", "5x", "h", "1h-", "-5m", "1.5h", "10 s",
                                 "2026-13-01T00:00:00Z", "2026-02-30T00:00:00Z",
                                 "2025-02-29T00:00:00Z", "2026-12-01T13:00:00",
                                 "2026-12-01T24:00:00Z", "2026-12-01T13:00:00+25:00",
                                 "2026-12-01T13:00:00.Z", "٢٠٢٦-12-01T13:00:00Z", "5\nm"])
def test_since_rejects_anything_else_in_one_line(bad):
    with pytest.raises(HutchError) as e:
        L.parse_since(bad, T0)
    assert e.value.errno == errno.EINVAL
    assert "\n" not in str(e.value) and str(e.value).startswith("invalid time")


# --- the writer ----------------------------------------------------------------------

def test_complete_lines_are_f_records_and_a_piece_waits_for_the_rest(tmp_path):
    p = tmp_path / "log"
    with L.LogWriter(p, clock=Clock()) as w:
        w.write("stdout", b"hello\nwor")
        w.write("stderr", b"oops\n")
        assert content(p) == (f"{TS} stdout F hello\n{TS} stderr F oops\n").encode()
        w.write("stdout", b"ld\n\nlast")
    assert content(p) == (f"{TS} stdout F hello\n{TS} stderr F oops\n"
                          f"{TS} stdout F world\n{TS} stdout F \n"
                          f"{TS} stdout P last\n").encode()


def test_flush_partials_writes_p_and_the_rest_is_its_own_record(tmp_path):
    p = tmp_path / "log"
    clock = Clock(step=1)
    w = L.LogWriter(p, clock=clock)
    w.write("stdout", b"password: ")
    w.flush_partials()
    w.flush_partials()                    # nothing waits: nothing written
    w.write("stdout", b"ok\n")
    w.write("stderr", b"no newline")
    w.close()
    w.close()
    t = [L.format_time(T0 + i) for i in range(3)]
    assert content(p) == (f"{t[0]} stdout P password: \n{t[1]} stdout F ok\n"
                          f"{t[2]} stderr P no newline\n").encode()
    assert L.format_text(L.read_records(p)) == b"password: ok\nno newline\n"


def test_lines_longer_than_max_line_are_cut_in_p_pieces_ending_with_f(tmp_path):
    p = tmp_path / "log"
    with L.LogWriter(p, max_line=4, clock=Clock()) as w:
        w.write("stdout", b"abcdefghij\nabcd\n")
        w.write("stdout", b"0123456789")     # no newline: full pieces go at once
        assert [r[3:] for r in L.read_records(p)][-2:] == [("P", b"0123"), ("P", b"4567")]
        w.write("stdout", b"\n")
        w.write("stderr", b"wx")
        w.write("stderr", b"yz")               # the piece reaches max_line: P
        w.write("stderr", b"\n")               # ends the logical line: an empty F
    assert [r[2:] for r in L.read_records(p)] == [
        ("stdout", "P", b"abcd"), ("stdout", "P", b"efgh"), ("stdout", "F", b"ij"),
        ("stdout", "F", b"abcd"),
        ("stdout", "P", b"0123"), ("stdout", "P", b"4567"), ("stdout", "F", b"89"),
        ("stderr", "P", b"wxyz"), ("stderr", "F", b"")]
    assert L.format_text(L.read_records(p)) == b"abcdefghij\nabcd\n0123456789\nwxyz\n"


def test_invalid_utf8_survives_as_bytes(tmp_path):
    p = tmp_path / "log"
    raw = b"\xff\xfe bad \xc3( \x00\r\x1b[31mred"
    with L.LogWriter(p, clock=Clock()) as w:
        w.write("stdout", raw + b"\n")
    assert content(p) == f"{TS} stdout F ".encode() + raw + b"\n"
    assert messages(L.read_records(p)) == [raw]
    assert L.format_text(L.read_records(p)) == raw + b"\n"
    obj = json.loads(L.format_json(L.read_records(p)))
    assert obj["log"] == raw.decode("utf-8", "replace")


def test_one_os_write_per_record(tmp_path, monkeypatch):
    p = tmp_path / "log"
    w = L.LogWriter(p, max_line=3, clock=Clock())
    calls = []
    real = os.write

    def write(fd, data):
        calls.append(bytes(data))
        return real(fd, data)
    monkeypatch.setattr(os, "write", write)
    w.write("stdout", b"a\nbcdefg\nhi")
    w.close()
    monkeypatch.undo()
    assert len(calls) == 4 and b"".join(calls) == content(p)


def test_syslog_is_one_record_with_names_and_tag(tmp_path):
    p = tmp_path / "log"
    with L.LogWriter(p, clock=Clock()) as w:
        w.syslog("user", "info", "hello", tag="app")
        w.syslog("local3", "err", "no tag")
        w.syslog("daemon", "debug", "two\nlines", tag="d[7]")
        w.syslog(*S.parse(b"<13>Dec  1 13:02:40 app: hello")[:2], "x", tag="")
    assert content(p) == (f"{TS} syslog F user.info app: hello\n"
                          f"{TS} syslog F local3.err no tag\n"
                          f"{TS} syslog F daemon.debug d[7]: two\n"
                          f"{TS} syslog F daemon.debug d[7]: lines\n"
                          f"{TS} syslog F user.notice x\n").encode()


def test_the_writer_appends_to_an_existing_log(tmp_path):
    p = tmp_path / "log"
    with L.LogWriter(p, clock=Clock()) as w:
        w.write("stdout", b"one\n")
    with L.LogWriter(p, clock=Clock()) as w:
        w.write("stdout", b"two\n")
    assert messages(L.read_records(p)) == [b"one", b"two"]


# --- rotation ------------------------------------------------------------------------

def write_lines(p, n, max_size=200, max_files=3, start=0):
    with L.LogWriter(p, max_size=max_size, max_files=max_files, clock=Clock(step=1)) as w:
        for i in range(start, start + n):
            w.write("stdout" if i % 3 else "stderr", b"line %d\n" % i)


def test_rotation_keeps_max_files_compressed_and_the_newest_plain(tmp_path):
    p = tmp_path / "log"
    write_lines(p, 60)                    # 50 bytes a record, 4 a file
    assert sorted(os.listdir(tmp_path)) == ["log", "log.1.gz", "log.2.gz"]
    files = [p.with_name("log.2.gz"), p.with_name("log.1.gz")]
    texts = []
    for f in files:
        assert content(f)[:2] == b"\x1f\x8b"
        with gzip.open(f) as g:
            texts.append(g.read())
    texts.append(content(p))
    assert all(0 < len(t) <= 200 for t in texts)
    lines = [line.rsplit(b" ", 1)[1] for t in texts for line in t.splitlines()]
    assert lines == [b"%d" % i for i in range(48, 60)]
    assert messages(L.read_records(p)) == [b"line %d" % i for i in range(48, 60)]


def test_rotation_with_one_file_truncates_and_drops_extra_old_files(tmp_path):
    p = tmp_path / "log"
    write_lines(p, 30, max_files=5)
    assert sorted(os.listdir(tmp_path)) == ["log"] + [f"log.{i}.gz" for i in range(1, 5)]
    write_lines(p, 10, max_files=2, start=30)
    assert sorted(os.listdir(tmp_path)) == ["log", "log.1.gz"]
    write_lines(p, 10, max_files=1, start=40)
    assert os.listdir(tmp_path) == ["log"]
    assert messages(L.read_records(p)) == [b"line %d" % i for i in range(48, 50)]


def test_a_record_larger_than_max_size_still_goes_in_a_file_of_its_own(tmp_path):
    p = tmp_path / "log"
    with L.LogWriter(p, max_size=50, max_files=3, clock=Clock()) as w:
        w.write("stdout", b"x" * 100 + b"\n")
        w.write("stdout", b"y\n")
    assert messages(L.read_records(p)) == [b"x" * 100, b"y"]
    assert len(content(p)) < 50 and len(os.listdir(tmp_path)) == 2


# --- readers -------------------------------------------------------------------------

def test_read_records_skips_malformed_lines_and_filters_by_time(tmp_path):
    p = tmp_path / "log"
    t1 = L.format_time(T0 + 10**9)
    p.write_bytes(f"{TS} stdout F a\n".encode() + b"garbage\n\n" +
                  f"{TS} stdout X bad tag\nnot-a-time stdout F b\n{TS} std\xc3\xa9 F c\n"
                  f"{TS} stdout F\n2026-12-01T13:02:40Z stderr F short time\n"
                  f"{t1} stderr F later\n{t1} stdout F unterminated".encode())
    p.with_name("log.1.gz").write_bytes(b"not gzip at all")
    with gzip.open(p.with_name("log.2.gz"), "wb") as g:
        g.write(f"{TS} stdout F oldest\n".encode())
    assert [r[2:] for r in L.read_records(p)] == [
        ("stdout", "F", b"oldest"), ("stdout", "F", b"a"), ("stdout", "F", b""),
        ("stderr", "F", b"short time"), ("stderr", "F", b"later")]
    assert [r[0] for r in L.read_records(p)][-2:] == [T0 - 123456789, T0 + 10**9]
    assert messages(L.read_records(p, since_ns=T0 + 1)) == [b"later"]
    assert list(L.read_records(tmp_path / "none")) == []


def test_format_text_and_json_join_pieces_per_stream(tmp_path):
    p = tmp_path / "log"
    clock = Clock(step=10**9)
    with L.LogWriter(p, clock=clock) as w:
        w.write("stdout", b"hel")
        w.flush_partials()
        w.write("stderr", b"err 1\n")
        w.write("stdout", b"lo\n")
        w.syslog("user", "info", "hi", tag="app")
        w.write("stderr", b"dangling")
    recs = list(L.read_records(p))
    t = [L.format_time(T0 + i * 10**9) for i in range(5)]
    assert L.format_text(recs) == b"err 1\nhello\nuser.info app: hi\ndangling\n"
    assert L.format_text(recs, timestamps=True, streams=["stdout", "syslog"]) == (
        f"{t[0]} hello\n{t[3]} user.info app: hi\n").encode()
    assert L.format_text(recs, streams=("stderr",)) == b"err 1\ndangling\n"
    assert L.format_json(recs, streams={"stdout", "stderr"}).splitlines() == [
        b'{"time": "%s", "stream": "stderr", "log": "err 1"}' % t[1].encode(),
        b'{"time": "%s", "stream": "stdout", "log": "hello"}' % t[0].encode(),
        b'{"time": "%s", "stream": "stderr", "log": "dangling"}' % t[4].encode()]
    assert b"".join(L.iter_text(iter(recs))) == L.format_text(recs)


def test_tail_counts_logical_lines_across_rotated_files(tmp_path):
    p = tmp_path / "log"
    with L.LogWriter(p, max_size=300, max_files=10, clock=Clock(step=1)) as w:
        w.write("stdout", b"begun in an old file, ")
        w.flush_partials()
        for i in range(20):
            w.write("stderr", b"err %d\n" % i)
        w.write("stdout", b"ended in the newest\n")
        w.write("stderr", b"partial")
    assert len(os.listdir(tmp_path)) > 3
    full = L.format_text(L.read_records(p)).splitlines(keepends=True)
    assert full[-2:] == [b"begun in an old file, ended in the newest\n", b"partial\n"]
    for n in range(len(full) + 3):
        assert L.format_text(L.tail(p, n)) == b"".join(full[max(0, len(full) - n):] if n else []), n
    assert L.tail(tmp_path / "none", 5) == []


# --- follow --------------------------------------------------------------------------

def test_follow_survives_rotations_by_a_writer_thread_and_ends_on_stop(tmp_path):
    p = tmp_path / "log"
    done = threading.Event()
    w = L.LogWriter(p, max_size=600, max_files=50)   # 12 or 13 records a file
    w.write("stdout", b"before the follower\n")
    n, got = 150, []

    def writer():
        # at most 8 records ahead of the reader: a poll never misses a whole file
        deadline = time.monotonic() + 20
        for i in range(n):
            while len(got) < i - 8 and time.monotonic() < deadline:
                time.sleep(0.0005)
            w.write("stdout" if i % 2 else "stderr", b"line %d\n" % i)
        w.close()
        done.set()

    records = L.follow(p, done.is_set, poll=0.001)
    t = threading.Thread(target=writer)
    t.start()
    try:
        for r in records:
            got.append(r)
    finally:
        t.join()
    assert len(os.listdir(tmp_path)) > 10
    assert messages(got) == [b"line %d" % i for i in range(n)]
    assert [r[2] for r in got[:2]] == ["stderr", "stdout"]


def test_follow_sees_what_was_written_just_before_stop(tmp_path):
    p = tmp_path / "log"
    w = L.LogWriter(p, max_size=120, clock=Clock())
    w.write("stdout", b"old\n")

    def stop():                            # the last write races the stop
        w.write("stdout", b"last words\n")
        w.write("stdout", b"and a rotation\n")
        w.close()
        return True
    assert messages(L.follow(p, stop, poll=0.001)) == [b"last words", b"and a rotation"]
    assert len(os.listdir(tmp_path)) == 2


def test_follow_from_an_offset_with_history_and_before_the_file_exists(tmp_path):
    p = tmp_path / "log"
    calls = []

    def stop():
        calls.append(1)
        if len(calls) == 2:
            with L.LogWriter(p, clock=Clock()) as w:
                w.write("stdout", b"first\n")
        return len(calls) > 2
    assert messages(L.follow(p, stop, poll=0.001)) == [b"first"]
    assert messages(L.follow(p, lambda: True, offset=0)) == [b"first"]
    write_lines(p, 20, max_files=10, start=1)
    everything = list(L.read_records(p))
    assert list(L.follow(p, lambda: True, history="all")) == everything
    assert L.follow(p, lambda: True, history=2, since_ns=1) is not None
    assert messages(L.follow(p, lambda: True, history=2)) == [b"line 19", b"line 20"]
    assert list(L.follow(p, lambda: True)) == []
    assert messages(L.follow(p, lambda: True, history="all", since_ns=T0 + 19)) == [
        b"line 20"]


def test_follow_restarts_a_file_truncated_in_place(tmp_path):
    p = tmp_path / "log"
    p.write_bytes(f"{TS} stdout F one\n".encode())
    state = []

    def stop():
        state.append(1)
        if len(state) == 1:
            with open(p, "r+b") as f:
                f.truncate(0)
                f.write(f"{TS} stdout F 2\n".encode())   # shorter: seen
        return len(state) > 1
    assert messages(L.follow(p, stop, poll=0.001)) == [b"2"]


# --- syslog --------------------------------------------------------------------------

@pytest.mark.parametrize("datagram,parsed", [
    # glibc syslog(3), openlog("app", LOG_PID, LOG_DAEMON)
    (b"<30>Dec  1 13:02:40 app[12]: started", ("daemon", "info", "app[12]", "started")),
    # busybox logger (musl syslog(3)): no pid
    (b"<13>Dec  1 13:02:40 app: hello", ("user", "notice", "app", "hello")),
    (b"<13>Dec 11 03:02:40 app: hello\n", ("user", "notice", "app", "hello")),
    (b"<11>app: no time", ("user", "err", "app", "no time")),
    (b"<86>sshd[77] no colon", ("authpriv", "info", "sshd[77]", "no colon")),
    (b"<0>Dec  1 13:02:40 hello world", ("kern", "emerg", "", "hello world")),
    (b"<191>x:  two spaces", ("local7", "debug", "x", " two spaces")),
    (b"<14>app: multi\nline\n", ("user", "info", "app", "multi\nline")),
    (b"<14>app: nul\0s\0\0", ("user", "info", "app", "nuls")),
    (b"<14>app: \xff bytes", ("user", "info", "app", "\\xff bytes")),
    (b"<13>", ("user", "notice", "", "")),
    # RFC 5424
    (b"<165>1 2003-10-11T22:14:15.003Z host evntslog - ID47 "
     b'[exampleSDID@32473 iut="3" eventSource="Appl]i\\"cation"][examplePriority@32473 '
     b'class="high"] \xef\xbb\xbfAn application event',
     ("local4", "notice", "evntslog", "An application event")),
    (b"<34>1 2003-10-11T22:14:15.003Z mymachine su 77 ID47 - 'su root' failed",
     ("auth", "crit", "su[77]", "'su root' failed")),
    (b"<34>1 - - su - - - \xef\xbb\xbfwith bom", ("auth", "crit", "su", "with bom")),
    (b"<34>1 - - - - -", ("auth", "crit", "", "")),
    (b"<34>1 - - app - - [unclosed x", ("auth", "crit", "app", "[unclosed x")),
    # no PRI, or a bad one
    (b"plain text\n", ("user", "notice", "", "plain text")),
    (b"<192>too big", ("user", "notice", "", "<192>too big")),
    (b"<1a>x", ("user", "notice", "", "<1a>x")),
    (b"<>x", ("user", "notice", "", "<>x")),
    (b"", ("user", "notice", "", "")),
])
def test_syslog_parses_3164_and_5424(datagram, parsed):
    assert S.parse(datagram) == parsed


def test_syslog_names_follow_the_codes():
    assert len(S.FACILITIES) == 24 and S.FACILITIES[10] == "authpriv"
    assert S.FACILITIES[15] == "solaris-cron" and S.FACILITIES[23] == "local7"
    assert S.SEVERITIES[3] == "err" and S.SEVERITIES[4] == "warning"
    for pri in range(192):
        f, s, _, _ = S.parse(b"<%d>x: y" % pri)
        assert (S.FACILITIES.index(f), S.SEVERITIES.index(s)) == divmod(pri, 8)


_pieces = st.sampled_from([b"<", b">", b"<13>", b"<165>", b"1 ", b"-", b" ", b"[", b"]",
                           b'"', b"\\", b"=", b":", b"[12]", b"Dec  1 13:02:40 ", b"\0",
                           b"\n", b"\xef\xbb\xbf", b"\xff", b"app", b"x"])


@settings(max_examples=1000, deadline=None)
@given(st.binary(max_size=200) | st.lists(_pieces, max_size=30).map(b"".join))
def test_syslog_parse_never_raises(data):
    for result in (S._parse(data), S.parse(data)):   # not even without its guard
        f, s, tag, text = result
        assert f in S.FACILITIES and s in S.SEVERITIES
        assert isinstance(tag, str) and isinstance(text, str) and "\0" not in text
