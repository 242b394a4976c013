"""Where annotations go: files (JSONL, annotated video or images, COCO keypoints) and stdout.

MQTT is the service's.

Every sink takes ``write(frame, annotation)`` and ``close()``; a sink that fails raises
:class:`SinkError` naming itself.
"""

from __future__ import annotations

from edge.sinks.base import Sink, SinkError
from edge.sinks.files import JsonlSink, StdoutSink
from edge.sinks.images import CocoKeypointsSink, ImagesSink
from edge.sinks.video import VideoSink, draw_annotation

__all__ = ["CocoKeypointsSink", "ImagesSink", "JsonlSink", "Sink", "SinkError", "StdoutSink",
           "VideoSink", "draw_annotation"]
