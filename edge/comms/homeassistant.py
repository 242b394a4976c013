"""Home Assistant MQTT discovery: one device per edge-pose box, with people-count and fps sensors.

Both sensors read the ``stats`` topic (``value_json.people``, ``value_json.fps``) and follow the
``availability`` topic: ``online`` is available; ``stopped``, ``failed`` and ``offline`` are
not. The configs are retained and published again whenever Home Assistant announces itself on
``<discovery_prefix>/status`` (its birth message ``online``), as its documentation advises.
"""

from __future__ import annotations

import re
from typing import Any

from edge import __version__


def node_id(device_id: str) -> str:
    """Home Assistant's node id for a device (letters, digits, ``_`` and ``-`` only)."""
    return "edgepose_" + re.sub(r"[^A-Za-z0-9_-]", "_", device_id)


def discovery_messages(prefix: str, topic_root: str, device_id: str
                       ) -> list[tuple[str, dict[str, Any]]]:
    """The discovery configs to publish (retained).

    Args:
        prefix: Home Assistant's discovery prefix (``homeassistant``).
        topic_root: This device's topic root (``edgepose/<device_id>``).
        device_id: The device id.

    Returns:
        ``(topic, payload)`` pairs.
    """
    node = node_id(device_id)
    device = {"identifiers": [node], "name": f"edge-pose {device_id}",
              "manufacturer": "edge-pose", "model": "edge-pose pose estimator",
              "sw_version": __version__}
    availability = {"topic": f"{topic_root}/availability",
                    "value_template": "{{ 'online' if value == 'online' else 'offline' }}"}
    sensors = {
        "people": {"name": "People", "value_template": "{{ value_json.people }}",
                   "state_class": "measurement", "icon": "mdi:account-group"},
        "fps": {"name": "Frame rate", "value_template": "{{ value_json.fps }}",
                "unit_of_measurement": "fps", "state_class": "measurement",
                "icon": "mdi:speedometer", "entity_category": "diagnostic"},
    }
    out = []
    for obj, extra in sensors.items():
        payload = {"unique_id": f"{node}_{obj}", "object_id": f"{node}_{obj}",
                   "state_topic": f"{topic_root}/stats", "availability": [availability],
                   "device": device, **extra}
        out.append((f"{prefix}/sensor/{node}/{obj}/config", payload))
    return out
