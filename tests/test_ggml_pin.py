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
