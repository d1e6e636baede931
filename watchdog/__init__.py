"""The iot-sensors-bridge watchdog: checks the broker, database and bridge workers, alerts Discord.

Not PyPI's `watchdog` (file-system events): PROJECT tells the two apart.
"""

from __future__ import annotations

PROJECT = "iot-sensors-bridge"
