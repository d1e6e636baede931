"""Load simulator: publishes paced sensor readings over MQTT and verifies what the bridge stored."""
