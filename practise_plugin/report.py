"""``report.json`` and ``report.png``: what a compression run chose, measured and produced.

Why it exists: a user deciding whether to ship a compressed model needs the evidence in one place
(blocks chosen and why, measured latency, accuracy before/after) in a machine-readable file, and a
picture that shows the recoverability ranking and the latency-accuracy trade-off at a glance.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .io import atomic_write_json, save_png


def write_report(out_dir: Path, report: dict[str, Any]) -> Path:
    path = Path(out_dir) / "report.json"
    atomic_write_json(path, report)
    return path


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
        ax.set_xticks(range(len(rec)), [f"{n}\n{100 * saved[n]:.1f}%" if n in saved else n for n in names],
                      rotation=60, fontsize=7, ha="right")
        ax.set_yscale("log")
        ax.set_ylabel("recoverability R(B): feature MSE")
        ax.set_title(f"drop candidates ({rec[0]['method']}); red = dropped; label: latency saved alone")
        ax.legend(fontsize=8)
    ax = axes[1]
    points = acc.get("points") or []
    if points:
        for p in points:
            ax.scatter(100 * p["latency_reduction"], 100 * p["value"], s=60, label=p["label"])
            ax.annotate(f"{100 * p['value']:.1f}", (100 * p["latency_reduction"], 100 * p["value"]),
                        textcoords="offset points", xytext=(5, 5), fontsize=8)
        ax.set_xlabel(f"measured latency reduction (%), {report.get('latency', {}).get('backend', '')}")
        ax.set_ylabel(acc.get("metric", "top-1 (%)"))
        ax.set_title("latency-accuracy trade-off")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    else:
        ax.axis("off")
    return save_png(fig, path)
