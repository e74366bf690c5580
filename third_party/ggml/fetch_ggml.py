#!/usr/bin/env python3
"""Obtain the pinned ggml source tree and print its path.

ggml is never committed to this repository. The pin (pin.json) names a source distribution on PyPI
that ships ggml; this script downloads that one file, checks its sha256, extracts only the ggml folder
and caches the result outside the build tree, so rebuilds and CI reruns reuse it.

Resolution order:
  1. --sdist FILE or $OMNIMODEL_GGML_SDIST: a local copy of the pinned sdist (offline machines).
  2. the cache ($OMNIMODEL_CACHE_DIR, else $XDG_CACHE_HOME/omnimodel, else ~/.cache/omnimodel).
  3. a download of the sdist file itself from the package index's simple API (PEP 503/691):
     $OMNIMODEL_GGML_INDEX_URL, else $PIP_INDEX_URL, else https://pypi.org/simple. Standard library
     only: no pip, no build backend, so any Python 3.8+ CMake finds can run this script.

A user's own ggml checkout (OMNIMODEL_GGML_DIR) bypasses this script entirely; CMake handles that.
The last line printed on stdout is the ggml source directory; progress goes to stderr.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
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


def index_url() -> str:
    return (os.environ.get("OMNIMODEL_GGML_INDEX_URL") or os.environ.get("PIP_INDEX_URL")
            or "https://pypi.org/simple").rstrip("/")


def _ssl_context():
    import ssl

    # Honour the CA bundle pip is configured with (corporate proxies), else the system's.
    bundle = os.environ.get("PIP_CERT") or os.environ.get("SSL_CERT_FILE") or os.environ.get("REQUESTS_CA_BUNDLE")
    return ssl.create_default_context(cafile=bundle if bundle and Path(bundle).is_file() else None)


def _get(url: str, accept: str, timeout: float = 60.0):
    import urllib.request

    req = urllib.request.Request(url, headers={"Accept": accept, "User-Agent": "omnimodel-fetch-ggml"})
    if url.startswith("file:"):
        return urllib.request.urlopen(req, timeout=timeout)
    return urllib.request.urlopen(req, timeout=timeout, context=_ssl_context())


def sdist_url(pin: dict) -> str:
    """The sdist's download URL, from the index's project page (JSON when the index speaks PEP 691)."""
    import html.parser
    import urllib.parse

    page = f"{index_url()}/{pin['source_package']}/"
    with _get(page, "application/vnd.pypi.simple.v1+json, text/html;q=0.5") as r:
        body = r.read().decode("utf-8", errors="replace")
        kind = r.headers.get("Content-Type", "")
    if "json" in kind:
        for f in json.loads(body).get("files", []):
            if f.get("filename") == pin["sdist_filename"]:
                return urllib.parse.urljoin(page, f["url"])
    else:
        links: list[str] = []

        class _Links(html.parser.HTMLParser):
            def handle_starttag(self, tag, attrs):
                href = dict(attrs).get("href")
                if tag == "a" and href:
                    links.append(href)

        _Links().feed(body)
        for href in links:
            if href.split("#")[0].rsplit("/", 1)[-1] == pin["sdist_filename"]:
                return urllib.parse.urljoin(page, href.split("#")[0])
    raise RuntimeError(f"{page} does not list {pin['sdist_filename']}")


def download_sdist(pin: dict, dest: Path) -> Path:
    """Fetch the pinned sdist file (its hash is checked by extract_ggml)."""
    log(f"downloading {pin['sdist_filename']} from {index_url()}; this happens once per machine")
    path = dest / pin["sdist_filename"]
    try:
        url = sdist_url(pin)
        with _get(url, "*/*", timeout=300.0) as r, open(path, "wb") as f:
            shutil.copyfileobj(r, f, 1 << 20)
    except Exception as e:  # noqa: BLE001  every failure becomes the same actionable message
        raise SystemExit(
            f"could not download {pin['sdist_filename']} from {index_url()}: {type(e).__name__}: {e}\n"
            "Offline or behind a proxy? Set OMNIMODEL_GGML_INDEX_URL to a reachable package index, point "
            f"OMNIMODEL_GGML_SDIST at a copy of {pin['sdist_filename']}, or OMNIMODEL_GGML_DIR at a ggml "
            f"{pin['ggml_version']} source tree."
        ) from None
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
