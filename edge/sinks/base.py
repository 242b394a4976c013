"""The sink protocol."""

from __future__ import annotations

from typing import Protocol

from edge.annotation import Annotation
from edge.types import Frame


class SinkError(RuntimeError):
    """A sink cannot take more output."""


class Sink(Protocol):
    """Takes one annotation per processed frame."""

    def write(self, frame: Frame, annotation: Annotation) -> None:
        """Writes the annotation of ``frame``."""
        ...

    def close(self) -> None:
        """Flushes and releases; safe to call twice."""
        ...
