"""Frame sources: files, image folders, V4L2 cameras, RTSP/HTTP streams and the Pi camera.

:func:`open_source` picks the source from a URI. File sources are read frame by frame (every
frame, in order); live sources run a capture thread that keeps only the newest frame and
reconnects with exponential backoff (see :class:`LiveSource`).
"""

from __future__ import annotations

from edge.sources.base import Source, SourceEnd, SourceError, SourceSilentError
from edge.sources.files import ImageFolderSource, VideoFileSource
from edge.sources.live import LiveSource, open_camera, open_picamera2, open_url
from edge.sources.open import DEMO_CLIP, open_source

__all__ = [
    "DEMO_CLIP",
    "ImageFolderSource",
    "LiveSource",
    "Source",
    "SourceEnd",
    "SourceError",
    "SourceSilentError",
    "VideoFileSource",
    "open_camera",
    "open_picamera2",
    "open_source",
    "open_url",
]
