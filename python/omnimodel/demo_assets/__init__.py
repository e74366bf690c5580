"""Built-in demo assets, shipped as package data (no code runs on import).

``DEMO_POLICY_DIR``: a trained tiny OpenVLA-OFT policy (1.2 M parameters, 56 px, Meta-World platform row)
in the real OFT checkpoint layout, trained by ``omnimodel train-demo`` (commands and closed-loop success
in docs/simbench.md and in its ``omnimodel_training.json``). ``DEMO_CALIB_DIR``: a small episode dataset
(2 held-out calib episodes per task, same statistics) for calibration and open-loop checks.

``PI05_DEMO_POLICY_DIR``: a trained tiny pi0.5 (0.8 M parameters, the real module layout, 56 px) in
LeRobot's checkpoint layout, trained by ``omnimodel train-demo --arch pi05`` on the same Meta-World
collection plus more episodes of the same tasks (docs/pi0.md, its ``omnimodel_training.json``). Its
normalisation statistics are those of ``DEMO_CALIB_DIR``'s collection, so that split is its calibration
split too.

``MT9_POLICY_DIR``: the mt9 benchmark policy (OpenVLA-OFT small56, 6.9 M parameters, 56 px, goal and
object positions in its 10-D state) that issue #14's quantization tables are measured on, trained by
``omnimodel train-demo`` on nine Meta-World tasks (docs/simbench.md, its ``omnimodel_training.json``);
``MT9_CALIB_DIR``: its calibration split (2 held-out episodes per task, the training statistics). Shipped
so that the grid in docs/quantization.md reruns from a clone without the hour of collection and training.
"""

from __future__ import annotations

from pathlib import Path

DEMO_POLICY_DIR = Path(__file__).resolve().parent / "oft_metaworld_tiny"
DEMO_CALIB_DIR = Path(__file__).resolve().parent / "metaworld_calib"
PI05_DEMO_POLICY_DIR = Path(__file__).resolve().parent / "pi05_metaworld_tiny"
MT9_POLICY_DIR = Path(__file__).resolve().parent / "oft_metaworld_mt9"
MT9_CALIB_DIR = Path(__file__).resolve().parent / "metaworld_mt9_calib"

__all__ = ["DEMO_POLICY_DIR", "DEMO_CALIB_DIR", "MT9_CALIB_DIR", "MT9_POLICY_DIR", "PI05_DEMO_POLICY_DIR"]
