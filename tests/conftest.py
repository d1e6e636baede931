"""Shared by the unit and integration tests.

Deliberately (almost) empty. Being a conftest.py in a folder without
__init__.py, it puts tests/ on sys.path under pytest's default "prepend"
import mode, which is what lets test modules `import servers` (the helpers in
tests/servers.py) whether pytest runs as `python -m pytest` or as `pytest`.
"""
