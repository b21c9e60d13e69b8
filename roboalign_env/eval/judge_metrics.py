"""How well a scorer agrees with reference labels: accuracy, MAE, quadratic-weighted kappa, Spearman.

References are the oracle's labels (teacher or student vs oracle) or another scorer's argmax and
expected scores (student vs teacher). The aggregate's Spearman compares the scorer's summed expected
scores with the reference aggregate. Per dimension, ``aggregate_spearman_if_exact`` is that Spearman with the
dimension's expected score replaced by the reference level: which dimension holds the ranking back.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from roboalign_env.rubric import DIMENSIONS, MAX_SCORES


def agreement(levels: np.ndarray, expected: np.ndarray, ref_levels: np.ndarray,
              ref_aggregate: np.ndarray | None = None) -> dict:
    """Per dimension: exact accuracy, MAE (expected score vs reference level), quadratic kappa, and the
    aggregate's Spearman if that dimension were exact. Then the means of the first three and the
    aggregate's Spearman. Arrays are (N, 6) / (N,)."""
    from roboalign_env.extras import require

    spearmanr = require("scipy.stats", "eval", "Spearman correlations").spearmanr
    cohen_kappa_score = require("sklearn.metrics", "eval", "Cohen's kappa").cohen_kappa_score

    levels, expected, ref_levels = np.asarray(levels), np.asarray(expected), np.asarray(ref_levels)
    if len(levels) == 0:
        raise ValueError("agreement: no predictions to compare")
    ref_aggregate = ref_levels.sum(1) if ref_aggregate is None else np.asarray(ref_aggregate)
    out: dict = {"n": int(len(levels)), "per_dimension": {}}
    for k, (dim, top) in enumerate(zip(DIMENSIONS, MAX_SCORES)):
        kappa = cohen_kappa_score(ref_levels[:, k], levels[:, k], labels=list(range(top + 1)), weights="quadratic")
        exact = expected.astype(np.float64)  # a copy
        exact[:, k] = ref_levels[:, k]
        out["per_dimension"][dim] = {
            "accuracy": float((levels[:, k] == ref_levels[:, k]).mean()),
            "mae": float(np.abs(expected[:, k] - ref_levels[:, k]).mean()),
            "qwk": float(np.nan_to_num(kappa, nan=1.0 if (levels[:, k] == ref_levels[:, k]).all() else 0.0)),
            "aggregate_spearman_if_exact": float(spearmanr(exact.sum(1), ref_aggregate).statistic),
        }
    for name in ("accuracy", "mae", "qwk"):  # the Spearmans are not averaged: they do not add up
        out[f"mean_{name}"] = float(np.mean([v[name] for v in out["per_dimension"].values()]))
    out["aggregate_spearman"] = float(spearmanr(expected.sum(1), ref_aggregate).statistic)
    return out


def confusion_matrices(levels: np.ndarray, ref_levels: np.ndarray) -> list[np.ndarray]:
    """Six (levels x levels) count matrices: rows = reference level, columns = predicted level."""
    mats = []
    for k, top in enumerate(MAX_SCORES):
        m = np.zeros((top + 1, top + 1), np.int64)
        np.add.at(m, (ref_levels[:, k], levels[:, k]), 1)
        mats.append(m)
    return mats


def plot_confusions(levels: np.ndarray, ref_levels: np.ndarray, png: str | Path, title: str) -> Path:
    """One panel per dimension (row-normalized colours, counts written in the cells), written atomically."""
    from roboalign_env.eval.media import pyplot

    plt = pyplot()

    from roboalign_env.eval.media import save_figure

    fig, axes = plt.subplots(1, len(DIMENSIONS), figsize=(3.2 * len(DIMENSIONS), 3.4))
    for ax, dim, m in zip(axes, DIMENSIONS, confusion_matrices(np.asarray(levels), np.asarray(ref_levels))):
        ax.imshow(m / np.maximum(1, m.sum(1, keepdims=True)), cmap="Blues", vmin=0, vmax=1)
        for (i, j), count in np.ndenumerate(m):
            ax.text(j, i, str(count), ha="center", va="center", fontsize=8)
        ax.set_title(dim.replace("_", " "), fontsize=9)
        ax.set_xlabel("predicted")
        ax.set_ylabel("reference")
        ax.set_xticks(range(len(m)))
        ax.set_yticks(range(len(m)))
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, png, dpi=80)
