"""The MQTT side of the daemon: a paho-mqtt 2.x client and the one thread that publishes.

Topics, under ``<topic_root>/<device_id>/``:

* ``availability`` - retained, QoS 1: ``online`` on every connect; ``stopped`` when asked to
  stop (SIGTERM, the end of a file source); ``failed`` when the daemon exits on an error (systemd
  restarts it); ``offline`` as the last will (the broker sends it when the connection dies: a
  crash, SIGKILL, a power cut, a network loss).
* ``status`` - retained, QoS 1, JSON (``edge/status_schema.json``): ``state`` (``online`` |
  ``stopped`` | ``failed``), ``reason`` (the error of a failed run, else null), ``ts``,
  ``since`` (when this connection or state began, epoch s) and ``journal`` (the current
  ``stream``, events pending, damage found at start and why a new stream began) - the why behind
  ``availability``. While ``availability`` is ``offline`` it keeps the last state the daemon
  could publish.
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
* ``set/<name>`` - commands (:mod:`edge.comms.commands`). Retained ones are refused, however
  they arrive: the client speaks MQTT 5 and subscribes with *retain as published*, so a retained
  command keeps its retain flag on live delivery too (MQTT 3.1.1 brokers clear it, which let a
  retained command through while connected), and the replay of a stale one on every reconnect is
  refused as well. Each accepted value is echoed, retained, on ``state/<name>``, and all states
  are published on connect.

**Connection.** The client's network loop is ours (``client.loop`` on the ``mqtt-network``
thread), not paho's ``loop_start``: paho's reconnect waits up to its maximum without jitter and
logs "Client is not connected" on every turn while the broker is away. Ours retries after
``reconnect_min_s`` doubling to ``reconnect_max_s`` (default 3 s), each delay drawn at random
between its half and itself (many devices do not come back in step), and logs host, port and
reason once per change of state (connected, lost, unreachable for another reason). MQTT 5
needs a broker from this decade (Mosquitto >= 1.6, EMQX, HiveMQ, VerneMQ); an MQTT 3-only broker
refuses the connection, which is logged with its reason.

Threads: the network thread runs paho's callbacks, which only record facts
(connected, acknowledged mids, commands) and wake the publisher thread; every ``publish`` except
a pose frame while connected happens on the publisher thread. The callbacks never take a lock
the publishing thread holds while calling paho: paho calls ``on_publish`` holding its own
message lock, which ``publish`` needs too.
"""

from __future__ import annotations

import json
import logging
import random
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from edge.comms.commands import COMMANDS, CommandError, Controls
from edge.comms.events import EventQueue
from edge.comms.homeassistant import discovery_messages
from edge.config import Config, ConfigError, MqttConfig, Secrets

if TYPE_CHECKING:  # the fuse worker's section; edge.fuse imports this module
    from edge.fuse.config import FuseMqttConfig

logger = logging.getLogger(__name__)

EVENT_WINDOW = 100  # unacknowledged events in flight at once
STATUS_SCHEMA_VERSION = 1


def backoff_s(attempt: int, min_s: float, max_s: float, rng: random.Random) -> float:
    """The wait before reconnect attempt ``attempt`` (0-based), s.

    ``min_s * 2**attempt`` capped at ``max_s``, then drawn uniformly from its upper half
    ("equal jitter"): prompt when the broker returns, and devices that lost it together do not
    all come back in the same instant.
    """
    base = min(max_s, min_s * 2.0 ** min(attempt, 30))
    return base * (0.5 + 0.5 * rng.random())


#: A connection the broker ends sooner than this after it began (s) counts as short-lived.
SHORT_LIVED_S = 3.0


class Link:
    """A reconnecting MQTT connection as it was last logged, and its reconnect backoff.

    Shared by the device's publisher and the fuse worker: each logs a lost, refused or
    unreachable broker once per change of state or reason (not at every retry), and waits
    :func:`backoff_s` between attempts.

    Args:
        host: Broker host, for the log.
        port: Broker port, for the log.
        min_s: First backoff, s.
        max_s: Longest backoff, s.
        client_id: This client's id, for the hint when connections keep ending at once.

    Attributes:
        state: ``starting``, ``up`` or ``down``.
        reason: Why it is down (as last logged).
        since: ``time.monotonic()`` of the last change between up and down.
    """

    def __init__(self, host: str, port: int, min_s: float, max_s: float,
                 client_id: str = "") -> None:
        self.host, self.port, self.min_s, self.max_s = host, port, min_s, max_s
        self.client_id = client_id
        self._short = 0  # connections in a row that ended within SHORT_LIVED_S
        self.state = "starting"
        self.reason = ""
        self.since = time.monotonic()
        self._attempt = 0
        self._rng = random.Random()

    def refused(self, reason_code: ReasonCode) -> str:
        """The broker refused the connection (CONNACK failure); returns the reason."""
        reason = f"refused the connection: {reason_code}"
        if self.reason != reason:
            self.state, self.reason = "down", reason
            logger.error("MQTT broker %s:%d refused the connection: %s", self.host, self.port,
                         reason_code)
        return reason

    def up(self) -> float | None:
        """The connection is up; returns the seconds it was down (None if it was not)."""
        now = time.monotonic()
        away = now - self.since if self.state == "down" else None
        self.state, self.reason, self.since, self._attempt = "up", "", now, 0
        return away

    def down(self, reason: str) -> None:
        """The connection was lost or could not be made, because of ``reason``.

        Connections that the broker ends within ``SHORT_LIVED_S`` of their start, three times
        in a row, are most often another client taking the same client id (Mosquitto closes
        the older one without a word, so paho says only "Unspecified error"): two devices
        with one ``annotation.device_id`` would otherwise push each other off for ever with
        no hint why. That is said once, at ERROR, until a connection lasts.
        """
        if self.state == "up":
            now = time.monotonic()
            self._short = self._short + 1 if now - self.since < SHORT_LIVED_S else 0
            logger.warning("MQTT connection to %s:%d lost: %s; reconnecting (every %g-%g s)",
                           self.host, self.port, reason, self.min_s, self.max_s)
            if self._short == 3:
                logger.error("MQTT broker %s:%d ended the last 3 connections within %g s "
                             "of their start: is another client using the client id %r (two "
                             "devices with one annotation.device_id, or two workers of one "
                             "scene)? Else see the broker's log (its ACL or limits)",
                             self.host, self.port, SHORT_LIVED_S, self.client_id)
            self.since = now
        elif reason != self.reason:
            logger.warning("MQTT broker %s:%d unreachable: %s; retrying (every %g-%g s)",
                           self.host, self.port, reason, self.min_s, self.max_s)
        self.state, self.reason = "down", reason

    def wait(self, stop: threading.Event) -> None:
        """Waits the next backoff, or until ``stop`` is set."""
        stop.wait(backoff_s(self._attempt, self.min_s, self.max_s, self._rng))
        self._attempt += 1

    def reconnect(self, client: mqtt.Client, stop: threading.Event) -> bool:
        """Reconnects ``client``; on failure logs it and waits the backoff. Returns success."""
        try:
            client.reconnect()
        except (OSError, ValueError) as e:  # refused, unreachable, DNS, TLS
            self.down(f"{type(e).__name__}: {e}")
            self.wait(stop)
            return False
        return True


def loop_once(client: mqtt.Client) -> MQTTErrorCode:
    """One turn (up to 0.1 s) of paho's network loop; a callback's exception drops the link.

    A bug in a callback must not end the connection for good: it is logged, the client
    disconnects, and the caller's reconnect logic takes over.
    """
    try:
        rc: MQTTErrorCode = client.loop(0.1)
    except Exception:
        logger.exception("MQTT network loop failed; reconnecting")
        client.disconnect()
        rc = MQTTErrorCode.MQTT_ERR_UNKNOWN
    return rc


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


def make_client(mc: MqttConfig | FuseMqttConfig, client_id: str, will_topic: str,
                secrets: Secrets) -> mqtt.Client:
    """A paho MQTT v5 client set up from an ``[mqtt]`` section (the device's or a fuse worker's).

    Args:
        mc: The validated section: ``username``, ``tls``.
        client_id: The client id.
        will_topic: Where the broker publishes ``offline`` (retained) if the link dies.
        secrets: The broker password, if any.

    Returns:
        The client, not yet connected.

    Raises:
        ConfigError: When the TLS files cannot be loaded (``mqtt.tls``).
    """
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5)
    client.will_set(will_topic, "offline", qos=1, retain=True)
    if mc.username is not None:
        client.username_pw_set(mc.username, secrets.mqtt_password)
    if mc.tls.enabled:
        try:
            client.tls_set(
                ca_certs=None if mc.tls.ca_file is None else str(mc.tls.ca_file),
                certfile=None if mc.tls.cert_file is None else str(mc.tls.cert_file),
                keyfile=None if mc.tls.key_file is None else str(mc.tls.key_file),
                cert_reqs=ssl.CERT_REQUIRED, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        except (OSError, ValueError) as e:  # preflight checks these; a race is possible
            raise ConfigError("<config>", [("mqtt.tls", str(e))]) from None
        client.tls_insecure_set(mc.tls.insecure)
    return client


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
        self.client = make_client(mc, f"edgepose-{self.device_id}", self.topic("availability"),
                                  secrets)
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
        self._acks: deque[tuple[int, str | None]] = deque()  # (mid, refusal or None)
        self._states: deque[str] = deque()
        self._sent: dict[int, int] = {}  # mid -> seq of events handed to paho, not yet acked
        self._last_sent_seq = 0
        self._resend_wait = False
        self._next_stats = time.monotonic() + mc.stats_interval_s
        self._thread = threading.Thread(target=self._run, name="mqtt-publisher", daemon=True)
        self._net = threading.Thread(target=self._net_loop, name="mqtt-network", daemon=True)
        self._net_stop = threading.Event()
        self._link = Link(mc.host, mc.port, mc.reconnect_min_s, mc.reconnect_max_s,
                          client_id=f"edgepose-{self.device_id}")
        self._since = time.time()
        self._disconnect_reason = ""
        self._failure: str | None = None
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
            self._disconnect_reason = self._link.refused(reason_code)
            return
        away = self._link.up()
        logger.info("MQTT connected to %s:%d%s", self.config.host, self.config.port,
                    "" if away is None else f" after {away:.1f} s away")
        self._since = time.time()
        self.counters.connects += 1
        # Retain as published: a retained command keeps its flag even on live delivery, so
        # it can be refused (see the module docstring).
        subs = [(self.topic("set/+"), SubscribeOptions(qos=1, retainAsPublished=True))]
        if self.config.home_assistant.enabled:
            subs.append((f"{self.config.home_assistant.discovery_prefix}/status",
                         SubscribeOptions(qos=1)))
        client.subscribe(subs)
        self._connected = True
        self._just_connected = True
        self._wake.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any,
                       flags: mqtt.DisconnectFlags, reason_code: ReasonCode,
                       properties: Properties | None) -> None:
        if self._connected and not self._stop.is_set():
            self.counters.disconnects += 1
        self._disconnect_reason = str(reason_code)
        self._connected = False
        self._wake.set()

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int,
                    reason_code: ReasonCode, properties: Properties) -> None:
        # deque.append is atomic; no lock (see the module docstring)
        self._acks.append((mid, str(reason_code) if reason_code.is_failure else None))
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
            logger.warning("ignored retained command %s (commands must not be retained; "
                           "clear it with an empty retained message)", msg.topic[:200])
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
        self.client.connect_async(mc.host, mc.port, keepalive=mc.keepalive_s, clean_start=True)
        self._net.start()
        self._thread.start()

    # ------------------------------------------------------------------- network thread

    def _net_loop(self) -> None:
        """Connects, runs paho's loop, reconnects with jittered backoff until closed."""
        client = self.client
        while not self._net_stop.is_set():
            if client.socket() is None:
                if self._stop.is_set():
                    break  # stopping while disconnected: nothing to send, no reconnect
                if not self._link.reconnect(client, self._net_stop):
                    continue
                self._disconnect_reason = ""
            rc = loop_once(client)
            if rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
                continue
            self._connected = False
            self._wake.set()
            if self._net_stop.is_set() or (self._stop.is_set() and client.socket() is None):
                break
            self._link.down(self._disconnect_reason or mqtt.error_string(rc))
            self._link.wait(self._net_stop)

    def _publish(self, name: str, payload: str, *, qos: int = 0, retain: bool = False
                 ) -> mqtt.MQTTMessageInfo:
        return self.client.publish(self.topic(name), payload, qos=qos, retain=retain)

    def _process_acks(self) -> None:
        acked = []
        while self._acks:
            mid, refused = self._acks.popleft()
            seq = self._sent.pop(mid, None)
            if seq is None:
                continue
            if refused is not None:  # the broker took it but will not deliver it
                logger.error("the broker refused event seq %d: %s (check its ACL for %s)",
                             seq, refused, self.topic("events"))
            acked.append(seq)
        if acked:
            self.counters.events_published += self.events.ack_many(acked)
        if self._resend_wait and not self._sent:
            self._resend_wait = False

    def _on_connected(self) -> None:
        self._just_connected = False
        self._publish("availability", "online", qos=1, retain=True)
        self._publish_status("online", None)
        for name in COMMANDS:
            self._publish(f"state/{name}", json.dumps(self.controls.get(name)), qos=1,
                          retain=True)
        if self.config.home_assistant.enabled:
            self._ha_due = True
        if self._sent:
            # paho resends these itself after the CONNACK; new events wait for their acks.
            self._resend_wait = True

    def _publish_status(self, state: str, reason: str | None) -> mqtt.MQTTMessageInfo:
        rep = self.events.report
        payload = {"v": STATUS_SCHEMA_VERSION, "state": state, "reason": reason,
                   "ts": round(time.time(), 3), "since": round(self._since, 3),
                   "journal": {"stream": self.events.stream, "pending": len(self.events),
                               "damaged_at_start": rep.damaged,
                               "new_stream_because": rep.new_stream or None,
                               "write_errors": self.events.write_errors}}
        return self._publish("status", json.dumps(payload), qos=1, retain=True)

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
            # Stopping soon after the start (a source that would not open): the first
            # connection may still be on its way; wait for it so the reason gets out.
            while (not self._connected and self.counters.connects == 0
                   and time.monotonic() < self._deadline):
                self._wake.wait(0.05)
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
                state = "stopped" if self._failure is None else "failed"
                self._since = time.time()
                self._publish_status(state, self._failure)
                info = self._publish("availability", state, qos=1, retain=True)
                try:
                    info.wait_for_publish(max(0.5, self._deadline - time.monotonic()))
                except (RuntimeError, ValueError) as e:
                    logger.warning("could not publish %r: %s", state, e)
                self.client.disconnect()
            else:
                logger.warning("MQTT broker %s:%d away at exit: availability stays as the "
                               "last will says (offline)", self.config.host, self.config.port)
        except Exception:
            logger.exception("MQTT publisher failed")
        finally:
            self.closed.set()

    def close(self, timeout_s: float, failure: str | None = None) -> None:
        """Flushes, says ``stopped`` (or ``failed``) and disconnects.

        Delivers what is queued (while connected, up to ``timeout_s``), publishes the last
        ``stats``, ``status`` and ``availability``, disconnects cleanly (so no last will) and
        closes the journal, which keeps the events not yet acknowledged.

        Args:
            timeout_s: Longest wait for queued events to be acknowledged, s.
            failure: Why the daemon is exiting on an error (``availability = failed``, the
                reason in ``status``); None for a requested stop.
        """
        self._failure = failure
        if not self._thread.is_alive():
            self._net_stop.set()
            if self._net.is_alive():
                self._net.join(10.0)
            self.events.close()
            return
        self._deadline = time.monotonic() + timeout_s
        self._stop.set()
        self._wake.set()
        self._thread.join(timeout_s + 5.0)
        # Let the network thread send the DISCONNECT, then end it.
        end = time.monotonic() + 2.0
        while self.client.socket() is not None and time.monotonic() < end:
            time.sleep(0.02)
        self._net_stop.set()
        self._net.join(10.0)
        if self._sent or len(self.events):
            logger.info("%d event(s) not acknowledged yet: kept in %s for the next start",
                        len(self.events), self.events.path)
        self.events.close()
