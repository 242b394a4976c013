"""Transports: where the annotation stream goes (HTTP now; files and MQTT move here later).

A transport takes each processed frame through the :class:`~edge.sinks.base.Sink` protocol
(``write(frame, annotation)``, ``close()``), and may take events and stats and offer commands.
Nothing a transport does may block the core: each keeps its own bounded queue.
"""
