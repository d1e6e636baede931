"""The broker: its configurations (mosquitto.conf, site.conf) and the generator of its accounts (dynsec)."""
