"""third_party/ggml/fetch_ggml.py: the pin is verified, extracted atomically and cached."""

from __future__ import annotations

import importlib.util
import io
import json
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
FETCH = REPO / "third_party" / "ggml" / "fetch_ggml.py"


def load_fetch():
    spec = importlib.util.spec_from_file_location("fetch_ggml", FETCH)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def fake_sdist(path: Path, pin: dict) -> None:
    root = pin["sdist_filename"].removesuffix(".tar.gz")
    files = {
        f"{root}/{pin['ggml_subdir']}/CMakeLists.txt": b"project(ggml)\n",
        f"{root}/{pin['ggml_subdir']}/include/ggml.h": b"// header\n",
        f"{root}/README.md": b"not ggml\n",
    }
    with tarfile.open(path, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def test_pin_is_recorded():
    pin = json.loads((REPO / "third_party" / "ggml" / "pin.json").read_text())
    assert pin["ggml_version"] == "0.25.3"
    assert pin["source_package"] == "llama-cpp-python" and pin["source_version"] == "0.3.36"
    assert len(pin["sdist_sha256"]) == 64


def test_sha_mismatch_is_refused(tmp_path):
    fetch = load_fetch()
    pin = json.loads((REPO / "third_party" / "ggml" / "pin.json").read_text())
    sdist = tmp_path / pin["sdist_filename"]
    fake_sdist(sdist, pin)
    target = tmp_path / "cache" / "ggml-x"
    with pytest.raises(SystemExit, match="sha256 mismatch"):
        fetch.extract_ggml(pin, sdist, target)
    assert not target.exists()
    assert not any((tmp_path / "cache").glob(".ggml-*")), "no staging folder may be left behind"


def test_extracts_only_ggml(tmp_path):
    fetch = load_fetch()
    pin = json.loads((REPO / "third_party" / "ggml" / "pin.json").read_text())
    sdist = tmp_path / pin["sdist_filename"]
    fake_sdist(sdist, pin)
    pin = {**pin, "sdist_sha256": fetch.sha256_of(sdist)}
    target = tmp_path / "cache" / "ggml-x"
    fetch.extract_ggml(pin, sdist, target)
    files = sorted(p.relative_to(target).as_posix() for p in target.rglob("*") if p.is_file())
    assert files == ["ggml/CMakeLists.txt", "ggml/OMNIMODEL_PIN", "ggml/include/ggml.h"]


def test_download_needs_only_the_standard_library(tmp_path):
    """An empty cache, a package index over HTTP and a Python run with -I -S (no site-packages, so no
    pip and no build backend): the sdist file is fetched, its hash checked, ggml unpacked (issue 13)."""
    import functools
    import http.server
    import shutil
    import subprocess
    import sys
    import threading

    pin = json.loads((REPO / "third_party" / "ggml" / "pin.json").read_text())
    served = tmp_path / "index"
    project = served / "simple" / pin["source_package"]
    project.mkdir(parents=True)
    fake_sdist(served / pin["sdist_filename"], pin)
    digest = load_fetch().sha256_of(served / pin["sdist_filename"])
    (project / "index.html").write_text(
        f'<html><body><a href="../../{pin["sdist_filename"]}#sha256={digest}">{pin["sdist_filename"]}</a></body></html>'
    )
    script_dir = tmp_path / "script"  # the script reads pin.json beside it: pin the fake sdist's hash
    script_dir.mkdir()
    shutil.copy(FETCH, script_dir / "fetch_ggml.py")
    (script_dir / "pin.json").write_text(json.dumps({**pin, "sdist_sha256": digest}))

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
               "OMNIMODEL_GGML_INDEX_URL": f"http://127.0.0.1:{server.server_address[1]}/simple"}
        proc = subprocess.run([sys.executable, "-I", "-S", str(script_dir / "fetch_ggml.py"), "--cache-dir",
                               str(tmp_path / "cache")], capture_output=True, text=True, env=env, timeout=120)
    finally:
        server.shutdown()
    assert proc.returncode == 0, proc.stderr
    src = Path(proc.stdout.strip().splitlines()[-1])
    assert (src / "CMakeLists.txt").is_file() and (src / "include" / "ggml.h").is_file()
    assert not any((tmp_path / "cache").glob(".ggml-*")), "no staging folder may be left behind"


def test_unreachable_index_names_the_ways_out(tmp_path):
    import subprocess
    import sys

    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "OMNIMODEL_GGML_INDEX_URL": "http://127.0.0.1:9/simple"}
    proc = subprocess.run([sys.executable, "-I", "-S", str(FETCH), "--cache-dir", str(tmp_path / "cache")],
                          capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode != 0
    assert "could not download" in proc.stderr and "OMNIMODEL_GGML_SDIST" in proc.stderr and "Traceback" not in proc.stderr
