"""``eval-judge``: a scorer's agreement with the oracle (and with a reference scorer) per bench split."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from roboalign_env.data.bench import trained_view
from roboalign_env.data.bench_cache import open_split
from roboalign_env.data.io import atomic_write
from roboalign_env.eval.judge_metrics import agreement, plot_confusions
from roboalign_env.models.batch_scoring import cached_predict, predict
from roboalign_env.models.registry import load_scorer, scorer_kind


def evaluate_judge(model_dir: str | Path, bench: str | Path, out: str | Path, reference: str | Path | None = None,
                   splits: tuple[str, ...] = ("test", "heldout")) -> dict:
    """Agreement per split (and with the oracle per source); writes ``out/metrics.json`` and confusion matrices (PNG) and returns the report.

    The splits are those the model was trained on (its recorded ``heldout_source``): a judge trained on
    every source has no held-out split, which the report says instead of scoring it. The state probe is
    scored through the oracle's rules; a ``reference`` scorer's outputs are kept in
    ``out/reference_<split>.npz`` and reused.
    """
    model_dir, out = Path(model_dir), Path(out)
    model = load_scorer(model_dir)
    if scorer_kind(model_dir) == "probe":
        from roboalign_env.models.state_probe import label_videos as score_split
    else:
        score_split = predict
    ref_model = load_scorer(reference) if reference else None
    view = trained_view(model)
    report = {"model": str(model_dir), "reference": str(reference) if reference else None,
              "heldout_source": view, "splits": {}}
    for split in splits:
        if split == "heldout" and view == "":
            report["splits"][split] = {"skipped": "the model was trained on every source"}
            continue
        videos = open_split(bench, split, heldout_source=view)
        labels = np.asarray(videos.labels)
        pred = score_split(model, videos)
        sources = np.array([r["source"] for r in videos.rows])
        entry = {"vs_oracle": agreement(pred["argmax"], pred["expected"], labels),
                 "vs_oracle_per_source": {s: agreement(pred["argmax"][sources == s], pred["expected"][sources == s],
                                                       labels[sources == s]) for s in sorted(set(sources))}}
        plot_confusions(pred["argmax"], labels, out / f"confusion_{split}.png", f"{model_dir.name} vs oracle, {split}")
        if ref_model is not None:
            ref = cached_predict(ref_model, videos, out / f"reference_{split}.npz")
            entry["vs_reference"] = agreement(pred["argmax"], pred["expected"], ref["argmax"], ref["expected"].sum(1))
            entry["reference_vs_oracle"] = agreement(ref["argmax"], ref["expected"], labels)
            plot_confusions(pred["argmax"], ref["argmax"], out / f"confusion_{split}_vs_reference.png",
                            f"{model_dir.name} vs {Path(reference).name}, {split}")
        report["splits"][split] = entry
    atomic_write(out / "metrics.json", lambda f: f.write(json.dumps(report, indent=1)), mode="w")
    return report
