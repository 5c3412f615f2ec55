"""Where the package finds its non-Python files.

``schemas/`` (the versioned persisted formats) lives at the top of the repository,
beside ``factory/``: found there in a checkout or an editable install, and under
``<prefix>/share/factory/schemas`` in a regular install (pyproject ``data-files``).
"""
from __future__ import annotations

import sys
import sysconfig
from pathlib import Path


def _schemas_dir() -> Path:
    candidates = [Path(__file__).resolve().parents[1] / "schemas",
                  Path(sys.prefix) / "share" / "factory" / "schemas",
                  Path(sysconfig.get_path("data")) / "share" / "factory" / "schemas"]
    for path in candidates:
        if (path / "manifest.v1.json").is_file():
            return path
    return candidates[0]  # a missing schema then fails loudly with this path in the message


SCHEMAS_DIR = _schemas_dir()
