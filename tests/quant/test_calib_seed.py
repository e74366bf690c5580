"""`convert --calib-seed`: another draw of the same calibration data (which episodes and which steps),
so a result's dependence on its calibration samples can be measured (docs/quantization.md)."""

from __future__ import annotations

import numpy as np


def test_calib_seed_reaches_the_options_and_changes_the_draw(monkeypatch) -> None:
    import omnimodel.convert as convert_mod
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.cli.main import main
    from omnimodel.demo_assets import DEMO_POLICY_DIR
    from omnimodel.quant.pipeline import load_samples

    seen = {}

    def fake_convert(*args, quant=None, **kwargs):
        seen["quant"] = quant
        raise SystemExit(0)  # stop before any work: only the options are under test

    monkeypatch.setattr(convert_mod, "convert", fake_convert)
    for argv, seed in ((["convert", "openvla-oft", "--bpw", "2.5"], 0),
                       (["convert", "openvla-oft", "--bpw", "2.5", "--calib-seed", "3"], 3)):
        try:
            main(argv)
        except SystemExit:
            pass
        assert seen.pop("quant").seed == seed

    policy = load_policy(DEMO_POLICY_DIR)
    from omnimodel.quant.pipeline import QuantOptions

    draws = [load_samples(policy, QuantOptions(bpw=2.5, seed=s)) for s in (0, 0, 1)]
    assert len(draws[0]) == len(draws[2]) == 32  # the demo split: 8 episodes x 4 steps, whatever the seed
    same = all(np.array_equal(a.proprio, b.proprio) for a, b in zip(draws[0], draws[1]))
    other = all(np.array_equal(a.proprio, b.proprio) for a, b in zip(draws[0], draws[2]))
    assert same and not other
