"""The daemon's communication with the outside: MQTT publishing, the event queue, commands.

* :mod:`edge.comms.events` - tracker events to published events (confirmed tracks only) and the
  persistent, bounded, acknowledged event queue;
* :mod:`edge.comms.commands` - validation of ``set/<name>`` commands;
* :mod:`edge.comms.system` - CPU, memory, temperature and throttling figures for ``stats``;
* :mod:`edge.comms.homeassistant` - Home Assistant MQTT discovery payloads;
* :mod:`edge.comms.mqtt` - the paho-mqtt client and its publisher thread.
"""
