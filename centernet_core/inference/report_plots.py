"""The evaluation report's charts as PNG bytes, drawn by matplotlib on its Agg backend.

Each function takes the numbers ``report_metrics`` / ``report_errors`` produced (nothing
is recomputed here) and returns the encoded PNG. Figures are built with the
object-oriented API (``matplotlib.figure.Figure``), so no pyplot state is shared or leaked.
"""
from __future__ import annotations

import io
import math

import matplotlib

matplotlib.use("Agg")  # headless: reports are written on servers with no display

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

DPI = 100


def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=DPI, bbox_inches="tight")
    return buf.getvalue()


def _grid(n: int, columns: int = 4, cell: float = 3.0):
    """A figure with ``n`` small axes in rows of ``columns``; the unused ones hidden."""
    cols = max(1, min(columns, n))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(cell * cols, cell * rows * 0.9))
    axes = fig.subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes


def pr_curves(classes: list[dict], recall_points: np.ndarray) -> bytes:
    """Precision against recall per class at IoU 0.5 and 0.75 (``pr50``/``pr75`` of each class).

    The curves are COCOeval's interpolated precision at its recall points; a class with no
    ground truth (precision -1) gets an empty panel saying so.
    """
    fig, axes = _grid(len(classes))
    for ax, c in zip(axes, classes):
        ax.set_title(f"{c['name']} (id {c['category_id']})", fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.02)
        ax.tick_params(labelsize=7)
        if c["AP50"] is None:
            ax.text(0.5, 0.5, "no ground truth", ha="center", va="center", fontsize=8)
            continue
        for key, iou, style in (("pr50", "0.50", "-"), ("pr75", "0.75", "--")):
            ap = c["AP50"] if key == "pr50" else c["AP75"]
            ax.plot(recall_points, c[key], style, label=f"IoU {iou}: AP {ap:.3f}")
        ax.set_xlabel("recall", fontsize=8)
        ax.set_ylabel("precision", fontsize=8)
        ax.legend(fontsize=7, loc="lower left")
    return _png(fig)


def f1_curves(classes: list[dict]) -> bytes:
    """F1 against score threshold at IoU 0.5 per class, each best threshold marked."""
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for c in classes:
        curve = c["f1"]
        if not curve["score"]:
            continue
        line, = ax.plot(curve["score"], curve["f1"], label=f"{c['name']}: best {curve['best_threshold']:.2f}")
        ax.plot([curve["best_threshold"]], [curve["best_f1"]], "*", markersize=12, color=line.get_color())
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("score threshold")
    ax.set_ylabel("F1 at IoU 0.5")
    ax.set_title("F1 against score threshold (star: best threshold per class)")
    if ax.lines:
        ax.legend(fontsize=7, loc="lower left", ncol=max(1, len(classes) // 12))
    else:
        ax.text(0.5, 0.5, "no true positives", ha="center", va="center")
    return _png(fig)


def confusion(matrix: list[list[int]], labels: list[str]) -> bytes:
    """The confusion matrix: colour is the share of each ground-truth row, text the count."""
    counts = np.asarray(matrix, np.float64)  # [C + 1, C + 1]
    shares = counts / np.maximum(counts.sum(axis=1, keepdims=True), 1)
    n = len(labels)
    side = min(4 + 0.45 * n, 30)
    fig = Figure(figsize=(side, side * 0.9))
    ax = fig.subplots()
    image = ax.imshow(shares, cmap="Blues", vmin=0, vmax=1)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="share of the row")
    ax.set_xticks(range(n), labels, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(n), labels, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion at IoU 0.5, best-F1 threshold per class")
    if n <= 30:  # beyond that the numbers no longer fit their cells
        for i in range(n):
            for j in range(n):
                if counts[i, j]:
                    ax.text(j, i, f"{int(counts[i, j])}", ha="center", va="center", fontsize=7,
                            color="white" if shares[i, j] > 0.5 else "black")
    return _png(fig)


def bars(rows: list[dict], label_key: str, title: str, xlabel: str) -> bytes:
    """Grouped bars of AP, AP50 and AR for each row (a size range or an objects bin).

    Undefined values (None) are drawn as missing bars and labelled "n/a".
    """
    labels = [str(r[label_key]) for r in rows]
    fig = Figure(figsize=(max(5, 1.2 * len(rows) + 2), 3.6))
    ax = fig.subplots()
    x = np.arange(len(rows))
    width = 0.27
    for i, key in enumerate(("AP", "AP50", "AR")):
        values = [r[key] if r[key] is not None else 0.0 for r in rows]
        ax.bar(x + (i - 1) * width, values, width, label=key)
        for xi, r in zip(x, rows):
            if r[key] is None:
                ax.text(xi + (i - 1) * width, 0.02, "n/a", ha="center", fontsize=7)
    ax.set_xticks(x, labels)
    ax.set_ylim(0, 1)
    if not rows:
        ax.text(0.5, 0.5, "no images", ha="center", va="center", transform=ax.transAxes)
    ax.set_xlabel(xlabel)
    ax.set_title(title)
    ax.legend(fontsize=8)
    return _png(fig)
