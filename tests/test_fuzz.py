"""No crash on any file or call (issue 13): the crash classes found by fuzzing, each as a replayable
case that must now be refused with a clean error; a fixed-seed slice of the mutation fuzzer; the crash
corpus; and the C API / binding misuse catalogue. Every case runs in its own forked process
(omnimodel.fuzz.run), so a regression shows up as a counted crash, not as a dead test run.

The campaign itself (10,000+ files, the real llama.cpp GGUF, timings) is benchmarks/fuzz_gguf.py;
its counts are in docs/robustness.md.
"""

from __future__ import annotations

import json
import math
import random
import struct
from pathlib import Path

import pytest

from omnimodel.fuzz import misuse
from omnimodel.fuzz.mutate import ARR, F32, STR, U32, encode_value, parse, random_case
from omnimodel.fuzz.run import Seed, run_cases
from omnimodel.fuzz.seeds import toy_seeds

# Replayable findings: {"seed", "ops", "found"} per line. It starts with the crash classes issue 13
# reported (found = what the issue saw); benchmarks/fuzz_gguf.py --corpus appends new findings.
CORPUS = Path(__file__).with_name("fuzz_corpus.jsonl")
SLICE_CASES = 200  # about a minute on two busy cores
SLICE_SEED = 13


@pytest.fixture(scope="module")
def toys() -> dict[str, Seed]:
    return {s.name: s for s in toy_seeds(("F32", "Q4_K", "IQ4_NL", "Q1_0"))}


@pytest.fixture(scope="module")
def oft(generated_oft_plugin, tmp_path_factory) -> Seed:
    from omnimodel.arch.openvla_oft import load_policy
    from omnimodel.arch.openvla_oft.export import write_gguf

    path = write_gguf(load_policy(generated_oft_plugin.checkpoint), tmp_path_factory.mktemp("fuzz") / "oft.gguf", "f32")
    return Seed("oft-miniature", path.read_bytes(), str(generated_oft_plugin.library))


def _run(seed: Seed, ops, tmp_path: Path):
    (result,) = run_cases([(seed, ops)], tmp_path / "cases").results
    return result


def _f32(v: float) -> str:
    return encode_value(F32, v).hex()


# ---------------------------------------------------------------------- crash classes, one case each

# (what, operations, a phrase the refusal must contain). Before the fix each of these aborted, crashed
# or raised a traceback (issue 13).
R = {"op": "repack"}  # re-lay the data for the new type, so gguf's own checks pass and ours are reached

TOY_CLASSES = [
    ("bias F32 -> I32 (same size)", [{"op": "tensor_type", "tensor": "layers.0.bias", "type": 26}, R], "cannot compute with"),
    ("bias F32 -> I16", [{"op": "tensor_type", "tensor": "layers.0.bias", "type": 25}, R], "cannot compute with"),
    ("norm weight F32 -> F16", [{"op": "tensor_type", "tensor": "layers.0.norm.weight", "type": 1}, R], "must be F32"),
    ("norm bias F32 -> BF16", [{"op": "tensor_type", "tensor": "layers.0.norm.bias", "type": 30}, R], "must be F32"),
    ("bias F32 -> Q8_0", [{"op": "tensor_type", "tensor": "layers.1.bias", "type": 8}, R], "must be F32"),
    ("matmul weight -> I16", [{"op": "tensor_type", "tensor": "layers.0.weight", "type": 25}, R], "cannot compute with"),
    ("matmul weight -> I8", [{"op": "tensor_type", "tensor": "layers.1.weight", "type": 24}, R], "cannot compute with"),
    ("matmul weight -> F64", [{"op": "tensor_type", "tensor": "layers.0.weight", "type": 28}, R], "cannot compute with"),
    ("bias reshaped to {1, n}", [{"op": "tensor_ne", "tensor": "layers.0.bias", "ne": [1, 256]}, R], "expected [256]"),
    ("norm_eps NaN", [{"op": "kv_add", "key": "omni-mlp.norm_eps", "vtype": F32, "hex": _f32(math.nan)},
                      {"op": "kv_drop", "key": "omni-mlp.norm_eps"}], "finite"),
    ("norm_eps negative", [{"op": "kv_value", "key": "omni-mlp.norm_eps", "vtype": F32, "hex": _f32(-1.0)}], ">= 0"),
    ("non-UTF-8 tensor name", [{"op": "tensor_name", "tensor": "layers.0.bias", "hex": b"layers.0.\xff\xfe".hex()}], "UTF-8"),
    ("non-UTF-8 architecture", [{"op": "kv_value", "key": "general.architecture", "vtype": STR,
                                 "hex": encode_value(STR, b"omni-\xc3(").hex()}], "UTF-8"),
    ("padded widths are strings", [{"op": "kv_add", "key": "omnimodel.padded.names", "vtype": ARR,
                                    "hex": encode_value(ARR, [b"layers.0.weight"], STR).hex()},
                                   {"op": "kv_add", "key": "omnimodel.padded.widths", "vtype": ARR,
                                    "hex": encode_value(ARR, [b"abc"], STR).hex()}], "inspect"),
    ("padded widths NaN", [{"op": "kv_add", "key": "omnimodel.padded.names", "vtype": ARR,
                            "hex": encode_value(ARR, [b"layers.0.weight"], STR).hex()},
                           {"op": "kv_add", "key": "omnimodel.padded.widths", "vtype": ARR,
                            "hex": encode_value(ARR, [math.nan], F32).hex()}], "inspect"),
    ("padded widths nested", [{"op": "kv_add", "key": "omnimodel.padded.names", "vtype": ARR,
                               "hex": encode_value(ARR, [b"layers.0.weight"], STR).hex()},
                              {"op": "kv_add", "key": "omnimodel.padded.widths", "vtype": ARR,
                               "hex": (struct.pack("<IQ", ARR, 1) + encode_value(ARR, [3], U32)).hex()}], "inspect"),
]


@pytest.mark.parametrize("what, ops, phrase", TOY_CLASSES, ids=[c[0] for c in TOY_CLASSES])
def test_toy_crash_class_is_refused(toys, tmp_path, what, ops, phrase):
    r = _run(toys["toy-f32"], ops, tmp_path)
    assert r.outcome == "rejected", (r.outcome, r.detail)
    assert phrase in r.detail, r.detail


def _oft_classes():
    k = "openvla-oft."
    stats = k + "norm_stats.action."

    def arr(values, element):
        return encode_value(ARR, values, element).hex()

    return [
        ("embed_tokens -> I8", [{"op": "tensor_type", "tensor": "language_model.model.embed_tokens.weight", "type": 24}, R],
         "cannot compute with"),
        ("embed_tokens -> I32", [{"op": "tensor_type", "tensor": "language_model.model.embed_tokens.weight", "type": 26}, R],
         "cannot compute with"),
        ("cls_token F32 -> F16 (concatenated with F32)",
         [{"op": "tensor_type", "tensor": "vision_backbone.featurizer.cls_token", "type": 1}, R], "concatenate"),
        ("action low as strings", [{"op": "kv_value", "key": stats + "low", "vtype": ARR, "hex": arr([b"a"] * 4, STR)}],
         "expected numbers"),
        ("action low NaN", [{"op": "kv_value", "key": stats + "low", "vtype": ARR, "hex": arr([math.nan] * 4, F32)}],
         "finite"),
        ("action high inf", [{"op": "kv_value", "key": stats + "high", "vtype": ARR, "hex": arr([math.inf] * 4, F32)}],
         "finite"),
        ("huge chunk x action_dim", [{"op": "kv_value", "key": k + "num_actions_chunk", "vtype": U32,
                                      "hex": encode_value(U32, 2**31 - 1).hex()},
                                     {"op": "kv_value", "key": k + "action_dim", "vtype": U32,
                                      "hex": encode_value(U32, 2**31 - 1).hex()}], "must be in"),
        ("image_size 2^31", [{"op": "kv_value", "key": k + "image_size", "vtype": U32, "hex": encode_value(U32, 2**31).hex()}],
         "must be in"),
        ("400 KB prompt template", [{"op": "kv_value", "key": k + "prompt.template", "vtype": STR,
                                     "hex": encode_value(STR, b"{instruction} " * 30000).hex()}], "at most 4096"),
        ("llm block_count -1 (found by the final campaign: an unused constant aborted the upload)",
         [{"op": "kv_value", "key": k + "llm.block_count", "vtype": 11, "hex": (2**64 - 1).to_bytes(8, "little").hex()}],
         "must be in"),
        ("token types as strings", [{"op": "kv_value", "key": "tokenizer.ggml.token_type", "vtype": ARR,
                                   "hex": arr([b"x"], STR)}], "i32 values"),
    ]


OFT_CLASSES = _oft_classes()


@pytest.mark.parametrize("what, ops, phrase", OFT_CLASSES, ids=[c[0] for c in OFT_CLASSES])
def test_oft_crash_class_is_refused(oft, tmp_path, what, ops, phrase):
    r = _run(oft, ops, tmp_path)
    assert r.outcome == "rejected", (r.outcome, r.detail)
    assert phrase in r.detail, r.detail


def test_unmutated_seeds_run(toys, oft, tmp_path):
    """The harness must not call everything 'rejected': the seeds themselves run to the end."""
    tally = run_cases([(s, []) for s in [*toys.values(), oft]], tmp_path / "cases")
    assert [r.outcome for r in tally.results] == ["ok"] * (len(toys) + 1), [r.detail for r in tally.results]


# ---------------------------------------------------------------------- the fuzzer, a fixed slice


def test_fixed_seed_slice_never_crashes(toys, oft, tmp_path):
    seeds = [*toys.values(), oft]
    layouts = {s.name: parse(s.data) for s in seeds}
    rng = random.Random(SLICE_SEED)
    cases = []
    for _ in range(SLICE_CASES):
        s = rng.choice(seeds)
        cases.append((s, random_case(layouts[s.name], len(s.data), rng)))
    tally = run_cases(cases, tmp_path / "cases", timeout=20.0)
    bad = [(r.seed, r.outcome, r.ops, r.detail[-500:]) for r in tally.failures()]
    assert not bad, bad
    counts = tally.counts()
    assert counts["ok"] > 0 and counts["rejected"] > 0, counts  # the slice exercises both paths


def _corpus() -> list[dict]:
    """Corpus entries the crash-class tests above do not already run (with their message checks)."""
    if not CORPUS.is_file():
        return []
    covered = {json.dumps(ops, sort_keys=True) for _, ops, _ in TOY_CLASSES + OFT_CLASSES}
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    return [r for r in rows if json.dumps(r["ops"], sort_keys=True) not in covered]


def test_crash_classes_are_in_the_corpus():
    rows = [json.loads(line) for line in CORPUS.read_text().splitlines() if line.strip()]
    stored = {json.dumps(r["ops"], sort_keys=True) for r in rows}
    assert all(json.dumps(ops, sort_keys=True) in stored for _, ops, _ in TOY_CLASSES + OFT_CLASSES)


@pytest.mark.parametrize("case", _corpus() or [None],
                         ids=lambda c: "empty" if c is None else f"{c['seed']}:{c.get('what') or c['found']}")
def test_crash_corpus_replays_cleanly(toys, oft, tmp_path, case):
    if case is None:
        pytest.skip("the crash corpus is empty")
    seeds = {**toys, oft.name: oft}
    if case["seed"] not in seeds:
        seeds.update({s.name: s for s in toy_seeds((case["seed"].removeprefix("toy-").upper(),))})
    r = _run(seeds[case["seed"]], case["ops"], tmp_path)
    assert r.outcome in ("ok", "rejected"), (r.outcome, r.detail)


# ---------------------------------------------------------------------- misuse of the C API and binding


@pytest.fixture(scope="module")
def misuse_env(oft, tmp_path_factory) -> misuse.Env:
    work = tmp_path_factory.mktemp("misuse")
    vla = work / "oft.gguf"
    vla.write_bytes(oft.data)
    return misuse.toy_env(work, vla, oft.plugin)


@pytest.mark.parametrize("item", list(misuse.ITEMS))
def test_misuse_keeps_the_promise(misuse_env, item):
    r = misuse.run_item(item, misuse_env, timeout=120.0)
    assert r.outcome == "ok", r.detail


def test_c_misuse_catalogue(misuse_env, tmp_path):
    """cpp/tests/c_api_tests.c, compiled against the installed library: the same promises from C."""
    import shutil
    import subprocess

    from omnimodel.paths import include_dir, library_dir

    cc = shutil.which("cc") or shutil.which("gcc")
    assert cc, "a C compiler is needed (the package itself was built with one)"
    exe = tmp_path / "c_api_tests"
    src = Path(__file__).resolve().parents[1] / "cpp" / "tests" / "c_api_tests.c"
    subprocess.run([cc, "-std=c99", "-O1", str(src), f"-I{include_dir()}", f"-L{library_dir()}", "-lomnimodel", "-lm",
                    f"-Wl,-rpath,{library_dir()}", "-o", str(exe)], check=True, capture_output=True, text=True)
    from omnimodel.arch.pi0 import Pi0MiniatureSpec, load_policy, write_miniature
    from omnimodel.arch.pi0.gguf_meta import write_robot_gguf

    pi0 = write_robot_gguf(load_policy(write_miniature(tmp_path / "pi05", Pi0MiniatureSpec(kind="pi05"))),
                           tmp_path / "pi05-robot.gguf")
    proc = subprocess.run([str(exe), str(misuse_env.toy), str(misuse_env.vla), misuse_env.plugin, str(pi0)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.strip().endswith("0 failed"), proc.stdout
