"""PNG plots of an evaluation result (matplotlib, an optional dependency: ``pip install omnimodel[plots]``).

``write_plots(result, out_dir)`` draws what the result holds:

    closed_loop_success.png   success rate per task and the average (bars, with k/K labels)
    open_loop_l1.png          L1 to ground truth per task (and L1 to the reference when present)

It returns the files written, or raises ``PlotsUnavailable`` when matplotlib is not installed.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


class PlotsUnavailable(RuntimeError):
    pass


def _pyplot() -> Any:
    try:
        import matplotlib
    except ImportError as exc:
        raise PlotsUnavailable("plots need matplotlib: pip install 'omnimodel[plots]' (or matplotlib)") from exc
    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    return plt


def _title(result: dict[str, Any]) -> str:
    pol = result.get("policy") or {}
    name = Path(str(pol.get("checkpoint") or pol.get("path") or "")).name
    return f"{pol.get('kind', 'policy')} {name}".strip()


def plot_closed_loop(result: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    cl = result["closed_loop"]
    names = list(cl["tasks"]) + ["average"]
    rates = [cl["tasks"][n]["success_rate"] for n in cl["tasks"]] + [cl["average_success_rate"]]
    labels = [f"{cl['tasks'][n]['successes']}/{cl['tasks'][n]['episodes']}" for n in cl["tasks"]] + [
        f"{cl['average_success_rate']:.0%}"
    ]
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6), dpi=100)
    colors = ["tab:blue"] * (len(names) - 1) + ["tab:gray"]
    bars = ax.bar(range(len(names)), rates, color=colors)
    for bar, label in zip(bars, labels, strict=True):
        ax.text(bar.get_x() + bar.get_width() / 2, bar.get_height() + 0.02, label, ha="center", va="bottom", fontsize=8)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    ax.set_ylim(0, 1.15)
    ax.set_ylabel("success rate")
    ax.set_title(f"closed loop: {_title(result)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def plot_open_loop(result: dict[str, Any], path: Path) -> Path:
    plt = _pyplot()
    ol = result["open_loop"]
    names = list(ol["tasks"])
    gt = [ol["tasks"][n].get("l1_to_ground_truth", 0.0) for n in names]
    has_ref = "l1_to_reference" in ol
    fig, ax = plt.subplots(figsize=(1.2 * len(names) + 2, 3.6), dpi=100)
    width = 0.4 if has_ref else 0.6
    xs = list(range(len(names)))
    ax.bar([x - (width / 2 if has_ref else 0) for x in xs], gt, width=width, label="L1 to ground truth")
    if has_ref:
        ref = [ol["tasks"][n].get("l1_to_reference", 0.0) for n in names]
        ax.bar([x + width / 2 for x in xs], ref, width=width, label="L1 to reference")
    ax.set_xticks(xs, names, rotation=20, ha="right", fontsize=8)
    ax.set_ylabel("mean |action error|")
    ax.legend(fontsize=8)
    ax.set_title(f"open loop: {_title(result)}", fontsize=9)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def write_plots(result: dict[str, Any], out_dir: str | os.PathLike[str]) -> list[Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    if result.get("closed_loop"):
        written.append(plot_closed_loop(result, out / "closed_loop_success.png"))
    if result.get("open_loop"):
        written.append(plot_open_loop(result, out / "open_loop_l1.png"))
    return written


__all__ = ["PlotsUnavailable", "plot_closed_loop", "plot_open_loop", "write_plots"]
