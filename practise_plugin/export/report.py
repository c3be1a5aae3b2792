"""``report.json`` and ``report.png``: what a compression run chose, measured and produced.

Why it exists: a user deciding whether to ship a compressed model needs the evidence in one place
(blocks chosen and why, measured latency, accuracy before/after) in a machine-readable file, and a
picture that shows the recoverability ranking and the latency-accuracy trade-off at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..core.files import atomic_write_json, save_png


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    path = Path(out_dir) / "report.json"
    atomic_write_json(path, report)
    return path


def _pct(saving: float | None) -> str:
    return "n/m" if saving is None else f"{100 * saving:.1f}%"


def plot_report(report: dict[str, Any], path: Path) -> Path | None:
    """Recoverability per candidate (chosen blocks highlighted) and accuracy vs latency saved."""
    rec = report.get("recoverability") or []
    acc = report.get("accuracy") or {}
    if not rec and not acc:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    ax = axes[0]
    if rec:
        chosen = set(report.get("blocks", {}).get("chosen", []))
        saved = (report.get("latency_table") or {}).get("saved", {})
        names = [r["block"] for r in rec]
        colors = ["tab:red" if n in chosen else "tab:blue" for n in names]
        ax.bar(range(len(rec)), [r["mse"] for r in rec], color=colors)
        ax.bar(range(len(rec)), [r["mse_dropped"] for r in rec], color="none", edgecolor="grey", linestyle="--",
               label="no adaptors")
        ax.set_xticks(range(len(rec)), [f"{n}\n{_pct(saved.get(n))}" if n in saved else n for n in names],
                      rotation=60, fontsize=7, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("recoverability R(B): feature MSE")
        ax.set_title(f"drop candidates ({rec[0]['method']}); red = dropped; label: latency saved alone (n/m: not measurable)")
        ax.legend(fontsize=8)
    ax = axes[1]
    points = acc.get("points") or []
    if points:
        lat = report.get("latency") or {}
        low_high = lat.get("reduction_interval")
        for p in points:
            x, y = 100 * p["latency_reduction"], 100 * p["value"]
            if low_high and p["latency_reduction"] > 0:  # the measured interval of the latency saved
                ax.errorbar(x, y, xerr=[[x - 100 * low_high[0]], [100 * low_high[1] - x]], fmt="none", ecolor="grey",
                            capsize=3)
            ax.scatter(x, y, s=60, label=p["label"])
            ax.annotate(f"{y:.1f}", (x, y), textcoords="offset points", xytext=(5, 5), fontsize=8)
        if lat.get("target") is not None:
            ax.axvline(100 * lat["target"], color="tab:red", linestyle=":", label=f"target -{100 * lat['target']:.0f}%")
        ax.set_xlabel(f"measured latency reduction (%), {report.get('latency', {}).get('backend', '')}")
        ax.set_ylabel(acc.get("metric", "top-1 (%)"))
        ax.set_title("latency-accuracy trade-off")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    else:
        ax.axis("off")
    return save_png(fig, path)
