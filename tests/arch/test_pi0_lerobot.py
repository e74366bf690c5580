"""pi0 / pi0.5 reference against LeRobot's own implementation (benchmarks/pi0_lerobot_crosscheck.py).

lerobot is not an omnimodel dependency (0.6.1 needs Python >= 3.12 and transformers 5); the check runs
in a separate environment named by ``OMNIMODEL_LEROBOT_PYTHON`` (a Python whose ``import lerobot``
works) and is skipped otherwise. The same facts are checked without lerobot by test_pi0_reference.py
(an independent derivation) on every run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYTHON = os.environ.get("OMNIMODEL_LEROBOT_PYTHON")


def _lerobot_importable(python: str) -> bool:
    probe = subprocess.run([python, "-c", "import lerobot.policies.pi05.modeling_pi05"], capture_output=True,
                           timeout=300)
    return probe.returncode == 0


@pytest.mark.skipif(not PYTHON, reason="OMNIMODEL_LEROBOT_PYTHON is not set (no environment with lerobot[pi])")
def test_equal_to_lerobot(tmp_path: Path):
    if not _lerobot_importable(PYTHON):
        pytest.skip(f"{PYTHON}: cannot import lerobot.policies.pi05")
    out = tmp_path / "report.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    run = subprocess.run([PYTHON, str(ROOT / "benchmarks/pi0_lerobot_crosscheck.py"), "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=1200)
    assert out.is_file(), run.stderr[-3000:]
    report = json.loads(out.read_text())
    assert not report["failed"], json.dumps(report, indent=1)
    assert run.returncode == 0 and len(report["cases"]) == 6
    print(json.dumps(report["cases"], indent=1), file=sys.stderr)
