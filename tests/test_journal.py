"""The event journal (SQLite, WAL) with each kind of damage injected for real into its file.

Each case: the queue opens (no exception), logs a WARNING with what it counted, keeps every event
it can still read, and starts a new ``stream`` whenever the numbering is in doubt. Unusable state
folders raise :class:`~edge.comms.events.JournalError` naming the folder (the daemon's preflight
turns that into exit status 2, see ``tests/test_config_malformed.py``).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import sqlite3
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from edge.comms.events import (
    BEHIND_NAME,
    JOURNAL_NAME,
    LEGACY_JOURNAL_NAME,
    EventQueue,
    JournalError,
    check_state_dir,
)


def _ev(n: int) -> dict[str, Any]:
    return {"v": 1, "device_id": "dev", "kind": "entered", "track_id": n, "other_id": None,
            "ts": 1.0, "t_source": 1.0, "frame_id": n}


def killed(q: EventQueue) -> None:
    """What the OS does to the queue's files when its process is SIGKILLed: it closes them
    (no clean-stop mark, no final checkpoint), releasing the lock."""
    q._closing.set()
    if q._db is not None:
        q._db.close()
    if q._lockfile is not None:
        q._lockfile.close()


def _journal(folder: Path, n: int = 6, acked: tuple[int, ...] = (1,)) -> str:
    """A journal with events 1..n, ``acked`` acknowledged, closed cleanly; returns the stream."""
    q = EventQueue(folder)
    for i in range(n):
        q.add(_ev(i))
    q.ack_many(acked)
    q.close()
    return q.stream


def _set_body(folder: Path, seq: int, body: bytes, fix_crc: bool = True) -> None:
    db = sqlite3.connect(folder / JOURNAL_NAME)
    crc = zlib.crc32(body) if fix_crc else db.execute(
        "SELECT crc FROM events WHERE seq = ?", (seq,)).fetchone()[0]
    db.execute("UPDATE events SET body = CAST(? AS TEXT), crc = ? WHERE seq = ?",
               (body, crc, seq))
    db.commit()
    db.close()


def _body(seq: int, stream: str, **extra: Any) -> dict[str, Any]:
    return {**_ev(seq - 1), "seq": seq, "stream": stream, **extra}


def _warnings(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


# Damage inside one row: the row is skipped and counted, the others are kept.
ROW_DAMAGE: dict[str, Callable[[Path, str], None]] = {
    "non-UTF-8 bytes": lambda f, s: _set_body(f, 3, b'{"seq": 3, "kind": "\xff\xfe"}'),
    "seq Infinity": lambda f, s: _set_body(f, 3, json.dumps(_body(3, s)).replace(
        '"seq": 3', '"seq": Infinity').encode()),
    "seq NaN elsewhere": lambda f, s: _set_body(f, 3, json.dumps(_body(3, s)).replace(
        '"ts": 1.0', '"ts": NaN').encode()),
    "huge seq (1e400)": lambda f, s: _set_body(f, 3, json.dumps(_body(3, s)).replace(
        '"seq": 3', '"seq": 1e400').encode()),
    "huge integer": lambda f, s: _set_body(f, 3, json.dumps(_body(3, s, track_id=10**40))
                                           .encode()),
    "not JSON": lambda f, s: _set_body(f, 3, b'{"seq": 3, "kin'),
    "CRC mismatch (one byte flipped)": lambda f, s: _set_body(
        f, 3, json.dumps(_body(3, s)).replace("entered", "entereD").encode(), fix_crc=False),
    "seq differs from its key": lambda f, s: _set_body(f, 3, json.dumps(_body(4, s)).encode()),
    "not an object": lambda f, s: _set_body(f, 3, b"[3]"),
}


@pytest.mark.parametrize("kind", list(ROW_DAMAGE))
def test_a_damaged_row_is_skipped_counted_and_starts_a_new_stream(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    old = _journal(tmp_path)
    ROW_DAMAGE[kind](tmp_path, old)
    caplog.set_level(logging.WARNING)
    q = EventQueue(tmp_path)
    assert q.seqs() == [2, 4, 5, 6]  # everything still readable is kept
    assert q.report.damaged == 1 and q.stream != old
    warned = _warnings(caplog)
    assert "seq 3 is damaged" in warned and "1 damaged event(s) skipped" in warned
    assert "new stream" in warned
    assert q.add(_ev(9))["seq"] == 7  # the numbering goes on past everything seen
    q.close()
    again = EventQueue(tmp_path)  # the damage was removed: the next start is clean
    assert again.report.damaged == 0 and again.stream == q.stream
    again.close()


def _truncate(f: Path, s: str) -> None:
    data = (f / JOURNAL_NAME).read_bytes()
    (f / JOURNAL_NAME).write_bytes(data[: len(data) // 2])


def _garble_middle(f: Path, s: str) -> None:
    p = f / JOURNAL_NAME
    data = bytearray(p.read_bytes())
    mid = len(data) // 2
    data[mid: mid + 1500] = os.urandom(1500)
    data[:100] = b"\xaa" * 100  # the header too: SQLite itself must notice
    p.write_bytes(bytes(data))


def _zeros(f: Path, s: str) -> None:
    (f / JOURNAL_NAME).write_bytes(b"\0" * 8192)


def _text(f: Path, s: str) -> None:
    (f / JOURNAL_NAME).write_text("this is not a database\n")


FILE_DAMAGE: dict[str, Callable[[Path, str], None]] = {
    "tail cut (file truncated to half)": _truncate,
    "garbage over the header and middle": _garble_middle,
    "zeros": _zeros,
    "a text file": _text,
}


@pytest.mark.parametrize("kind", list(FILE_DAMAGE))
def test_an_unreadable_journal_is_set_aside_and_a_new_stream_begins(
        tmp_path: Path, kind: str, caplog: pytest.LogCaptureFixture) -> None:
    old = _journal(tmp_path)
    FILE_DAMAGE[kind](tmp_path, old)
    caplog.set_level(logging.WARNING)
    q = EventQueue(tmp_path)
    assert q.report.lost_unknown and q.stream != old
    warned = _warnings(caplog)
    assert "set aside" in warned and "an unknown number lost" in warned
    assert "new stream" in warned
    aside = [p.name for p in tmp_path.iterdir() if ".damaged-" in p.name]
    assert any(n.startswith(JOURNAL_NAME + ".damaged-") for n in aside)
    assert q.add(_ev(0))["stream"] == q.stream
    q.close()
    assert EventQueue(tmp_path).stream == q.stream  # the new journal is healthy


def test_garbage_appended_to_the_wal_loses_no_committed_event(tmp_path: Path) -> None:
    q = EventQueue(tmp_path)
    for i in range(4):
        q.add(_ev(i))
    # The files as a crash leaves them (closing the last connection would fold the WAL in).
    crash = tmp_path / "crash"
    crash.mkdir()
    for name in (JOURNAL_NAME, JOURNAL_NAME + "-wal"):
        shutil.copy(tmp_path / name, crash / name)
    killed(q)
    wal = crash / (JOURNAL_NAME + "-wal")
    assert wal.stat().st_size > 0  # the events are in the WAL; now its tail is damaged
    with open(wal, "ab") as f:
        f.write(os.urandom(5000))
    q2 = EventQueue(crash)
    # SQLite ignores WAL frames whose checksums fail: every committed event is there. (The
    # stream is new only because the copy is another file: see the replaced-journal test.)
    assert q2.seqs() == [1, 2, 3, 4] and q2.report.damaged == 0
    q2.close()


def test_an_unclean_stop_with_relaxed_durability_starts_a_new_stream(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    q = EventQueue(tmp_path, sync_ms=50)
    q.add(_ev(0))
    q.add(_ev(1))
    killed(q)  # or a power cut: events after the last sync may be gone from the disk
    caplog.set_level(logging.WARNING)
    q2 = EventQueue(tmp_path, sync_ms=50)
    assert q2.seqs() == [1, 2] and q2.stream != q.stream
    assert "did not stop cleanly" in _warnings(caplog)
    q2.close()
    q3 = EventQueue(tmp_path, sync_ms=50)  # after a clean stop the numbering is trusted
    assert q3.stream == q2.stream
    killed(q3)
    q4 = EventQueue(tmp_path)  # durable now, but the run that was cut was not
    assert q4.stream != q3.stream
    killed(q4)
    q5 = EventQueue(tmp_path, sync_ms=50)  # the run that was cut was durable: no doubt
    assert q5.stream == q4.stream
    q5.close()


def test_a_replaced_journal_file_starts_a_new_stream(tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    old = _journal(tmp_path, n=3, acked=())
    backup = tmp_path / "backup.db"
    shutil.copy(tmp_path / JOURNAL_NAME, backup)
    q = EventQueue(tmp_path)
    q.add(_ev(3))  # seq 4 goes out under the old stream ...
    q.close()
    os.replace(backup, tmp_path / JOURNAL_NAME)  # ... then an older copy is restored
    caplog.set_level(logging.WARNING)
    q2 = EventQueue(tmp_path)
    assert q2.stream != old and "replaced" in _warnings(caplog)
    assert q2.add(_ev(4))["seq"] == 4  # seq 4 again, but under a new stream: unique
    q2.close()


def test_a_deleted_journal_gets_a_fresh_stream(tmp_path: Path) -> None:
    old = _journal(tmp_path)
    (tmp_path / JOURNAL_NAME).unlink()
    q = EventQueue(tmp_path)
    assert q.stream != old and q.seqs() == []
    q.close()


# ------------------------------------------------------------------ previous-format journal

def _legacy(folder: Path, lines: list[bytes]) -> None:
    (folder / LEGACY_JOURNAL_NAME).write_bytes(b"\n".join(lines) + b"\n")


def test_a_clean_legacy_journal_is_migrated_with_its_numbering(tmp_path: Path) -> None:
    _legacy(tmp_path, [json.dumps({"meta": {"stream": "abc123", "next_seq": 5}}).encode(),
                       json.dumps({"event": _body(5, "abc123")}).encode(),
                       json.dumps({"event": _body(6, "abc123")}).encode(),
                       json.dumps({"ack": 5}).encode()])
    q = EventQueue(tmp_path)
    assert q.stream == "abc123" and q.seqs() == [6] and q.report.migrated == 1
    assert q.add(_ev(0))["seq"] == 7
    q.close()
    assert not (tmp_path / LEGACY_JOURNAL_NAME).exists()
    assert (tmp_path / (LEGACY_JOURNAL_NAME + ".migrated")).exists()


def test_a_damaged_legacy_journal_keeps_what_it_can_and_starts_a_new_stream(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    s = "abc123"
    _legacy(tmp_path, [json.dumps({"meta": {"stream": s, "next_seq": 1}}).encode(),
                       json.dumps({"event": _body(1, s)}).encode(),
                       b'{"event": {"seq": 2, "kin',  # cut in half, in the middle
                       b'{"event": {"seq": Infinity}}',
                       b'{"event": "\xff\xfe"}',
                       json.dumps({"event": _body(5, s)}).encode()])
    caplog.set_level(logging.WARNING)
    q = EventQueue(tmp_path)
    assert q.seqs() == [1, 5]  # the 16-events-lost-after-a-torn-line bug is gone
    assert q.report.damaged == 3 and q.stream != s
    warned = _warnings(caplog)
    assert "3 damaged line(s) skipped" in warned and "new stream" in warned
    assert q.add(_ev(0))["seq"] == 6
    q.close()


# ------------------------------------------------------------------------ unusable folders

@pytest.mark.parametrize(("name", "make", "why"), [
    ("a file", lambda t: (t / "f").write_text("x") and t / "f", "not a folder"),
    ("under a file", lambda t: (t / "f").write_text("x") and t / "f" / "sub", "not a folder"),
    ("/dev/null", lambda t: Path("/dev/null"), "pseudo file system"),
    ("under /proc", lambda t: Path("/proc/edge-pose"), "pseudo file system"),
    ("journal is a folder", lambda t: (t / JOURNAL_NAME).mkdir() or t, "not a regular file"),
    ("journal is /dev/null", lambda t: (t / JOURNAL_NAME).symlink_to("/dev/null") or t,
     "not a regular file"),
    ("legacy journal is a folder", lambda t: (t / LEGACY_JOURNAL_NAME).mkdir() or t,
     "not a regular file"),
])
def test_an_unusable_state_folder_is_a_clear_error(tmp_path: Path, name: str,
                                                   make: Callable[[Path], Path],
                                                   why: str) -> None:
    folder = make(tmp_path)
    with pytest.raises(JournalError, match=why):
        check_state_dir(folder)
    with pytest.raises(JournalError, match=why):
        EventQueue(folder)


def test_a_second_daemon_on_the_same_journal_is_a_clear_error(tmp_path: Path) -> None:
    q = EventQueue(tmp_path)
    try:
        with pytest.raises(JournalError, match="in use by another edge-pose"):
            EventQueue(tmp_path)
    finally:
        q.close()
    EventQueue(tmp_path).close()  # free again once the first one closed


# ------------------------------------------------------------------------ a full disk

_FULL = """
import json, os, resource, signal, sys
from pathlib import Path
from edge.comms.events import EventQueue, JournalError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # EFBIG, as ENOSPC on a full disk
folder, how = Path(sys.argv[1]), sys.argv[2]
def ev(n):
    return {"v": 1, "device_id": "dev", "kind": "entered", "track_id": n, "other_id": None,
            "ts": 1.0, "t_source": 1.0, "frame_id": n, "pad": "x" * 300}
def limit(n):
    resource.setrlimit(resource.RLIMIT_FSIZE, (n, resource.RLIM_INFINITY))
if how.startswith("at open"):
    limit(int(how.split()[-1]))
    try:
        EventQueue(folder)
    except JournalError as e:
        print(json.dumps({"error": str(e)}))
    sys.exit()
q = EventQueue(folder)
for i in range(5):
    q.add(ev(i))
limit(max(p.stat().st_size for p in folder.iterdir()))  # the disk is full from here
published = [q.add(ev(i))["seq"] for i in range(5, 100)]
errors = q.write_errors
if how == "room again, then killed":
    limit(resource.RLIM_INFINITY)
    published.append(q.add(ev(100))["seq"])
    print(json.dumps({"stream": q.stream, "published": published, "errors": errors}),
          flush=True)
    os._exit(0)  # SIGKILL: no clean stop
q.close()  # a stop on the full disk
print(json.dumps({"stream": q.stream, "published": published, "errors": errors}))
"""


@pytest.mark.parametrize("how", ["room again, then killed", "stopped while full"])
def test_a_full_disk_never_loses_numbering(tmp_path: Path, how: str) -> None:
    """Events added while the disk is full are kept in memory; once a write passes again the
    file takes all of them (they used to stay out of it for good: a crash lost them); a stop
    while still full leaves a mark, and the next start begins a new stream (it used to carry
    on the old one from the last number on disk: (stream, seq) named two events)."""
    run = subprocess.run([sys.executable, "-c", _FULL, str(tmp_path), how],
                         capture_output=True, text=True, timeout=60, check=True)
    child = json.loads(run.stdout.splitlines()[-1])
    assert child["errors"] > 0, run.stderr  # the limit did refuse writes
    q = EventQueue(tmp_path)
    try:
        if how == "room again, then killed":
            assert "held in memory are journalled" in run.stderr
            assert q.stream == child["stream"] and not q.report.new_stream
            assert list(q.seqs()) == list(range(1, 102))  # nothing acked: every event is back
        else:
            assert "could not be saved" in run.stderr
            assert q.stream != child["stream"]
            assert "could not write every event" in q.report.new_stream
            assert not (tmp_path / BEHIND_NAME).exists()
    finally:
        q.close()


@pytest.mark.parametrize(("room", "says"), [(0, "is the disk full"),
                                            (32768, "cannot write it: disk I/O error")])
def test_a_full_disk_at_start_names_the_real_error(tmp_path: Path, room: int,
                                                   says: str) -> None:
    """No room for the journal's files, or for its first write. SQLite rolls a failed write
    back by itself; the ROLLBACK after it failed, and its 'no transaction is active' replaced
    the real error in the message."""
    run = subprocess.run([sys.executable, "-c", _FULL, str(tmp_path), f"at open {room}"],
                         capture_output=True, text=True, timeout=60, check=True)
    error = json.loads(run.stdout)["error"]
    assert says in error and "no transaction" not in error, error


def test_a_journal_of_another_format_or_layout_is_set_aside(tmp_path: Path) -> None:
    """A newer version's journal (format 99) was read as format 1 and rewritten; one of
    another layout stopped the start with 'no such column: seq' (exit 1). Both are set aside
    (kept, each under its own name though they come within one second) and a new stream
    begins; what can be read is salvaged."""
    stream = _journal(tmp_path, n=3, acked=())
    db = sqlite3.connect(tmp_path / JOURNAL_NAME)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'format'")
    db.commit()
    db.close()
    q = EventQueue(tmp_path)
    assert q.stream != stream and q.report.lost_unknown and q.seqs() == [1, 2, 3]
    q.close()
    db = sqlite3.connect(tmp_path / JOURNAL_NAME)
    db.execute("DROP TABLE events")
    db.execute("CREATE TABLE events (x TEXT)")
    db.commit()
    db.close()
    q = EventQueue(tmp_path)
    assert q.report.lost_unknown and q.seqs() == []
    q.close()
    aside = sorted(p.name for p in tmp_path.glob(f"{JOURNAL_NAME}.damaged-*")
                   if not p.name.endswith(("-wal", "-shm")))
    assert len(aside) == 2, aside


def test_a_next_seq_of_non_ascii_digits_is_unreadable_not_a_crash(tmp_path: Path) -> None:
    """'\u00b2' passes str.isdigit() and then int() raised ValueError at the start."""
    stream = _journal(tmp_path, n=2, acked=())
    db = sqlite3.connect(tmp_path / JOURNAL_NAME)
    db.execute("UPDATE meta SET value = '\u00b2' WHERE key = 'next_seq'")
    db.commit()
    db.close()
    q = EventQueue(tmp_path)
    try:
        assert q.stream != stream and "next_seq is unreadable" in q.report.new_stream
        assert q.next_seq == 3
    finally:
        q.close()
