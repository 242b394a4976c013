"""JSON Lines file and stdout sinks."""

from __future__ import annotations

import contextlib
import os
import stat
import sys
from pathlib import Path
from typing import TextIO

from edge.annotation import Annotation
from edge.sinks.base import SinkError
from edge.types import Frame


class JsonlSink:
    """One annotation per line, flushed after every line so a crash loses at most one frame."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._f: TextIO | None = self.path.open("w", encoding="utf-8")
        except OSError as e:
            raise SinkError(f"jsonl {self.path}: cannot be written ({e})") from None
        self.lines = 0

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Appends the annotation as one line."""
        if self._f is None:
            raise SinkError(f"jsonl {self.path}: closed")
        try:
            self._f.write(annotation.to_json() + "\n")
            self._f.flush()
        except OSError as e:
            raise SinkError(f"jsonl {self.path}: write failed ({e})") from None
        self.lines += 1

    def close(self) -> None:
        """Flushes to disk and closes."""
        if self._f is None:
            return
        f, self._f = self._f, None
        try:
            f.flush()
            if stat.S_ISREG(os.fstat(f.fileno()).st_mode):  # a pipe or device has no fsync
                os.fsync(f.fileno())
        except OSError as e:
            raise SinkError(f"jsonl {self.path}: write failed ({e})") from None
        finally:
            with contextlib.suppress(OSError):  # already reported above
                f.close()


class StdoutSink:
    """Annotations as JSON Lines on standard output."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stdout

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Prints one line."""
        self._stream.write(annotation.to_json() + "\n")
        self._stream.flush()

    def close(self) -> None:
        """Flushes."""
        self._stream.flush()
