"""`python -m bridge partition`: partitioned readings with pg_partman, set up and maintained by the owner.

Its own settings (settings), pg_partman's installation, conversion and layout
(partman), the retention of the growing tables (retention), and the command (command).
"""

from __future__ import annotations

from bridge.partition.command import connect, main, run_setup
from bridge.partition.settings import PartitionSettings

__all__ = ["PartitionSettings", "connect", "main", "run_setup"]
