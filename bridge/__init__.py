"""iot-sensors-bridge: stores MQTT sensor readings in PostgreSQL exactly once."""

__version__ = "0.1.0"
