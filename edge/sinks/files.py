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


def write_atomically(path: Path, text: str) -> None:
    """Writes ``text`` to ``path`` whole or not at all (a temporary file, fsynced, then renamed).

    A power cut or a full disk leaves the old file or none, never half of one, and no temporary
    file behind.

    Raises:
        OSError: The folder cannot be made or written (the temporary file is removed).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


class JsonlSink:
    """One annotation per line, each written to the file at once: a crash loses one frame.

    A write that fails part-way (a full disk, a file-size limit) is cut back to the last whole
    line, so the file stays valid JSON Lines for any reader; the error is raised once and the
    sink is closed. Without the cut a full disk left half a line at the end (a 4 KiB buffer's
    worth of the last frames, ending mid-number).
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC,
                                           0o644)
        except OSError as e:
            raise SinkError(f"jsonl {self.path}: cannot be written ({e})") from None
        self._regular = stat.S_ISREG(os.fstat(self._fd).st_mode)
        self._whole = 0  # bytes of whole lines in the file
        self.lines = 0

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Appends the annotation as one line."""
        fd = self._fd
        if fd is None:
            raise SinkError(f"jsonl {self.path}: closed")
        line = (annotation.to_json() + "\n").encode("utf-8")
        data = memoryview(line)
        try:
            while data:  # a regular file may take part of it (a file-size limit) and refuse on
                data = data[os.write(fd, data):]
        except OSError as e:
            self._fd = None
            kept = ""
            if self._regular:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, self._whole)
                    kept = f"; the file keeps its {self.lines} whole lines"
            with contextlib.suppress(OSError):
                os.close(fd)
            raise SinkError(f"jsonl {self.path}: write failed ({e}){kept}") from None
        self._whole += len(line)
        self.lines += 1

    def close(self) -> None:
        """Flushes to disk and closes."""
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            if self._regular:  # a pipe or device has no fsync
                os.fsync(fd)
        except OSError as e:
            raise SinkError(f"jsonl {self.path}: write failed ({e})") from None
        finally:
            with contextlib.suppress(OSError):  # already reported above
                os.close(fd)


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
