"""Events for the ``events`` topic: which tracker events are published, and their durable queue.

**Which events.** The tracker reports every track it opens, but the pipeline publishes a track
only once it is confirmed (``TrackerConfig.confirm_ticks``): a duplicate detection that is merged a
tick later never appears in any pose frame. :class:`EventFilter` therefore publishes an
``entered`` / ``reassigned`` event when the track first appears in an annotation (with the
tracker's original timestamp), and ``left`` / ``merged`` only for tracks whose arrival was
published. Subscribers thus see a consistent story: every id in a pose frame has been announced,
and every announced id eventually leaves (or is merged into an announced id).

**Delivery.** :class:`EventQueue` numbers events with a per-device sequence number ``seq`` that
survives restarts (with a random ``stream`` id naming the numbering, in case the state folder
is wiped). An event leaves the queue only when the broker acknowledged it (QoS 1 ``PUBACK``);
until then it is kept in memory and in an append-only journal in the state folder, so neither a
broker outage nor a daemon restart (even SIGKILL) loses it. QoS 1 may deliver a message twice
(a resend after a lost ``PUBACK``, a republish after a restart); subscribers de-duplicate by
``(stream, seq)``, which makes delivery exactly-once from their point of view. The queue is
bounded: when full, the *oldest* event is dropped and counted (a gap in ``seq`` shows it).
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

from edge.annotation import Annotation
from edge.track import TrackEvent
from edge.types import Frame

logger = logging.getLogger(__name__)

EVENTS_SCHEMA_VERSION = 1
JOURNAL_NAME = "events.jsonl"


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


class EventQueue:
    """Events not yet acknowledged by the broker, in order, bounded, journaled to disk.

    Thread-safe: events are added from the core thread and acknowledged from the publisher.

    Args:
        state_dir: Folder of the journal (created); None keeps the queue in memory only.
        maxlen: Most events kept; adding to a full queue drops the oldest.
    """

    def __init__(self, state_dir: Path | None, maxlen: int = 10_000) -> None:
        if maxlen < 1:
            raise ValueError(f"maxlen must be >= 1, got {maxlen}")
        self.maxlen = maxlen
        self.path = None if state_dir is None else Path(state_dir) / JOURNAL_NAME
        self._lock = threading.Lock()
        self._pending: OrderedDict[int, dict[str, Any]] = OrderedDict()
        self.stream = secrets.token_hex(8)
        self.next_seq = 1
        self.dropped = 0
        self.added = 0
        self.acked = 0
        self._file: TextIO | None = None
        self._lines = 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._load()
            self._compact()

    def _load(self) -> None:
        assert self.path is not None
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return
        lines = text.splitlines()
        for n, line in enumerate(lines, 1):
            try:
                rec = json.loads(line)
                if "meta" in rec:
                    self.stream = str(rec["meta"]["stream"])
                    self.next_seq = max(self.next_seq, int(rec["meta"]["next_seq"]))
                elif "event" in rec:
                    ev = rec["event"]
                    seq = int(ev["seq"])
                    self._pending[seq] = ev
                    self.next_seq = max(self.next_seq, seq + 1)
                elif "ack" in rec:
                    self._pending.pop(int(rec["ack"]), None)
                else:
                    raise ValueError("unknown record")
            except (ValueError, KeyError, TypeError) as e:
                # A torn last line (killed mid-write) is expected; anything else is reported.
                level = logging.INFO if n == len(lines) else logging.WARNING
                logger.log(level, "event journal %s line %d unreadable (%s); skipped",
                           self.path, n, e)
        while len(self._pending) > self.maxlen:
            self._pending.popitem(last=False)
            self.dropped += 1
        if self._pending:
            logger.info("event journal %s: %d event(s) from before the restart still to "
                        "deliver (seq %d-%d)", self.path, len(self._pending),
                        next(iter(self._pending)), next(reversed(self._pending)))

    def _compact(self) -> None:
        """Rewrites the journal as the meta line plus the pending events (atomic rename)."""
        if self.path is None:
            return
        if self._file is not None:
            self._file.close()
        tmp = self.path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(json.dumps({"meta": {"stream": self.stream, "next_seq": self.next_seq}})
                    + "\n")
            for ev in self._pending.values():
                f.write(json.dumps({"event": ev}, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self._lines = 1 + len(self._pending)
        self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 - kept open

    def _write(self, rec: dict[str, Any]) -> None:
        if self._file is None:
            return
        # Flushed (not fsynced) per record: survives a killed process, not a power cut.
        self._file.write(json.dumps(rec, separators=(",", ":")) + "\n")
        self._file.flush()
        self._lines += 1
        if self._lines > 2 * len(self._pending) + 10_000:
            self._compact()

    def add(self, payload: dict[str, Any]) -> dict[str, Any]:
        """Numbers ``payload`` (adds ``seq`` and ``stream``), queues and journals it.

        Returns:
            The numbered payload.
        """
        with self._lock:
            ev = {**payload, "seq": self.next_seq, "stream": self.stream}
            self.next_seq += 1
            if len(self._pending) >= self.maxlen:
                old, _ = self._pending.popitem(last=False)
                self.dropped += 1
                self._write({"ack": old})
                logger.warning("event queue full (%d): dropped event seq %d", self.maxlen, old)
            self._pending[ev["seq"]] = ev
            self.added += 1
            self._write({"event": ev})
            return ev

    def ack(self, seq: int) -> bool:
        """Removes an acknowledged event.

        Returns:
            Whether it was still queued.
        """
        with self._lock:
            if self._pending.pop(seq, None) is None:
                return False
            self.acked += 1
            self._write({"ack": seq})
            if not self._pending and self._lines > 1000:
                self._compact()
            return True

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
        """Compacts and closes the journal; safe to call twice."""
        with self._lock:
            if self._file is not None:
                self._compact()
                assert self._file is not None
                self._file.close()
                self._file = None

