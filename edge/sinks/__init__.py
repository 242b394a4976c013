"""Where annotations go: JSON Lines files, annotated video, stdout (and MQTT, in the service).

Every sink takes ``write(frame, annotation)`` and ``close()``; a sink that fails raises
:class:`SinkError` naming itself.
"""

from __future__ import annotations

from edge.sinks.base import Sink, SinkError
from edge.sinks.files import JsonlSink, StdoutSink
from edge.sinks.video import VideoSink, draw_annotation

__all__ = ["JsonlSink", "Sink", "SinkError", "StdoutSink", "VideoSink", "draw_annotation"]
