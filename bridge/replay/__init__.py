"""Where replay lives: `python -m bridge replay-rejected` re-validates dead letters and stores those now valid.

The rules are pure (planning), the database side is `PostgresReplayStore`
(postgres), and the command wires settings, a connection and the run (command).
"""

from __future__ import annotations

from bridge.replay.command import build_parser, run_replay

__all__ = ["build_parser", "run_replay"]
