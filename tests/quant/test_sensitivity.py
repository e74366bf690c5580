from __future__ import annotations

import numpy as np
from omnimodel.quant.sensitivity import cka, default_tau, hsic, rbf_gram, sensitivities, sensitivity_terms, sensitivity_weights


def test_hsic_detects_dependence():
    rng = np.random.default_rng(0)
    u = rng.normal(size=(64, 5))
    dep = np.tanh(u @ rng.normal(size=(5, 3)))
    ind = rng.normal(size=(64, 3))
    K = rbf_gram(u)
    assert hsic(K, rbf_gram(dep)) > 5 * abs(hsic(K, rbf_gram(ind)))
    assert abs(cka(K, K) - 1.0) < 1e-12
    # the trace form (n-1)^-2 tr(K H L H), written out
    n = 64
    H = np.eye(n) - np.ones((n, n)) / n
    L = rbf_gram(dep)
    assert abs(hsic(K, L) - np.trace(K @ H @ L @ H) / (n - 1) ** 2) < 1e-12


def test_sensitivities_on_miniature(calibrated):
    st = calibrated.stats
    s = sensitivities(st)
    assert set(s) == set(st.fisher)
    assert all(np.isfinite(v) and -1.0 <= v <= 1.0 for v in s.values())  # CKA difference, alpha = beta = 1
    # alpha = 0 keeps only the action-alignment term (non-negative); beta = 0 only the redundancy penalty
    assert all(v >= 0 for v in sensitivities(st, alpha=0.0).values())
    assert all(v <= 0 for v in sensitivities(st, beta=0.0).values())
    w = sensitivity_weights(s)
    assert all(v > 0 for v in w.values()) and abs(np.mean(list(w.values())) - 1.0) < 1e-9
    order = sorted(s, key=s.get)
    assert w[order[0]] <= w[order[-1]]  # monotone in S


def test_tau_flattens_the_weights(calibrated):
    """--hsic-tau: the weights exp(S / tau) keep their order at every tau and flatten toward --no-hsic's
    all-equal weights as tau grows; the allocation under a large tau is the one without HSIC."""
    from omnimodel.quant.quantize import plan_allocation
    from omnimodel.quant.targets import matrix_targets

    s = sensitivities(calibrated.stats)
    spread = [np.ptp(list(sensitivity_weights(s, tau=t).values())) for t in (None, 1.0, 2.0, 1e6)]
    assert default_tau(s) < 1.0  # CKA differences: the default is the sharpest of these
    assert spread[0] > spread[1] > spread[2] > spread[3] and spread[3] < 1e-5
    order = sorted(s, key=s.get)
    for t in (None, 1.0, 2.0):
        w = sensitivity_weights(s, tau=t)
        assert [w[n] for n in order] == sorted(w[n] for n in order)
    pol = calibrated.policy
    targets = matrix_targets(pol.model)
    weights = {n: p.detach().numpy() for n, p in pol.model.named_parameters() if n in {t.name for t in targets}}
    flat = plan_allocation(targets, weights, calibrated.stats, 2.5, hsic_tau=1e6)
    plain = plan_allocation(targets, weights, calibrated.stats, 2.5, hsic=False)
    assert [(t.name, t.type) for t in flat.tensors] == [(t.name, t.type) for t in plain.tensors]


def test_terms_make_up_s(calibrated):
    """sensitivity_terms are S's two CKAs: S = beta * relevance - alpha * redundancy, both in [0, 1]."""
    terms = sensitivity_terms(calibrated.stats)
    s = sensitivities(calibrated.stats, alpha=0.5, beta=2.0)
    assert set(terms) == set(s)
    for name, (rel, red) in terms.items():
        assert 0.0 <= rel <= 1.0 + 1e-9 and 0.0 <= red <= 1.0 + 1e-9
        assert s[name] == 2.0 * rel - 0.5 * red


def test_diagnosis_script_on_the_demo(tmp_path):
    """benchmarks/hsic_sensitivity.py on the demo policy: one row per layer, every allocation on budget, the
    one without HSIC puts nothing below 2 bits; bad --taus is one line."""
    import subprocess
    import sys
    from pathlib import Path

    from omnimodel.demo_assets import DEMO_CALIB_DIR, DEMO_POLICY_DIR

    script = Path(__file__).parents[2] / "benchmarks" / "hsic_sensitivity.py"
    out = tmp_path / "sens.md"
    res = subprocess.run([sys.executable, str(script), "openvla-oft", "--checkpoint", str(DEMO_POLICY_DIR),
                          "--calib", str(DEMO_CALIB_DIR), "--by-layer", "--bpw", "2.5", "--taus", "2",
                          "--out", str(out)], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    text = out.read_text()
    layer_rows = [ln for ln in text.splitlines() if ln.startswith("| language_model.model.layers.")]
    assert len(layer_rows) == 2 * 2  # two layers, in the sensitivity and the bpw tables
    rows = {ln.split("|")[1].strip(): ln.split("|")[2:4] for ln in text.splitlines()
            if ln.startswith(("| default tau", "| tau 2", "| no HSIC"))}
    assert set(rows) == {"default tau", "tau 2", "no HSIC"}
    assert all(abs(float(bpw) - 2.5) <= 0.02 for bpw, _ in rows.values())
    assert rows["no HSIC"][1].strip() == "0.0 %"
    bad = subprocess.run([sys.executable, str(script), "openvla-oft", "--checkpoint", str(DEMO_POLICY_DIR),
                          "--calib", str(DEMO_CALIB_DIR), "--taus", "0,x"], capture_output=True, text=True)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1 and "--taus" in bad.stderr
