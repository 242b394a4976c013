"""Events for the ``events`` topic: which tracker events are published, and their durable queue.

**Which events.** The tracker reports every track it opens, but the pipeline publishes a track
only once it is confirmed (``TrackerConfig.confirm_ticks``): a duplicate detection that is merged a
tick later never appears in any pose frame. :class:`EventFilter` therefore publishes an
``entered`` / ``reassigned`` event when the track first appears in an annotation (with the
tracker's original timestamp), and ``left`` / ``merged`` only for tracks whose arrival was
published. Subscribers thus see a consistent story: every id in a pose frame has been announced,
and every announced id eventually leaves (or is merged into an announced id).

**Delivery.** :class:`EventQueue` numbers events with a per-device sequence number ``seq`` and a
random ``stream`` id naming the numbering. An event leaves the queue only when the broker
acknowledged it (QoS 1 ``PUBACK``); until then it is kept in memory and in a write-ahead journal
in the state folder, so neither a broker outage nor a daemon restart (even SIGKILL or, with
``service.journal_sync_ms = 0``, a power cut) loses it. QoS 1 may deliver a message twice;
subscribers de-duplicate by ``(stream, seq)``, which makes delivery exactly-once from their point
of view. The queue is bounded: when full, the *oldest* event is dropped and counted (a gap in
``seq`` shows it).

**The journal** is an SQLite database in WAL mode (``events.db``; Python's standard library).
Why not a hand-written record file: SQLite's commit is atomic and checksummed (a torn write is
rolled back on the next open, never half-read), it is among the most tested pieces of software
on embedded devices, and it leaves us only the *policy* to write: what to fsync, what counts as
damage, when the numbering can no longer be trusted. Durability is ``service.journal_sync_ms``:

* ``0`` (default): ``synchronous = FULL``; :meth:`EventQueue.add` returns only after the
  event's commit reached the disk (one fsync per event; events are a few per minute).
* ``N > 0``: ``synchronous = NORMAL``; a commit reaches the operating system at once (a killed
  process loses nothing) and the disk within ``N`` ms (a checkpoint thread syncs it), so a power
  cut may lose the last ``N`` ms.

Each row also carries a CRC32 of its JSON body. On open, a row whose CRC does not match, that is
not UTF-8, not JSON, holds a non-finite or out-of-range number, or whose ``seq`` disagrees with
its key, is *damage*: it is deleted and counted. A file SQLite cannot read at all is set aside
(``events.db.damaged-<time>``), what rows can still be read are salvaged, and a new journal is
made. Whenever the numbering is in doubt - damage of any kind, a journal that is new while an
older one existed, another file in the journal's place (a restored copy), an unclean stop with
``journal_sync_ms > 0`` (the tail may be gone) - the queue starts a **new stream id**
(numbering continues from the highest ``seq`` known), so ``(stream, seq)`` never names two
different events. A WARNING says what was lost and why.

A journal of the previous format (``events.jsonl``, one JSON record a line) is migrated once:
its events are imported (damaged lines counted), and it is renamed ``events.jsonl.migrated``.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import math
import os
import secrets
import sqlite3
import stat
import threading
import time
import zlib
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from edge.annotation import Annotation
from edge.track import TrackEvent
from edge.types import Frame, is_ascii_number

logger = logging.getLogger(__name__)

EVENTS_SCHEMA_VERSION = 1
JOURNAL_NAME = "events.db"
LEGACY_JOURNAL_NAME = "events.jsonl"
LOCK_NAME = "events.lock"
#: An empty file beside the journal while it lacks events the memory held (a full disk).
BEHIND_NAME = "events.behind"
JOURNAL_FORMAT = "1"
MAX_SEQ = 2**62  # far beyond any device's life; a larger number in a journal is damage


class JournalError(RuntimeError):
    """The event journal cannot be used (the message names the file and the fix)."""


@dataclass(frozen=True)
class PendingEvent:
    """A tracker event waiting to be published, with the frame it happened in."""

    event: TrackEvent
    frame_id: int
    ts: float


class EventFilter:
    """Turns the tracker's events into published events for confirmed tracks only.

    Args:
        device_id: Put in every event.
        wall_clock: Returns epoch seconds (for ``ts``); injected for tests.
    """

    def __init__(self, device_id: str, wall_clock: Callable[[], float] = time.time) -> None:
        self.device_id = device_id
        self._now = wall_clock
        self._pending: dict[int, PendingEvent] = {}
        self._shown: set[int] = set()

    def reset(self) -> None:
        """Forgets every track (the core was reset)."""
        self._pending.clear()
        self._shown.clear()

    @property
    def shown(self) -> frozenset[int]:
        """Track ids announced and not yet gone."""
        return frozenset(self._shown)

    def _payload(self, kind: str, track_id: int, other_id: int | None, t_source: float,
                 frame: Frame, frame_id: int) -> dict[str, Any]:
        # Wall-clock time of the event: now, minus how long ago (source clock) it happened.
        age = max(0.0, frame.t_capture_ns / 1e9 - t_source)
        return {"v": EVENTS_SCHEMA_VERSION, "device_id": self.device_id, "kind": kind,
                "track_id": int(track_id), "other_id": None if other_id is None else
                int(other_id), "ts": round(self._now() - age, 6),
                "t_source": round(float(t_source), 6), "frame_id": int(frame_id)}

    def update(self, frame: Frame, annotation: Annotation, events: Iterable[TrackEvent]
               ) -> list[dict[str, Any]]:
        """Processes one tick.

        Args:
            frame: The tick's frame.
            annotation: Its annotation (the ids published in this tick).
            events: The tracker's events of this tick, in order.

        Returns:
            Event payloads (without ``seq``/``stream``), in order.
        """
        out: list[dict[str, Any]] = []
        for ev in events:
            if ev.kind in ("entered", "reassigned"):
                self._pending[ev.track_id] = PendingEvent(ev, frame.frame_id, frame.ts)
            elif ev.track_id in self._shown:
                self._shown.discard(ev.track_id)
                out.append(self._payload(ev.kind, ev.track_id, ev.other_id, ev.t, frame,
                                         frame.frame_id))
            else:
                self._pending.pop(ev.track_id, None)  # never shown: nothing to retract
        for person in annotation.payload["persons"]:
            tid = int(person["id"])
            if tid in self._shown:
                continue
            self._shown.add(tid)
            pend = self._pending.pop(tid, None)
            if pend is None:  # not seen opening (e.g. after a reset): announce it now
                out.append(self._payload("entered", tid, None, frame.t_capture_ns / 1e9, frame,
                                         frame.frame_id))
            else:
                out.append(self._payload(pend.event.kind, tid, pend.event.other_id,
                                         pend.event.t, frame, frame.frame_id))
        return out

    def leave_all(self, frame: Frame) -> list[dict[str, Any]]:
        """``left`` events for every announced track (the core is about to be reset)."""
        t = frame.t_capture_ns / 1e9
        out = [self._payload("left", tid, None, t, frame, frame.frame_id)
               for tid in sorted(self._shown)]
        self.reset()
        return out


class _Corrupt(sqlite3.DatabaseError):
    """SQLite's integrity check failed."""


def _is_damage(e: sqlite3.DatabaseError) -> bool:
    """Whether ``e`` says the file is damaged (rather than locked, unreadable, full...)."""
    return isinstance(e, _Corrupt) or getattr(e, "sqlite_errorname", "") in (
        "SQLITE_NOTADB", "SQLITE_CORRUPT") or "malformed" in str(e) or (
        "not a database" in str(e))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"non-finite number {name}")


def decode_event(body: bytes, crc: int | None = None, seq: int | None = None) -> dict[str, Any]:
    """Checks one journalled event and returns it.

    Args:
        body: The event's JSON, UTF-8.
        crc: The CRC32 stored with it (None: not checked).
        seq: The sequence number stored with it (None: not checked).

    Returns:
        The event.

    Raises:
        ValueError: The record is damaged (the message says how).
    """
    if crc is not None and zlib.crc32(body) != crc:
        raise ValueError("CRC mismatch")
    text = body.decode("utf-8")  # UnicodeDecodeError is a ValueError
    ev = json.loads(text, parse_constant=_reject_constant)
    if not isinstance(ev, dict):
        raise ValueError("not a JSON object")
    s = ev.get("seq")
    if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s < MAX_SEQ:
        raise ValueError(f"bad seq {str(s)[:40]}")
    if seq is not None and s != seq:
        raise ValueError(f"seq {s} stored under {seq}")
    if not isinstance(ev.get("stream"), str) or not isinstance(ev.get("kind"), str):
        raise ValueError("no stream or kind")
    for v in ev.values():
        if isinstance(v, float) and not math.isfinite(v):
            raise ValueError("non-finite number")
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= MAX_SEQ:
            raise ValueError(f"number out of range {str(v)[:40]}")
    return ev


def _encode(ev: dict[str, Any]) -> bytes:
    return json.dumps(ev, separators=(",", ":"), allow_nan=False).encode("utf-8")


@dataclass
class JournalReport:
    """What opening the journal found.

    Attributes:
        damaged: Records skipped as damaged (rows, legacy lines).
        lost_unknown: Whether an unknown number of events may be lost (a file set aside, a tail
            that may not have reached the disk).
        new_stream: Why a new stream id was started ("" when the old one goes on).
        migrated: Events imported from a previous-format journal.
    """

    damaged: int = 0
    lost_unknown: bool = False
    new_stream: str = ""
    migrated: int = 0


def check_state_dir(state_dir: Path) -> None:
    """Checks that the journal can live in ``state_dir`` (without creating anything).

    Raises:
        JournalError: Naming the problem and the fix.
    """
    d = Path(os.path.abspath(state_dir))
    for pseudo in ("/proc", "/sys", "/dev"):
        if d == Path(pseudo) or Path(pseudo) in d.parents:
            raise JournalError(f"state folder {d} is on the {pseudo} pseudo file system; "
                               "choose a folder on a real disk (e.g. /var/lib/edge-pose)")
    existing = d
    while not existing.exists():
        if existing.is_symlink():
            raise JournalError(f"state folder {d}: {existing} is a dangling symlink")
        existing = existing.parent
    if not existing.is_dir():
        raise JournalError(f"state folder {d}: {existing} is not a folder; remove it or "
                           "choose another service.state_dir")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise JournalError(f"state folder {d}: {existing} is not writable by this user")
    if existing == d:
        try:  # os.access trusts the mode bits; a read-only mount only shows when writing
            probe = d / f".edge-pose-probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise JournalError(f"state folder {d} is not writable: {e.strerror or e}"
                               ) from None
    for name in (JOURNAL_NAME, LEGACY_JOURNAL_NAME):
        f = d / name
        try:
            st = f.stat()
        except FileNotFoundError:
            continue
        except OSError as e:
            raise JournalError(f"event journal {f}: {e.strerror or e}") from None
        if not stat.S_ISREG(st.st_mode):
            raise JournalError(f"event journal {f} is not a regular file; move it away")
        if not os.access(f, os.R_OK | os.W_OK):
            raise JournalError(f"event journal {f} is not readable and writable by this "
                               "user; fix its owner/mode or move it away")


class EventQueue:
    """Events not yet acknowledged by the broker, in order, bounded, journalled to disk.

    Thread-safe: events are added from the core thread and acknowledged from the publisher.

    Args:
        state_dir: Folder of the journal (created); None keeps the queue in memory only.
        maxlen: Most events kept; adding to a full queue drops the oldest.
        sync_ms: Durability: 0 syncs every event to disk before :meth:`add` returns; N > 0
            syncs at most N ms later (see the module docstring).

    Raises:
        JournalError: The state folder or journal cannot be used (message names the fix).
    """

    def __init__(self, state_dir: Path | None, maxlen: int = 10_000, sync_ms: int = 0) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        if sync_ms < 0:
            raise ValueError(f"sync_ms must be >= 0, got {sync_ms}")
        self.maxlen = maxlen
        self.sync_ms = sync_ms
        self.path = None if state_dir is None else Path(state_dir) / JOURNAL_NAME
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.stream = secrets.token_hex(8)
        self.next_seq = 1
        self.dropped = 0
        self.added = 0
        self.acked = 0
        self.write_errors = 0
        self.report = JournalReport()
        self._db: sqlite3.Connection | None = None
        self._lockfile: BinaryIO | None = None
        self._dirty = False
        #: A write failed: the file lacks events the memory holds (see :meth:`_commit`).
        self._behind = False
        self._closing = threading.Event()
        self._syncer: threading.Thread | None = None
        if state_dir is not None:
            self._open(Path(state_dir))

    # ------------------------------------------------------------------------------ opening

    def _connect(self) -> sqlite3.Connection:
        assert self.path is not None
        db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False,
                             timeout=5.0)
        db.text_factory = bytes
        mode = db.execute("PRAGMA journal_mode=WAL").fetchone()[0]
        if mode not in (b"wal", "wal"):
            db.close()
            raise JournalError(f"event journal {self.path}: cannot use WAL mode (got "
                               f"{mode!r}); the state folder must be on a local disk")
        db.execute("PRAGMA synchronous=" + ("FULL" if self.sync_ms == 0 else "NORMAL"))
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT "
                   "NOT NULL)")
        db.execute("CREATE TABLE IF NOT EXISTS events (seq INTEGER PRIMARY KEY, "
                   "body BLOB NOT NULL, crc INTEGER NOT NULL)")
        self._db = db
        check = db.execute("PRAGMA quick_check").fetchone()[0]
        if check not in (b"ok", "ok"):
            raise _Corrupt(f"quick_check: {bytes(check)[:200]!r}")
        return db

    def _open(self, state_dir: Path) -> None:
        assert self.path is not None
        check_state_dir(state_dir)
        try:
            state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise JournalError(f"state folder {state_dir}: cannot create it: "
                               f"{e.strerror or e}") from None
        try:  # one daemon per state folder: two would interleave their numbering
            self._lockfile = open(state_dir / LOCK_NAME, "ab")  # noqa: SIM115 - held open
            fcntl.flock(self._lockfile.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise JournalError(f"event journal {self.path} is in use by another edge-pose "
                               "process; give each one its own service.state_dir") from None
        except OSError as e:
            raise JournalError(f"state folder {state_dir}: {e.strerror or e}") from None
        rep = self.report
        existed = self.path.exists()
        legacy = self._read_legacy(state_dir / LEGACY_JOURNAL_NAME)
        salvaged: list[dict[str, Any]] = []
        try:
            self._db = self._connect()
            self._check_schema()
            meta = self._read_meta()
            if meta.get("format", JOURNAL_FORMAT) != JOURNAL_FORMAT:
                raise _Corrupt(f"written in format {meta['format'][:20]!r}, this edge-pose "
                               f"reads format {JOURNAL_FORMAT} (by a newer version?)")
            rows = self._read_rows()
        except sqlite3.DatabaseError as e:
            if self._db is not None:
                self._db.close()
                self._db = None
            if not _is_damage(e):
                raise JournalError(f"event journal {self.path}: {e}; is the disk full, or "
                                   "another edge-pose using this state folder?") from None
            salvaged = self._set_aside(e)
            try:
                self._db = self._connect()
                meta, rows = {}, []
            except sqlite3.Error as e2:
                raise JournalError(f"event journal {self.path}: cannot create it: {e2}"
                                   ) from None
        for ev in salvaged + (legacy[2] if legacy else []):
            if int(ev["seq"]) not in self._pending:
                rows.append(ev)
        for ev in sorted(rows, key=lambda e: int(e["seq"])):
            self._pending[int(ev["seq"])] = ev
        # The numbering: the stored one goes on unless something casts doubt on it.
        doubt = ""
        stream, next_seq, clean = meta.get("stream"), meta.get("next_seq"), meta.get("clean")
        if legacy is not None and stream is None:
            stream, next_seq, clean = legacy[0], str(legacy[1]), "1"
            rep.migrated = len(legacy[2])
        highest = max(self._pending, default=0)
        if rep.damaged or rep.lost_unknown:
            doubt = "the journal was damaged"
        elif stream is None and existed:
            doubt = "the journal had no numbering (replaced or recreated)"
        elif stream is not None and (next_seq is None or not is_ascii_number(next_seq)):
            doubt = "the journal's next_seq is unreadable"
        elif stream is not None and meta.get("file") not in (None, self._file_id()):
            doubt = "the journal file was replaced (it is not the file written last)"
        elif stream is not None and (state_dir / BEHIND_NAME).exists():
            doubt = ("the last run could not write every event to the journal (a full disk?) "
                     "and did not catch up")
        elif stream is not None and clean != "1" and meta.get("sync_ms", "0") != "0":
            doubt = (f"the last run did not stop cleanly with journal_sync_ms = "
                     f"{meta.get('sync_ms', '?')[:10]}: its last events may not have reached "
                     "the disk")
        if stream is not None and next_seq is not None and is_ascii_number(next_seq):
            self.next_seq = max(self.next_seq, min(int(next_seq), MAX_SEQ - 1))
        self.next_seq = max(self.next_seq, highest + 1)
        if stream is not None and not doubt and len(stream) <= 64:
            self.stream = stream
        elif stream is not None or doubt:
            rep.new_stream = doubt or "unusable stream id"
            logger.warning("event journal %s: %s; starting a new stream %s at seq %d (was %s),"
                           " so (stream, seq) stays unique", self.path, rep.new_stream,
                           self.stream, self.next_seq, (stream or "unknown")[:64])
        while len(self._pending) > self.maxlen:
            self._pending.popitem(last=False)
            self.dropped += 1
        self._rewrite(clean=False)
        self._mark_behind(False)  # the numbering on disk is whole again
        if legacy is not None:
            legacy_path = state_dir / LEGACY_JOURNAL_NAME
            os.replace(legacy_path, legacy_path.with_name(LEGACY_JOURNAL_NAME + ".migrated"))
            logger.warning("event journal %s migrated to %s: %d event(s) imported, %d "
                           "damaged line(s) skipped", legacy_path, self.path, rep.migrated,
                           legacy[3])
        if self._pending:
            logger.info("event journal %s: %d event(s) from before the restart still to "
                        "deliver (seq %d-%d)", self.path, len(self._pending),
                        next(iter(self._pending)), next(reversed(self._pending)))
        if self.sync_ms > 0:
            self._syncer = threading.Thread(target=self._sync_loop, name="journal-sync",
                                            daemon=True)
            self._syncer.start()

    def _damage(self, what: str, n: int = 1) -> None:
        self.report.damaged += n
        logger.warning("event journal %s: %s", self.path, what)

    def _check_schema(self) -> None:
        """Raises :class:`_Corrupt` unless both tables have this format's columns.

        A journal of another layout (another program's file, another version's) used to stop
        the start with "no such column: seq" (exit 1); as damage it is set aside, kept for a
        look, and a new stream begins.
        """
        assert self._db is not None
        for table, columns in (("meta", ["key", "value"]), ("events", ["seq", "body", "crc"])):
            got = [str(row[1], "utf-8") if isinstance(row[1], bytes) else str(row[1])
                   for row in self._db.execute(f"PRAGMA table_info({table})")]
            if got != columns:
                raise _Corrupt(f"table {table} has the columns {got[:8]}, not {columns}")

    def _read_meta(self) -> dict[str, str]:
        assert self._db is not None
        out: dict[str, str] = {}
        for key, value in self._db.execute("SELECT key, value FROM meta"):
            try:
                out[bytes(key).decode("utf-8")] = bytes(value).decode("utf-8")
            except (UnicodeDecodeError, TypeError):
                self._damage("a meta record is not UTF-8")
        return out

    def _read_rows(self) -> list[dict[str, Any]]:
        assert self._db is not None
        out: list[dict[str, Any]] = []
        bad: list[int] = []
        for seq, body, crc in self._db.execute("SELECT seq, body, crc FROM events ORDER BY seq"):
            try:
                if not isinstance(body, bytes) or not isinstance(crc, int):
                    raise ValueError("wrong column types")
                out.append(decode_event(body, crc, seq))
            except ValueError as e:
                bad.append(seq)
                self._damage(f"event seq {seq} is damaged ({str(e)[:80]}); skipped")
        if bad:
            self._db.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in bad])
            logger.warning("event journal %s: %d damaged event(s) skipped and removed; the "
                           "%d readable one(s) are kept", self.path, len(bad), len(out))
        return out

    def _set_aside(self, error: sqlite3.DatabaseError) -> list[dict[str, Any]]:
        """Moves an unreadable journal aside and salvages what rows it still gives."""
        assert self.path is not None
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        aside = self.path.with_name(f"{JOURNAL_NAME}.damaged-{stamp}")
        n = 1
        while any(Path(str(aside) + x).exists() for x in ("", "-wal", "-shm")):
            n += 1  # a second damaged journal within the second must not replace the first
            aside = self.path.with_name(f"{JOURNAL_NAME}.damaged-{stamp}-{n}")
        for suffix in ("", "-wal", "-shm"):
            src = Path(str(self.path) + suffix)
            if src.exists():
                try:
                    os.replace(src, Path(str(aside) + suffix))
                except OSError as e:
                    raise JournalError(f"event journal {self.path} is damaged ({error}) and "
                                       f"cannot be moved aside: {e.strerror or e}") from None
        salvaged: list[dict[str, Any]] = []
        skipped = 0
        try:
            db = sqlite3.connect(f"file:{aside}?mode=ro", uri=True)
            db.text_factory = bytes
            try:
                for seq, body, crc in db.execute("SELECT seq, body, crc FROM events"):
                    try:
                        salvaged.append(decode_event(body, crc, seq))
                    except (ValueError, TypeError):
                        skipped += 1
            finally:
                db.close()
        except sqlite3.Error:
            pass  # what was read before the damage is kept
        self.report.lost_unknown = True
        self._damage(f"unreadable ({error}); set aside as {aside.name}; {len(salvaged)} "
                     f"event(s) salvaged, {skipped} damaged, an unknown number lost", skipped)
        return salvaged

    def _read_legacy(self, path: Path) -> tuple[str, int, list[dict[str, Any]], int] | None:
        """Reads a previous-format journal: (stream, next_seq, pending events, damaged lines)."""
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as e:
            raise JournalError(f"event journal {path}: {e.strerror or e}; fix its mode or "
                               "move it away") from None
        stream, next_seq = secrets.token_hex(8), 1
        pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
        bad = 0
        had_meta = False
        for line in data.splitlines():
            if not line.strip():
                continue
            try:
                rec = json.loads(line.decode("utf-8"), parse_constant=_reject_constant)
                if not isinstance(rec, dict):
                    raise ValueError("not an object")
                if "meta" in rec:
                    stream = str(rec["meta"]["stream"])
                    n = rec["meta"]["next_seq"]
                    if isinstance(n, bool) or not isinstance(n, int) or not 0 < n < MAX_SEQ:
                        raise ValueError("bad next_seq")
                    next_seq = max(next_seq, n)
                    had_meta = True
                elif "event" in rec:
                    ev = decode_event(json.dumps(rec["event"]).encode())
                    pending[int(ev["seq"])] = ev
                    next_seq = max(next_seq, int(ev["seq"]) + 1)
                elif "ack" in rec:
                    a = rec["ack"]
                    if isinstance(a, bool) or not isinstance(a, int):
                        raise ValueError("bad ack")
                    pending.pop(a, None)
                else:
                    raise ValueError("unknown record")
            except (ValueError, KeyError, TypeError):
                bad += 1
        if bad:
            self.report.damaged += bad
        if not had_meta:
            self.report.lost_unknown = True  # the numbering is not known
        return stream, next_seq, list(pending.values()), bad

    # ------------------------------------------------------------------------------ writing

    def _commit(self, sql: list[tuple[str, tuple[Any, ...]]], durable: bool,
                strict: bool = False) -> bool:
        """Runs ``sql`` in one transaction; on failure the queue goes on in memory only.

        After a failed write (a full disk) the file lacks what that write carried, so the next
        transaction writes the whole queue and the numbering instead of ``sql``: the file
        catches up as soon as the disk has room, not only what comes after. Until then an
        empty file beside it (``events.behind``) says so: a start after a stop or a crash in
        that state cannot know which numbers were published, and begins a new stream.
        Without this, events added while the disk was full never reached the file even once
        it had room, and a start after a stop on the full disk numbered new events with the
        numbers of those lost: (stream, seq) named two events.

        Returns:
            Whether the transaction was committed.

        Raises:
            JournalError: With ``strict``, when the transaction fails.
        """
        db = self._db
        if db is None:
            return False
        caught_up = self._behind and not strict
        if caught_up:
            sql = self._whole_sql(clean=self._closing.is_set())
        try:
            if self.sync_ms == 0 and not durable:
                db.execute("PRAGMA synchronous=NORMAL")  # acks: a lost one only re-sends
            db.execute("BEGIN IMMEDIATE")
            try:
                for q, args in sql:
                    db.execute(q, args)
                db.execute("COMMIT")
            except BaseException:
                # SQLite rolls back by itself on some errors (a full disk); a ROLLBACK then
                # fails too, and its "no transaction is active" hid the real error.
                if db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        db.execute("ROLLBACK")
                raise
            finally:
                if self.sync_ms == 0 and not durable:
                    db.execute("PRAGMA synchronous=FULL")
            self._dirty = True
            if caught_up:
                self._behind = False
                self._mark_behind(False)
                logger.warning("event journal %s writable again: the %d event(s) held in "
                               "memory are journalled", self.path, len(self._pending))
            elif self.write_errors:
                logger.warning("event journal %s writable again", self.path)
            self.write_errors = 0
            return True
        except sqlite3.Error as e:
            if strict:
                raise JournalError(f"event journal {self.path}: cannot write it: {e}; check "
                                   "the disk and service.state_dir") from None
            self._behind = True
            self._mark_behind()
            self.write_errors += 1
            if self.write_errors == 1:
                logger.error("event journal %s: write failed (%s); events are kept in memory "
                             "only until it works again (check the disk and service.state_dir)",
                             self.path, e)
            return False

    def _mark_behind(self, behind: bool = True) -> None:
        """Marks the journal as lacking events (or no longer), with an empty file beside it.

        An empty file needs no data block, so a full disk still takes it (a row in the journal
        itself would not be written: its pages are what the disk has no room for).
        """
        if self.path is None:
            return
        mark = self.path.with_name(BEHIND_NAME)
        with contextlib.suppress(OSError):
            if behind:
                mark.touch()
            else:
                mark.unlink(missing_ok=True)

    def _file_id(self) -> str:
        """Device and inode of the journal: another file in its place casts doubt."""
        assert self.path is not None
        st = os.stat(self.path)
        return f"{st.st_dev}:{st.st_ino}"

    def _meta_sql(self, clean: bool) -> list[tuple[str, tuple[Any, ...]]]:
        return [("INSERT OR REPLACE INTO meta VALUES (?, ?)", (k, v)) for k, v in (
            ("format", JOURNAL_FORMAT), ("stream", self.stream), ("file", self._file_id()),
            ("next_seq", str(self.next_seq)), ("clean", "1" if clean else "0"),
            ("sync_ms", str(self.sync_ms)))]

    def _whole_sql(self, clean: bool) -> list[tuple[str, tuple[Any, ...]]]:
        """The numbering and every pending event, replacing what the file holds."""
        sql = [*self._meta_sql(clean), ("DELETE FROM events", ())]
        for seq, ev in self._pending.items():
            body = _encode(ev)
            sql.append(("INSERT INTO events VALUES (?, ?, ?)", (seq, body, zlib.crc32(body))))
        return sql

    def _rewrite(self, clean: bool) -> None:
        """Writes the numbering and every pending event (on open), durably."""
        self._commit(self._whole_sql(clean), durable=True, strict=True)
        self._checkpoint()

    def _checkpoint(self) -> None:
        """Syncs the WAL to disk (and folds it into the database)."""
        if self._db is None:
            return
        try:
            self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")
            self._dirty = False
        except sqlite3.Error as e:
            logger.error("event journal %s: sync failed: %s", self.path, e)

    def _sync_loop(self) -> None:
        while not self._closing.wait(self.sync_ms / 1000):
            with self._lock:
                if self._dirty:
                    self._checkpoint()

    def add(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Numbers ``payload`` (adds ``seq`` and ``stream``), queues and journals it.

        Returns only once the event is journalled (on disk with ``sync_ms = 0``).

        Returns:
            The numbered payload.
        """
        return self.add_many([payload])[0]

    def add_many(self, payloads: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
        """:meth:`add` for several events in one transaction (one disk sync for all).

        A non-finite number in a payload (a bug upstream) is published as null and logged,
        rather than refused: the event itself still happened.

        Returns:
            The numbered payloads, in order.
        """
        with self._lock:
            out = []
            sql: list[tuple[str, tuple[Any, ...]]] = []
            for payload in payloads:
                ev = {**payload, "seq": self.next_seq, "stream": self.stream}
                try:
                    body = _encode(ev)
                except ValueError:
                    logger.error("event seq %d has a non-finite number; published as null: "
                                 "%r", self.next_seq, ev)
                    ev = {k: None if isinstance(v, float) and not math.isfinite(v) else v
                          for k, v in ev.items()}
                    body = _encode(ev)
                self.next_seq += 1
                if len(self._pending) >= self.maxlen:
                    old, _ = self._pending.popitem(last=False)
                    self.dropped += 1
                    sql.append(("DELETE FROM events WHERE seq = ?", (old,)))
                    logger.warning("event queue full (%d): dropped event seq %d", self.maxlen,
                                   old)
                self._pending[ev["seq"]] = ev
                self.added += 1
                sql.append(("INSERT OR REPLACE INTO events VALUES (?, ?, ?)",
                            (ev["seq"], body, zlib.crc32(body))))
                out.append(ev)
            if out:
                sql.append(("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)",
                            (str(self.next_seq),)))
                if self._commit(sql, durable=True):
                    logger.debug("journalled stream %s seq %d-%d", self.stream, out[0]["seq"],
                                 out[-1]["seq"])
            return out

    def ack(self, seq: int) -> bool:
        """Removes an acknowledged event.

        Returns:
            Whether it was still queued.
        """
        return self.ack_many([seq]) == 1

    def ack_many(self, seqs: Iterable[int]) -> int:
        """Removes acknowledged events in one transaction.

        Returns:
            How many were still queued.
        """
        with self._lock:
            gone = [s for s in seqs if self._pending.pop(s, None) is not None]
            self.acked += len(gone)
            if gone:
                self._commit([("DELETE FROM events WHERE seq = ?", (s,)) for s in gone],
                             durable=False)
            return len(gone)

    def after(self, seq: int, limit: int) -> list[dict[str, Any]]:
        """Up to ``limit`` queued events with a sequence number above ``seq``, in order."""
        with self._lock:
            out = []
            for s, ev in self._pending.items():
                if s > seq:
                    out.append(ev)
                    if len(out) >= limit:
                        break
            return out

    def __len__(self) -> int:
        with self._lock:
            return len(self._pending)

    def seqs(self) -> list[int]:
        """The queued sequence numbers, in order."""
        with self._lock:
            return list(self._pending)

    def close(self) -> None:
        """Marks the journal cleanly closed, syncs and closes it; safe to call twice."""
        self._closing.set()
        if self._syncer is not None:
            self._syncer.join(5.0)
        with self._lock:
            if self._db is None:
                return
            if not self._commit(self._meta_sql(clean=True), durable=True) and self._behind:
                logger.error("event journal %s: %d event(s) held in memory could not be "
                             "saved (check the disk and service.state_dir); they are lost "
                             "with this stop", self.path, len(self._pending))
            try:
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            except sqlite3.Error as e:
                logger.error("event journal %s: final sync failed: %s", self.path, e)
            self._db.close()
            self._db = None
            if self._lockfile is not None:
                self._lockfile.close()  # releases the lock
                self._lockfile = None
