"""The project's scripts (files run by path, not packages) loaded as modules, for the tests that call them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from devstack.processes import REPO_ROOT


def load_script(path: str) -> ModuleType:
    """One of the project's scripts by its path from the repository root, e.g. "scripts/local_stack.py"."""
    spec = importlib.util.spec_from_file_location(Path(path).stem, REPO_ROOT / path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {REPO_ROOT / path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module
