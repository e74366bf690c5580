"""The runtime builds a graph once per input names and shapes and reuses it (with the scheduler's
allocation) while they stay: a reused graph must compute exactly what a freshly built one does."""

from __future__ import annotations

import numpy as np
import pytest

from omnimodel import _runtime
from omnimodel.arch import omni_mlp


@pytest.fixture(scope="module")
def mlp_gguf(tmp_path_factory):
    path = tmp_path_factory.mktemp("reuse") / "mlp.gguf"
    cfg = omni_mlp.MLPConfig(widths=(64, 96, 32), norm="layer", activation="gelu_erf_fast")
    omni_mlp.write_gguf(omni_mlp.random_mlp(cfg, "Q8_0", seed=3), path)
    return path


def _x(seed: int, rows: int = 7) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((rows, 64)).astype(np.float32)


def _fresh(path, x, capture=()) -> dict[str, np.ndarray]:
    with _runtime.Model(str(path), n_threads=2) as m:
        return m.run({"x": x}, capture=list(capture))


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> None:
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


def test_reused_graph_equals_a_fresh_one_exactly(mlp_gguf) -> None:
    xs = [_x(0), _x(1), _x(2), _x(0)]
    with _runtime.Model(str(mlp_gguf), n_threads=2) as m:
        got = [m.run({"x": x}) for x in xs]
        stats = m.run_stats()
    assert stats["graph_builds"] == 1 and stats["graph_reuses"] == 3, stats
    for x, g in zip(xs, got):
        _same(g, _fresh(mlp_gguf, x))
    assert not np.array_equal(got[0]["out"], got[1]["out"])  # the new inputs were really used


def test_new_shape_rebuilds_and_captures_reuse(mlp_gguf) -> None:
    with _runtime.Model(str(mlp_gguf), n_threads=2) as m:
        m.run({"x": _x(0)})
        wide = m.run({"x": _x(1, rows=13)})  # another shape: a new graph
        assert m.run_stats()["graph_builds"] == 2
        # capturing goes through the scheduler's eval callback on the same graph and allocation
        everything = m.run({"x": _x(1, rows=13)}, capture=["*"])
        some = m.run({"x": _x(2, rows=13)}, capture=["layers.0.act"])
        stats = m.run_stats()
    assert stats["graph_builds"] == 2 and stats["graph_reuses"] == 2, stats
    _same(wide, _fresh(mlp_gguf, _x(1, rows=13)))
    _same(everything, _fresh(mlp_gguf, _x(1, rows=13), capture=["*"]))
    _same(some, _fresh(mlp_gguf, _x(2, rows=13), capture=["layers.0.act"]))
    assert {"layers.0.linear", "layers.0.norm", "layers.0.act", "out"} <= set(everything)
    assert set(some) == {"layers.0.act", "out"}


def test_profiled_runs_reuse_the_graph_and_time_every_node(mlp_gguf) -> None:
    with _runtime.Model(str(mlp_gguf), n_threads=2) as m:
        plain = m.run({"x": _x(4)})
        m.set_profile(True)
        profiled = m.run({"x": _x(4)})
        nodes = m.profile()
        m.set_profile(False)
        assert m.run_stats()["graph_builds"] == 1
        assert m.profile() == nodes  # kept until the next compute
        m.run({"x": _x(4)})
        assert m.profile() == []
    np.testing.assert_allclose(profiled["out"], plain["out"], rtol=0, atol=1e-6)  # node by node: no fusion
    ops = [n["op"] for n in nodes]
    assert ops.count("MUL_MAT") == 2 and "NORM" in ops and "MAP_CUSTOM1" in ops
    mm = [n for n in nodes if n["op"] == "MUL_MAT"]
    assert all(n["src0_is_weight"] and n["src_type"][0] == 8 for n in mm)  # Q8_0 weights
    assert mm[0]["src_ne"][1][:2] == (64, 7) and mm[0]["ne"][:2] == (96, 7)
    assert all(n["seconds"] >= 0 and n["cpu_seconds"] >= 0 for n in nodes)


def test_invalid_ids_are_refused_on_a_reused_graph(oft_generated_graph, tmp_path) -> None:
    """Token ids are checked on every compute, not only when the graph is built; a refused compute
    leaves the model usable."""
    from omnimodel.arch.openvla_oft import export as oft_export
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.validate.reference import parity_observation, run_reference

    policy = load_policy(oft_generated_graph.checkpoint)
    gguf = oft_export.write_gguf(policy, tmp_path / "m.gguf", "f32")
    images, proprio = parity_observation(policy, 0)
    inputs = run_reference(policy, images, "pick up the bowl", proprio).inputs
    with _runtime.Model(str(gguf), n_threads=1) as m:
        first = m.run(inputs)
        bad = dict(inputs, input_ids=inputs["input_ids"].copy())
        bad["input_ids"][0, 1] = 1e6  # outside the vocabulary, same shape: the graph is reused
        with pytest.raises(_runtime.RuntimeStatusError, match="is not an id"):
            m.run(bad)
        again = m.run(inputs)
        assert m.run_stats()["graph_builds"] == 1
    _same(first, again)


def test_predict_action_reuses_the_graph_across_observations(oft_generated_graph, tmp_path) -> None:
    """The robot path: new frames every step, same instruction -> one graph; each step equals a fresh
    context's answer exactly."""
    from omnimodel.arch.openvla_oft import export as oft_export
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.validate.reference import parity_observation

    policy = load_policy(oft_generated_graph.checkpoint)
    gguf = oft_export.write_gguf(policy, tmp_path / "m.gguf", "f16")
    steps = [parity_observation(policy, seed) for seed in (0, 1, 2)]
    with _runtime.Model(str(gguf), n_threads=2) as m:
        actions = [m.predict_action(images, "open the drawer", proprio) for images, proprio in steps]
        stats = m.run_stats()
    assert stats["graph_builds"] == 1 and stats["graph_reuses"] == 2, stats
    for (images, proprio), a in zip(steps, actions):
        with _runtime.Model(str(gguf), n_threads=2) as fresh:
            np.testing.assert_array_equal(a, fresh.predict_action(images, "open the drawer", proprio))
    assert not np.array_equal(actions[0], actions[1])
