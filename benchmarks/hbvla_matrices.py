#!/usr/bin/env python3
"""HBVLA on one real-width matrix of each shape: where every stored bit goes, and the error it buys.

    nice -n 19 python benchmarks/hbvla_matrices.py --out runs/hbvla_matrices.json [--quick]

Matrices (PyTorch [out, in]):
  * SmolLM2-135M's pretrained layer ``--layer`` (the real-width Llama of ``real_width_spec(pretrained=True)``):
    q_proj 576x576, gate_proj 1536x576, down_proj 576x1536, with H = X X^T from the real inputs of those
    matrices when the pretrained model runs on ``--tokens`` random token ids;
  * ViT shapes with random weights (the miniature's N(0, 1/in) init): 1024x1024 (DINOv2 attn.proj),
    4096x1024 (DINOv2 mlp.fc1), 1152x4304 (SigLIP mlp.fc2), with H from random activations that have a
    few outlier channels and correlated inputs (X = (I + low rank) Z).

Methods: HBVLA with block and element grouping (salient cap 128), each with and without error feedback,
and block grouping without feedback and without a salient part; the BiLLM-style preset; sign x alpha
(Q1_0 RTN) in the same framework and through ggml; and ggml's K/IQ types at similar bpw with the imatrix diag(H) and with GPTQ. Every method
is scored by the relative Frobenius error ||W - W_hat|| / ||W|| and the relative Hessian-weighted error
tr(E H E^T) / tr(W H W^T), at its honest bits per weight (padding, scales, indices, everything stored).

It also checks the policy-aware Hessian on the pretrained attention block: binarize q/k/v/o with
H = X X^T, derive H~ from the block loss, binarize again with H~, and compare the block output error
||MHSA(X) - MHSA_hat(X)|| / ||MHSA(X)|| on held-out tokens.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from omnimodel.quant.hbvla.config import billm_style, hbvla, hbvla_element, sign_alpha
from omnimodel.quant.hbvla.method import h_error, quantize_matrix
from omnimodel.quant.hbvla.size import count_bits
from omnimodel.quant.hbvla.storage import encode_matrix

PARTS = ("signs", "group_bits", "scales", "means", "permutation", "salient_idx", "salient_signs",
         "salient_scales", "salient_row_scales", "salient_means", "header", "padding")


# ------------------------------------------------------------------------------------------ matrices


def _llama(layer: int, n_tokens: int, seed: int):
    from omnimodel.arch.openvla_oft.config import LlamaConfig
    from omnimodel.arch.openvla_oft.modeling import LlamaDecoderLayer, rope_cos_sin
    from omnimodel.arch.pretrained_llama import fetch_gguf, read_llama_gguf

    hp, weights = read_llama_gguf(fetch_gguf(), layers=layer + 1)
    cfg = LlamaConfig(hp.vocab_size, hp.hidden_size, hp.intermediate_size, layer + 1, hp.num_attention_heads,
                      hp.num_key_value_heads, hp.rms_norm_eps, hp.rope_theta, 2048)
    layers = []
    for i in range(layer + 1):
        blk = LlamaDecoderLayer(cfg)
        blk.load_state_dict({k[len(f"layers.{i}."):]: torch.from_numpy(v) for k, v in weights.items()
                             if k.startswith(f"layers.{i}.")})
        layers.append(blk.eval())
    emb = torch.from_numpy(weights["embed_tokens.weight"])
    gen = torch.Generator().manual_seed(seed)

    def hidden(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, hp.vocab_size, (n // 128, 128), generator=gen)
        x = emb[ids]
        cos, sin = rope_cos_sin(torch.arange(128), cfg.head_dim, cfg.rope_theta, torch.float32)
        with torch.no_grad():
            for blk in layers[:-1]:
                x = blk(x, cos, sin)
        return x, cos, sin

    return cfg, layers[-1], hidden


def llama_matrices(layer: int, n_tokens: int, seed: int):
    _, blk, hidden = _llama(layer, n_tokens, seed)
    x, cos, sin = hidden(n_tokens)
    mods = {"q_proj": blk.self_attn.q_proj, "gate_proj": blk.mlp.gate_proj, "down_proj": blk.mlp.down_proj}
    caught = {}
    hooks = [m.register_forward_hook(lambda m, a, o, p=p: caught.__setitem__(p, a[0].reshape(-1, a[0].shape[-1])))
             for p, m in mods.items()]
    with torch.no_grad():
        blk(x, cos, sin)
    for h in hooks:
        h.remove()
    out = []
    for p, mod in mods.items():
        X = caught[p].double().numpy()
        out.append((f"llama.{layer}.{p}", mod.weight.detach().double().numpy(), X.T @ X / len(X)))
    return out


def vit_matrices(seed: int, n_tokens: int):
    rng = np.random.default_rng(seed)
    out = []
    for name, (o, i) in (("dinov2.attn.proj", (1024, 1024)), ("dinov2.mlp.fc1", (4096, 1024)),
                         ("siglip.mlp.fc2", (1152, 4304))):
        w = rng.standard_normal((o, i)) / np.sqrt(i)
        rank = 16
        mix = np.eye(i) + rng.standard_normal((i, rank)) @ rng.standard_normal((rank, i)) / np.sqrt(i * rank) * 2
        z = rng.standard_normal((i, n_tokens))
        z[rng.choice(i, 6, replace=False)] *= 20  # outlier channels
        X = mix @ z
        out.append((name, w, X @ X.T / n_tokens))
    return out


# ------------------------------------------------------------------------------------------ methods


def hbvla_methods(quick: bool):
    m = {
        "HBVLA block": hbvla(),
        "HBVLA block, no feedback": hbvla(error_feedback=False),
        "HBVLA block, no feedback, no salient": hbvla(error_feedback=False, salient_cap=0),
        "HBVLA element": hbvla_element(),
        "HBVLA element, no feedback": hbvla_element(error_feedback=False),
        "BiLLM-style": billm_style(),
        "sign x alpha": sign_alpha(),
    }
    if quick:
        for k in ("HBVLA block, no feedback", "HBVLA element, no feedback"):
            m.pop(k)
    return m


GGML_TYPES = ("Q1_0", "IQ1_S", "IQ1_M", "IQ2_XXS", "IQ2_XS", "Q2_K")


def _rel(w, w_hat, H):
    return (float(np.linalg.norm(w - w_hat) / np.linalg.norm(w)), h_error(w, w_hat, H) / h_error(w, 0 * w, H))


def run_matrix(name, w, H, quick):
    from omnimodel.quant.gptq import quantize_gptq
    from omnimodel.quant.imatrix import quantize_imatrix
    from omnimodel.quant.rtn import quantize_rtn

    rows = []
    breakdowns = {}
    for label, cfg in hbvla_methods(quick).items():
        t = time.time()
        q = quantize_matrix(w, H, cfg)
        bits = count_bits(encode_matrix(q, "m"), q.shape)
        fro, herr = _rel(w, q.weight(), H)
        rows.append(dict(method=label, bpw=bits.bpw, fro=fro, h=herr, n_salient=int(len(q.salient_idx)),
                         seconds=time.time() - t))
        if label in ("HBVLA block", "HBVLA element"):
            breakdowns[label] = bits.as_dict()
        print(f"  {name} {label}: {bits.bpw:.3f} bpw  fro {fro:.4f}  H {herr:.4f}  k={len(q.salient_idx)}  "
              f"{time.time() - t:.1f}s", flush=True)
    imat = np.diag(H).astype(np.float32)
    for tname in GGML_TYPES:
        variants = [("RTN", lambda: quantize_rtn(w, tname))] if tname == "Q1_0" else [
            ("imatrix", lambda: quantize_imatrix(w, tname, imat))]
        if not quick and tname != "Q1_0":
            variants.append(("GPTQ", lambda: quantize_gptq(w, tname, H)))
        for vname, fn in variants:
            t = time.time()
            tq = fn()
            bpw = 8.0 * tq.data.nbytes / w.size
            fro, herr = _rel(w, tq.values(w.shape[1]).astype(np.float64), H)
            rows.append(dict(method=f"{tname} {vname}", bpw=bpw, fro=fro, h=herr, seconds=time.time() - t))
            print(f"  {name} {tname} {vname}: {bpw:.3f} bpw  fro {fro:.4f}  H {herr:.4f}", flush=True)
    return rows, breakdowns


# ------------------------------------------------------------------------------------------ policy-aware


def policy_aware_check(layer: int, n_tokens: int, seed: int):
    from omnimodel.quant.hbvla.hessian import HessianAccumulator, policy_aware_token_weights

    cfg_l, blk, hidden = _llama(layer, n_tokens, seed)
    attn, norm = blk.self_attn, blk.input_layernorm
    proj = ("q_proj", "k_proj", "v_proj", "o_proj")
    x_cal, cos, sin = hidden(n_tokens)
    x_test, _, _ = hidden(n_tokens)
    with torch.no_grad():
        h_cal, h_test = norm(x_cal), norm(x_test)
    run_cal = lambda a: a(h_cal, cos, sin, False)  # noqa: E731
    # plain H per projection from the calibration tokens
    caught = {}
    hooks = [attn.get_submodule(p).register_forward_hook(lambda m, a, o, p=p: caught.__setitem__(p, a[0]))
             for p in proj]
    with torch.no_grad():
        run_cal(attn)
    for h in hooks:
        h.remove()
    plain = {}
    for p in proj:
        acc = HessianAccumulator()
        acc.add(caught[p])
        plain[p] = acc.hessian()
    cfg = hbvla()
    w = {p: attn.get_submodule(p).weight.detach().double().numpy() for p in proj}
    bin_plain = {p: quantize_matrix(w[p], plain[p], cfg).weight() for p in proj}
    res = policy_aware_token_weights(attn, run_cal, proj, bin_plain)
    rect = res.hessians()
    bin_rect = {p: quantize_matrix(w[p], rect[p], cfg).weight() for p in proj}
    bin_split = {p: quantize_matrix(w[p], plain[p], cfg, H_saliency=rect[p]).weight() for p in proj}

    def block_err(binar):
        with torch.no_grad():
            z = attn(h_test, cos, sin, False)
            saved = {p: attn.get_submodule(p).weight.detach().clone() for p in proj}
            for p in proj:
                attn.get_submodule(p).weight.copy_(torch.from_numpy(binar[p]).float())
            zq = attn(h_test, cos, sin, False)
            for p in proj:
                attn.get_submodule(p).weight.copy_(saved[p])
        return float((zq - z).norm() / z.norm())

    a = res.token_weights["q_proj"].numpy()
    return dict(layer=layer, tokens=n_tokens, block_error_plain_H=block_err(bin_plain),
                block_error_rectified_H=block_err(bin_rect),
                block_error_rectified_saliency=block_err(bin_split),
                token_weight_spread=float(a.max() / max(a.mean(), 1e-30)))


# ------------------------------------------------------------------------------------------ report


def markdown(results) -> str:
    lines = []
    for name, r in results["matrices"].items():
        lines.append(f"\n#### {name} {r['shape'][0]}x{r['shape'][1]}\n")
        lines.append("| method | bpw | rel. Frobenius error | rel. H-weighted error | salient columns | seconds |")
        lines.append("|---|---:|---:|---:|---:|---:|")
        for row in sorted(r["rows"], key=lambda x: x["bpw"]):
            k = row.get("n_salient", "")
            lines.append(f"| {row['method']} | {row['bpw']:.3f} | {row['fro']:.4f} | {row['h']:.4f} | {k} | "
                         f"{row['seconds']:.0f} |")
    lines.append("\n#### Where the bits go (bits per weight)\n")
    lines.append("| matrix | method | " + " | ".join(PARTS) + " | total |")
    lines.append("|---|---|" + "---:|" * (len(PARTS) + 1))
    for name, r in results["matrices"].items():
        for label, b in r["breakdowns"].items():
            n = b["shape"][0] * b["shape"][1]
            cells = " | ".join(f"{b[p] / n:.4f}" for p in PARTS)
            lines.append(f"| {name} {b['shape'][0]}x{b['shape'][1]} | {label} | {cells} | {b['bpw']:.3f} |")
    if "policy_aware" in results:
        p = results["policy_aware"]
        lines.append(f"\nPolicy-aware Hessian, layer {p['layer']} attention: block output error "
                     f"{p['block_error_plain_H']:.4f} with H = X X^T, "
                     f"{p['block_error_rectified_saliency']:.4f} with H~ "
                     f"for the salient split only, {p['block_error_rectified_H']:.4f} with H~ throughout "
                     f"(token weights max/mean {p['token_weight_spread']:.1f}).")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--layer", type=int, default=12)
    ap.add_argument("--tokens", type=int, default=1024)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--quick", action="store_true", help="no feedback variants, no GPTQ baselines")
    ap.add_argument("--only", default="", help="comma-separated matrix names to run")
    ap.add_argument("--policy-only", action="store_true", help="only the policy-aware Hessian check")
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    results = {"matrices": {}, "args": vars(args) | {"out": str(args.out)}}
    only = set(filter(None, args.only.split(",")))
    mats = [] if args.policy_only else (
        llama_matrices(args.layer, args.tokens, args.seed) + vit_matrices(args.seed, args.tokens))
    for name, w, H in mats:
        if only and name not in only:
            continue
        print(f"{name} {w.shape}", flush=True)
        rows, br = run_matrix(name, w, H, args.quick)
        results["matrices"][name] = dict(shape=list(w.shape), rows=rows, breakdowns=br)
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=1))
    if not only:
        results["policy_aware"] = policy_aware_check(args.layer, args.tokens, args.seed + 1)
        args.out.write_text(json.dumps(results, indent=1))
    print(markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
