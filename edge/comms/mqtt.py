"""The MQTT side of the daemon: a paho-mqtt 2.x client and the one thread that publishes.

Topics, under ``<topic_root>/<device_id>/``:

* ``availability`` - retained, QoS 1: ``online`` on every connect, ``stopped`` on a clean exit,
  ``offline`` as the last will (the broker sends it when the connection dies).
* ``pose`` - each frame's annotation (QoS ``mqtt.pose_qos``). While disconnected only the
  newest ``mqtt.pose_queue`` frames are kept; older ones are dropped and counted
  (``mqtt.pose_dropped`` in ``stats``). paho's own ``max_queued_messages_set`` is not used: it
  drops the *newest*. With QoS 0, frames handed to the socket in the instant before a broken
  connection is noticed are lost too (that is QoS 0); QoS 1 resends them.
* ``events`` - QoS 1, numbered and durable (see :mod:`edge.comms.events`). Sent in order with at
  most ``EVENT_WINDOW`` unacknowledged; an event leaves the queue on its ``PUBACK``. After a
  reconnect, paho first resends the unacknowledged ones (same order, DUP flag); new events wait
  until those are acknowledged, so the order holds across outages.
* ``stats`` - every ``mqtt.stats_interval_s`` while connected, and once more at a clean stop.
* ``set/<name>`` - commands (:mod:`edge.comms.commands`); retained ones are ignored (they would
  replay a stale command on every reconnect); each accepted value is echoed, retained, on
  ``state/<name>``, and all states are published on connect.

Threads: paho's network loop (``loop_start``) runs the callbacks, which only record facts
(connected, acknowledged mids, commands) and wake the publisher thread; every ``publish`` except
a pose frame while connected happens on the publisher thread. The callbacks never take a lock
the publishing thread holds while calling paho: paho calls ``on_publish`` holding its own
message lock, which ``publish`` needs too.
"""

from __future__ import annotations

import json
import logging
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from edge.comms.commands import COMMANDS, CommandError, Controls
from edge.comms.events import EventQueue
from edge.comms.homeassistant import discovery_messages
from edge.config import Config, Secrets

logger = logging.getLogger(__name__)

EVENT_WINDOW = 100  # unacknowledged events in flight at once


@dataclass
class MqttCounters:
    """What the publisher did (reported in ``stats``)."""

    connects: int = 0
    disconnects: int = 0
    pose_published: int = 0
    pose_dropped: int = 0
    events_published: int = 0
    commands_accepted: int = 0
    commands_rejected: int = 0


class MqttPublisher:
    """Publishes one device's topics; owns the paho client and the publisher thread.

    Args:
        config: The validated config (``mqtt`` and ``annotation.device_id``).
        secrets: The broker password, if any.
        events: The durable event queue (acknowledged events are removed from it).
        controls: The settings ``set/<name>`` commands change.
        stats: Returns the ``stats`` payload (called on the publisher thread).
    """

    def __init__(self, config: Config, secrets: Secrets, events: EventQueue, controls: Controls,
                 stats: Callable[[], dict[str, Any]]) -> None:
        mc = config.mqtt
        self.config = mc
        self.device_id = config.annotation.device_id
        self.root = f"{mc.topic_root}/{self.device_id}"
        self.events = events
        self.controls = controls
        self._stats = stats
        self.counters = MqttCounters()
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2,
                                  client_id=f"edgepose-{self.device_id}", clean_session=True)
        self.client.enable_logger(logging.getLogger("paho.mqtt"))
        self.client.will_set(self.topic("availability"), "offline", qos=1, retain=True)
        if mc.username is not None:
            self.client.username_pw_set(mc.username, secrets.mqtt_password)
        if mc.tls.enabled:
            self.client.tls_set(
                ca_certs=None if mc.tls.ca_file is None else str(mc.tls.ca_file),
                certfile=None if mc.tls.cert_file is None else str(mc.tls.cert_file),
                keyfile=None if mc.tls.key_file is None else str(mc.tls.key_file),
                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
            self.client.tls_insecure_set(mc.tls.insecure)
        self.client.reconnect_delay_set(mc.reconnect_min_s, mc.reconnect_max_s)
        self.client.max_inflight_messages_set(EVENT_WINDOW + 20)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_publish = self._on_publish
        self.client.on_message = self._on_message

        self._wake = threading.Event()
        self._stop = threading.Event()
        self._connected = False
        self._just_connected = False
        self._ha_due = False
        self._poses: deque[str] = deque(maxlen=max(mc.pose_queue, 1))
        self._pose_lock = threading.Lock()
        self._acks: deque[int] = deque()
        self._states: deque[str] = deque()
        self._sent: dict[int, int] = {}  # mid -> seq of events handed to paho, not yet acked
        self._last_sent_seq = 0
        self._resend_wait = False
        self._next_stats = time.monotonic() + mc.stats_interval_s
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._deadline = 0.0
        self.closed = threading.Event()

    def topic(self, name: str) -> str:
        """The full topic of ``name`` (``availability``, ``pose``, ``state/enabled``...)."""
        return f"{self.root}/{name}"

    @property
    def connected(self) -> bool:
        """Whether the broker accepted the connection and it is up."""
        return self._connected

    # ---------------------------------------------------------------- paho callbacks (loop thread)

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: mqtt.ConnectFlags,
                    reason_code: ReasonCode, properties: Properties | None) -> None:
        if reason_code.is_failure:
            logger.error("MQTT broker %s:%d refused the connection: %s", self.config.host,
                         self.config.port, reason_code)
            return
        logger.info("MQTT connected to %s:%d", self.config.host, self.config.port)
        self.counters.connects += 1
        subs = [(self.topic("set/+"), 1)]
        if self.config.home_assistant.enabled:
            subs.append((f"{self.config.home_assistant.discovery_prefix}/status", 1))
        client.subscribe(subs)
        self._connected = True
        self._just_connected = True
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any,
                       flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        if self._connected and not self._stop.is_set():
            self.counters.disconnects += 1
            logger.warning("MQTT disconnected (%s); reconnecting with backoff up to %d s",
                           reason_code, self.config.reconnect_max_s)
        self._connected = False
        self._wake.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        self._acks.append(mid)  # deque.append is atomic; no lock (see the module docstring)
        self._wake.set()

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        ha = self.config.home_assistant
        if ha.enabled and msg.topic == f"{ha.discovery_prefix}/status":
            if msg.payload.strip() == b"online":
                logger.info("Home Assistant is online: publishing discovery again")
                self._ha_due = True
                self._wake.set()
            return
        prefix = self.topic("set/")
        if not msg.topic.startswith(prefix):
            return
        name = msg.topic[len(prefix):]
        if msg.retain:
            self.counters.commands_rejected += 1
            logger.warning("ignored retained command %s (commands must not be retained)",
                           msg.topic)
            return
        try:
            value = self.controls.apply(name, bytes(msg.payload),
                                        max_bytes=self.config.command_max_bytes)
        except CommandError as e:
            self.counters.commands_rejected += 1
            logger.warning("rejected command %s: %s", msg.topic[:200], e)
            return
        self.counters.commands_accepted += 1
        logger.info("command %s = %r applied", name, value)
        self._states.append(name)
        self._wake.set()

    # --------------------------------------------------------------------------- producers

    def publish_pose(self, payload: str) -> None:
        """Publishes a pose frame now, or keeps it (newest ``pose_queue`` only) until connected.

        Called from the frame loop.
        """
        with self._pose_lock:
            if self._connected and not self._poses:
                info = self.client.publish(self.topic("pose"), payload,
                                           qos=self.config.pose_qos)
                if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS or self.config.pose_qos > 0:
                    self.counters.pose_published += 1  # QoS>0: paho keeps and resends it
                    return
            if self.config.pose_queue == 0:
                self.counters.pose_dropped += 1
                return
            if len(self._poses) == self._poses.maxlen:
                self.counters.pose_dropped += 1  # the oldest goes
            self._poses.append(payload)
        self._wake.set()

    def wake(self) -> None:
        """Tells the publisher thread there is work (new events)."""
        self._wake.set()

    # ------------------------------------------------------------------- publisher thread

    def start(self) -> None:
        """Starts connecting (in the background: no broker yet is fine) and publishing."""
        mc = self.config
        self.client.connect_async(mc.host, mc.port, keepalive=mc.keepalive_s)
        self.client.loop_start()
        self._thread.start()

    def _publish(self, name: str, payload: str, *, qos: int = 0, retain: bool = False
                 ) -> mqtt.MQTTMessageInfo:
        return self.client.publish(self.topic(name), payload, qos=qos, retain=retain)

    def _process_acks(self) -> None:
        while self._acks:
            mid = self._acks.popleft()
            seq = self._sent.pop(mid, None)
            if seq is not None and self.events.ack(seq):
                self.counters.events_published += 1
        if self._resend_wait and not self._sent:
            self._resend_wait = False

    def _on_connected(self) -> None:
        self._just_connected = False
        self._publish("availability", "online", qos=1, retain=True)
        for name in COMMANDS:
            self._publish(f"state/{name}", json.dumps(self.controls.get(name)), qos=1,
                          retain=True)
        if self.config.home_assistant.enabled:
            self._ha_due = True
        if self._sent:
            # paho resends these itself after the CONNACK; new events wait for their acks.
            self._resend_wait = True

    def _publish_discovery(self) -> None:
        self._ha_due = False
        for topic, payload in discovery_messages(self.config.home_assistant.discovery_prefix,
                                                 self.root, self.device_id):
            self.client.publish(topic, json.dumps(payload), qos=1, retain=True)

    def _publish_events(self) -> None:
        room = EVENT_WINDOW - len(self._sent)
        if room <= 0 or self._resend_wait:
            return
        for ev in self.events.after(self._last_sent_seq, room):
            info = self.client.publish(self.topic("events"),
                                       json.dumps(ev, separators=(",", ":")), qos=1)
            # Even when the connection has just dropped (rc NO_CONN) paho keeps a QoS 1
            # message and sends it after the reconnect, so it is in flight either way.
            self._sent[info.mid] = int(ev["seq"])
            self._last_sent_seq = int(ev["seq"])

    def _publish_poses(self) -> None:
        with self._pose_lock:
            while self._poses and self._connected:
                info = self.client.publish(self.topic("pose"), self._poses[0],
                                           qos=self.config.pose_qos)
                if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS and self.config.pose_qos == 0:
                    break  # keep it for the next connection
                self._poses.popleft()
                self.counters.pose_published += 1

    def _publish_stats(self) -> None:
        self._next_stats = time.monotonic() + self.config.stats_interval_s
        try:
            payload = self._stats()
        except Exception:  # a stats bug must not stop publishing
            logger.exception("stats failed")
            return
        self._publish("stats", json.dumps(payload, separators=(",", ":")))

    def _step(self) -> None:
        self._process_acks()
        if not self._connected:
            return
        if self._just_connected:
            self._on_connected()
        while self._states:
            name = self._states.popleft()
            self._publish(f"state/{name}", json.dumps(self.controls.get(name)), qos=1,
                          retain=True)
        if self._ha_due:
            self._publish_discovery()
        self._publish_poses()
        self._publish_events()
        if time.monotonic() >= self._next_stats:
            self._publish_stats()

    def _drained(self) -> bool:
        return not self._poses and not self._sent and len(self.events) == 0

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self._wake.wait(0.2)
                self._wake.clear()
                self._step()
            # Stopping: deliver what is queued while the broker is there, up to the deadline.
            while (self._connected and not self._drained()
                   and time.monotonic() < self._deadline):
                self._wake.wait(0.05)
                self._wake.clear()
                self._step()
            self._process_acks()
            if self._connected:
                self._publish_stats()
                info = self._publish("availability", "stopped", qos=1, retain=True)
                try:
                    info.wait_for_publish(max(0.5, self._deadline - time.monotonic()))
                except (RuntimeError, ValueError) as e:
                    logger.warning("could not publish 'stopped': %s", e)
                self.client.disconnect()
        except Exception:
            logger.exception("MQTT publisher failed")
        finally:
            self.closed.set()

    def close(self, timeout_s: float) -> None:
        """Flushes, says ``stopped`` and disconnects.

        Delivers what is queued (while connected, up to ``timeout_s``), publishes the last
        ``stats`` and ``stopped``, disconnects cleanly (so no last will) and saves the events
        not yet acknowledged to the journal.
        """
        if not self._thread.is_alive():
            self.client.loop_stop()
            self.events.close()
            return
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s + 5.0)
        self.client.loop_stop()
        if self._sent or len(self.events):
            logger.info("%d event(s) not acknowledged yet: kept in %s for the next start",
                        len(self.events), self.events.path)
        self.events.close()
