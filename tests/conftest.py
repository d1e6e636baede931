"""Shared by every test: the fixture plugins (psycopg's tests/fix_*.py pattern).

This folder has no __init__.py, so pytest's default "prepend" import mode puts
it on sys.path: that is what lets pytest_plugins name the fix_* modules, and
test modules import `from fix_measure import Measure`. The helpers those
fixtures drive (servers, workers, traffic) are the `devstack` package.
"""

pytest_plugins = ["fix_servers", "fix_watchdog", "fix_measure"]
