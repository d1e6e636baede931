"""simulator.replica: WAL positions as PostgreSQL writes them (its waits are driven by test_simulator_verify.py)."""

from __future__ import annotations

from simulator.replica import lsn_text


def test_lsn_text_is_what_postgresql_writes() -> None:
    assert lsn_text(0x3000148) == "0/3000148"
    assert lsn_text((0x2A << 32) + 0x10) == "2A/10"
