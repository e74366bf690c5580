"""Reading a checkpoint's JSON files (config.json, index, statistics) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def read_json(path: Path, error: type[Exception]) -> Any:
    """``path``'s JSON; a missing or malformed file raises ``error`` (the arch package's own error type,
    so each loader's callers catch what they already catch) naming the file."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError as exc:
        raise error(f"{path.name}: missing in {path.parent}") from exc
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise error(f"{path.name}: not valid JSON ({exc})") from exc


__all__ = ["read_json"]
