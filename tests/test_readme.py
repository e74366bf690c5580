"""The README's Python example runs as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_python_example_runs(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert blocks, "README has no python example"
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), ns)  # noqa: S102  (our own README)
    # The example's last line computes y from a one-layer model: check it is that layer's output.
    import numpy as np

    assert ns["y"]["out"].shape == (8, 256)
    assert ns["err"] < 0.02 * np.abs(ns["x"] @ ns["w_hat"].T).max()
    assert (tmp_path / "model.gguf").is_file()
    assert np.isfinite(ns["w_hat"]).all() and ns["w_hat"].shape == (256, 1024)
