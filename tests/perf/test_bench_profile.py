"""`omnimodel bench --profile`: the per-op profile and the predict_action memory probe, on the demo."""

from __future__ import annotations

import json

import pytest

from omnimodel.cli.main import main
from omnimodel.profile import node_category, node_flops, summarize


def _node(op, name="", seconds=1e-3, src0_weight=False, types=(0, 0, -1), ne=(4, 3, 1, 1), src_ne=None):
    return {"name": name, "op": op, "type": 0, "src_type": types, "src0_is_weight": src0_weight, "ne": ne,
            "src_ne": src_ne or [(5, 4, 1, 1), (5, 3, 1, 1), (1, 1, 1, 1)], "seconds": seconds,
            "cpu_seconds": seconds}


def test_summary_groups_by_op_and_stage() -> None:
    nodes = [_node("MUL_MAT", src0_weight=True, types=(30, 0, -1)), _node("GELU_ERF", name="a"),
             _node("MUL_MAT", name="end_a", types=(0, 0, -1)), _node("ADD", seconds=2e-3), _node("ADD", name="end_b")]
    assert node_category(nodes[0]) == "MUL_MAT w=bf16" and node_category(nodes[2]) == "MUL_MAT act"
    assert node_flops(nodes[0]) == 2 * 5 * 4 * 3
    p = summarize([nodes, nodes], {"a": "end_a", "b": "end_b"}, last_stage="c")
    assert p.n_nodes == 5 and p.total_s == pytest.approx(6e-3)
    assert p.stage_s == pytest.approx({"a": 3e-3, "b": 3e-3})
    assert [r.category for r in p.by_stage["b"]] == ["ADD"] and p.by_stage["b"][0].calls == 2
    rows = {r.category: r for r in p.by_op}
    assert rows["MUL_MAT w=bf16"].gflops == pytest.approx(2 * 5 * 4 * 3 / 1e-3 / 1e9)
    assert rows["ADD"].calls == 2 and rows["ADD"].gflops is None
    assert [r.category for r in p.by_op][0] == "ADD"  # largest time first


def test_bench_profile_and_memory_on_the_demo(tmp_path, capsys) -> None:
    out = tmp_path / "demo"
    assert main(["convert", "openvla-oft", "--demo", "--out", str(out)]) == 0
    capsys.readouterr()
    assert main(["bench", str(out), "--no-torch", "--profile", "--runs", "2", "--warmup", "1",
                 "--json", str(tmp_path / "b.json")]) == 0
    text = capsys.readouterr().out
    assert "runtime profile" in text and "ATTN(omni)" in text and "memory (predict_action" in text
    b = json.loads((tmp_path / "b.json").read_text())
    prof = b["runtime"]["profile"]
    assert set(prof["stage_ms"]) == {"vision", "llm", "head"} and prof["n_nodes"] > 100
    cats = {r["category"] for r in prof["by_op"]}
    assert "MUL_MAT w=f32" in cats and "GELU_ERF(fast)" in cats
    mem = b["runtime"]["memory"]
    if mem["available"]:
        assert mem["gguf_bytes"] == (out / "model.gguf").stat().st_size
        assert mem["peak_rss"] >= mem["base_rss"] > 0 and mem["compute_buffer_bytes"] > 0
        assert mem["graph_builds"] == 1 and mem["graph_reuses"] >= 1
