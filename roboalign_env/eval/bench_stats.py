"""RobotWorldBench statistics: label counts, histograms and a labelled contact sheet."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from roboalign_env.data.bench import episodes_by_split, load_pair, read_index
from roboalign_env.data.io import atomic_write
from roboalign_env.eval.media import grid, save_figure, upscale
from roboalign_env.rubric import DIMENSIONS, MAX_SCORES, SHORT_NAMES


def label_counts(rows: list[dict]) -> dict:
    """Counts per source x dimension x level, plus totals, split sizes and level fractions."""
    sources = sorted({r["source"] for r in rows})
    per_source = {s: {d: [0] * (top + 1) for d, top in zip(DIMENSIONS, MAX_SCORES)} for s in sources}
    for row in rows:
        for d in DIMENSIONS:
            per_source[row["source"]][d][row["labels"][d]] += 1
    total = {d: [sum(per_source[s][d][lvl] for s in sources) for lvl in range(top + 1)] for d, top in zip(DIMENSIONS, MAX_SCORES)}
    n = max(len(rows), 1)
    unedited = [r for r in rows if r["provenance"]["family"] in ("clean", "swap")]
    flagged = [r for r in unedited if _physically_flagged(r["labels"])]
    return {
        "pairs": len(rows),
        "per_source": per_source,
        "total": total,
        "fraction": {d: [round(c / n, 4) for c in counts] for d, counts in total.items()},
        "min_level_fraction": min(c / n for counts in total.values() for c in counts),
        "splits": dict(Counter(r["split"] for r in rows)),
        "episodes_per_split": {k: len(v) for k, v in episodes_by_split(rows).items()},
        "families": dict(Counter(r["provenance"]["family"] for r in rows)),
        "kinds": dict(Counter(r["provenance"]["kind"] for r in rows)),
        # Real, unedited physics that the oracle still flags (AOC 0, CR 0 or PA < 2): its false alarms
        # or genuine simulator artefacts (e.g. a cube pressed into the table by noisy actions).
        "unedited_flagged_fraction": round(len(flagged) / max(len(unedited), 1), 4),
        "unedited_flagged_by_failure": dict(Counter(r["failure"] for r in flagged)),
    }


def _physically_flagged(labels: dict) -> bool:
    return (labels["action_outcome_consistency"] == 0 or labels["contact_realism"] == 0
            or labels["physics_adherence"] < 2)


def plot_histograms(stats: dict, path: Path) -> Path:
    from roboalign_env.eval.media import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 6, figsize=(18, 3.2))
    sources = sorted(stats["per_source"])
    for ax, d, top in zip(axes, DIMENSIONS, MAX_SCORES):
        bottom = np.zeros(top + 1)
        for s in sources:
            counts = np.array(stats["per_source"][s][d])
            ax.bar(range(top + 1), counts, bottom=bottom, label=s)
            bottom += counts
        ax.set_title(f"{SHORT_NAMES[d]} ({d.replace('_', ' ')})", fontsize=8)
        ax.set_xticks(range(top + 1))
        ax.axhline(0.05 * stats["pairs"], color="k", ls="--", lw=0.8)
    axes[0].set_ylabel("pairs (dashed: 5%)")
    axes[-1].legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


def contact_sheet(root: Path, rows: list[dict], path: Path, per_kind: int = 1, frames: int = 6, seed: int = 0) -> Path:
    """One line per sampled pair: evenly spaced frames, then a label card drawn with matplotlib."""
    from roboalign_env.eval.media import pyplot

    plt = pyplot()

    rng = np.random.default_rng(seed)
    by_kind: dict[str, list[dict]] = {}
    for row in rows:
        by_kind.setdefault(row["provenance"]["kind"], []).append(row)
    chosen = [r for kind in sorted(by_kind) for r in rng.choice(by_kind[kind], size=min(per_kind, len(by_kind[kind])), replace=False)]
    fig, axes = plt.subplots(len(chosen), 1, figsize=(12, 1.35 * len(chosen)))
    for ax, row in zip(np.atleast_1d(axes), chosen):
        video = load_pair(root, row)["video"]
        idx = np.linspace(0, len(video) - 1, frames).round().astype(int)
        ax.imshow(grid([[upscale(video[i], 2) for i in idx]]))
        labels = " ".join(f"{SHORT_NAMES[d]}={row['labels'][d]}" for d in DIMENSIONS)
        ax.set_title(
            f"{row['source']} / {row.get('failure', 'generated')} / {row['provenance']['family']}:{row['provenance']['kind']}  "
            f"\"{row['instruction']}\"  {labels}",
            fontsize=7, loc="left",
        )
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, path, dpi=100)


def bench_stats(root: str | Path, out: str | Path | None = None) -> dict:
    """Write ``stats.json``, ``label_histograms.png`` and ``contact_sheet.png``; return the stats."""
    root = Path(root)
    out = Path(out) if out else root / "stats"
    rows = read_index(root)
    stats = label_counts(rows)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "stats.json", lambda f: f.write(json.dumps(stats, indent=1)), mode="w")
    plot_histograms(stats, out / "label_histograms.png")
    contact_sheet(root, rows, out / "contact_sheet.png")
    return stats
