"""Progress bars on stderr (tqdm, which transformers already brings), or silence.

Bars go to stderr so that a command's stdout stays parseable; ``enabled=False`` (tests, ``--quiet``)
gives an object with the same methods that prints nothing.
"""

from __future__ import annotations

import sys
from typing import Any


class _Silent:
    def __init__(self, total: int | None = None, **_: Any) -> None:
        self.total = total
        self.n = 0

    def update(self, n: int = 1) -> None:
        self.n += n

    def set_postfix_str(self, s: str = "", refresh: bool = True) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> _Silent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def progress_bar(total: int, desc: str, enabled: bool = True, unit: str = "ep") -> Any:
    if not enabled:
        return _Silent(total=total)
    try:
        from tqdm import tqdm
    except ImportError:  # not installed: no bar rather than no run
        return _Silent(total=total)
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True, leave=True)


__all__ = ["progress_bar"]
