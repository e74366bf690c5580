"""omnimodel's download cache: where fetched artefacts live and how their pins are checked.

``OMNIMODEL_CACHE_DIR`` wins, then ``$XDG_CACHE_HOME/omnimodel``, then ``~/.cache/omnimodel``. Whatever is
cached there (pretrained weights, the llama.cpp benchmark build) is re-derivable from a pinned download,
so deleting the folder only costs time.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path


def cache_root() -> Path:
    if os.environ.get("OMNIMODEL_CACHE_DIR"):
        return Path(os.environ["OMNIMODEL_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "omnimodel"


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file, read in 1 MiB chunks (wheels and source archives of hundreds of MB)."""
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


__all__ = ["cache_root", "sha256_file"]
