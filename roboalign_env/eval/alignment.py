"""Held-out evaluation of post-training: SFT vs the RLVR-style baseline vs RoboAlign-R1.

Every model rolls out the same held-out prompts (bench "test" episodes whose real run succeeds; a
few start frames per episode, each window containing the moment of success) from the real first
frame with the real actions, sampled at the same temperature with the same seed per prompt, so the
models differ only in their weights. Each rollout (first frame + predicted frames) is scored by

- the **teacher judge** (not the student that was optimized), per dimension and aggregate;
- the **state probe** through the oracle's rules, an independent cross-check;
- PSNR, SSIM and a perceptual distance against the real robosuite frames.

Every difference between two models comes with a paired bootstrap over *episodes* (prompts from the
same episode are resampled together, since they share frames): the mean difference, the relative
difference of the means, their 95% intervals and a two-sided bootstrap p-value.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from roboalign_env.data.io import atomic_write
from roboalign_env.data.splits import HELDOUT_SOURCE
from roboalign_env.models.transformer import MODEL_WINDOW, Window
from roboalign_env.rubric import DIMENSIONS, MAX_SCORES, SHORT_NAMES, aggregate


def paired_bootstrap(a: np.ndarray, b: np.ndarray, clusters: np.ndarray | None = None, resamples: int = 10_000,
                     seed: int = 0) -> dict:
    """Paired comparison of per-prompt values ``a`` vs ``b`` (higher minus lower: a - b).

    Resamples clusters (episodes) with replacement; returns the mean difference, the relative
    difference ``mean(a) / mean(b) - 1``, their 95% percentile intervals, and a two-sided p-value
    (twice the smaller share of resampled differences on either side of 0).
    """
    a, b = np.asarray(a, float), np.asarray(b, float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values must be two equal-length vectors, got {a.shape} and {b.shape}")
    clusters = np.arange(len(a)) if clusters is None else np.asarray(clusters)
    keys, inverse = np.unique(clusters, return_inverse=True)
    k = len(keys)
    sum_a, sum_b = np.bincount(inverse, a, k), np.bincount(inverse, b, k)
    count = np.bincount(inverse, minlength=k).astype(float)
    rng = np.random.default_rng(seed)
    w = np.zeros((resamples, k))
    np.add.at(w, (np.arange(resamples)[:, None], rng.integers(0, k, (resamples, k))), 1.0)
    n = w @ count
    ma, mb = (w @ sum_a) / n, (w @ sum_b) / n
    diff = ma - mb
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = ma / mb - 1
    mean_a, mean_b = a.mean(), b.mean()
    p = min(1.0, 2 * min((diff <= 0).mean(), (diff >= 0).mean()))
    return {
        "mean_a": float(mean_a), "mean_b": float(mean_b), "diff": float(mean_a - mean_b),
        "diff_ci95": [float(x) for x in np.percentile(diff, [2.5, 97.5])],
        "rel": float(mean_a / mean_b - 1) if mean_b else float("nan"),
        "rel_ci95": [float(x) for x in np.nanpercentile(rel, [2.5, 97.5])],
        "p_value": float(p), "clusters": int(k), "n": int(len(a)),
    }


def eval_prompts(episodes: str | Path, horizon: int, heldout_source: str, starts_per_episode: int,
                 limit: int | None = None, split: str = "test") -> dict:
    """Held-out prompts: per episode of ``split`` ("test" for the report, "val" to choose between
    training variants), ``starts_per_episode`` evenly spaced allowed starts."""
    from roboalign_env.data.prompts import load_prompts

    if split not in ("test", "val"):
        raise ValueError(f"split {split!r}: expected 'test' or 'val' (prompts never come from training episodes)")
    pool = load_prompts(episodes, split, horizon, heldout_source, successful_only=True, limit=limit)
    picks = []
    for e, starts in enumerate(pool.starts):
        if len(starts):
            chosen = np.unique(np.linspace(0, len(starts) - 1, starts_per_episode).round().astype(int))
            picks += [int(np.flatnonzero((pool.pool[:, 0] == e) & (pool.pool[:, 1] == starts[c]))[0]) for c in chosen]
    return pool.take(np.array(picks))


@torch.no_grad()
def roll_out(model_dir: str | Path, prompts: dict, window: Window, temperature: float, seed: int,
             batch_size: int = 16) -> tuple[torch.Tensor, float]:
    """Frames (N, F, 3, H, W) of one model on every prompt; prompt i always uses seed ``seed + i``."""
    from roboalign_env.models.world_model import WorldModel

    model = WorldModel.load(model_dir)
    out, tic = [], time.perf_counter()
    n = len(prompts["first"])
    for s in range(0, n, batch_size):
        idx = range(s, min(n, s + batch_size))
        gens = [torch.Generator().manual_seed(seed + i) for i in idx]
        roll = model.rollout(prompts["first"][s : s + batch_size], prompts["actions"][s : s + batch_size], window=window,
                             temperature=temperature, generators=gens)
        out.append(roll.frames.float().cpu())
    return torch.cat(out), time.perf_counter() - tic


def score_models(frames: dict[str, torch.Tensor], prompts: dict, teacher, probe, batch_size: int = 32,
                 frame_metrics_too: bool = True, perceptual: str = "st-lpips") -> dict:
    """Teacher expected scores, probe levels and frame metrics per model and prompt."""
    from roboalign_env.eval.metrics import frame_metrics
    from roboalign_env.models.state_probe import probe_labels

    results = {}
    acts = [a.numpy() for a in prompts["actions"]]
    for name, pred in frames.items():
        video = torch.cat([prompts["first"][:, None], pred], 1)
        teacher_scores = torch.cat([teacher.score(video[s : s + batch_size], prompts["instructions"][s : s + batch_size],
                                                  actions=acts[s : s + batch_size]).expected.float()
                                    for s in range(0, len(video), batch_size)]).numpy()
        probe_levels = np.array([[getattr(probe_labels(probe, v, t)[0], d) for d in DIMENSIONS]
                                 for v, t in zip(video, prompts["instructions"])], float)
        per_prompt = {}
        if frame_metrics_too:
            m = frame_metrics(pred.flatten(0, 1), prompts["real"].flatten(0, 1), metric=perceptual)
            per_prompt = {k: v.view(len(pred), -1).mean(1).numpy() for k, v in m.items()}
        results[name] = {"teacher": teacher_scores, "probe": probe_levels, **per_prompt}
    return results


def summarize(scores: dict, clusters: np.ndarray, pairs: list[tuple[str, str]], resamples: int) -> dict:
    """Means per model and paired bootstraps for every pair and quantity."""
    def quantities(s: dict) -> dict[str, np.ndarray]:
        q = {}
        for judge in ("teacher", "probe"):
            q[f"{judge}_aggregate"] = aggregate(s[judge])
            for k, d in enumerate(DIMENSIONS):
                q[f"{judge}_{d}"] = s[judge][:, k]
        for m in ("psnr", "ssim", "lpips"):
            q[m] = s[m]
        return q

    per_model = {name: quantities(s) for name, s in scores.items()}
    means = {name: {k: float(v.mean()) for k, v in q.items()} for name, q in per_model.items()}
    comparisons = {}
    for a, b in pairs:
        comparisons[f"{a}_vs_{b}"] = {k: paired_bootstrap(per_model[a][k], per_model[b][k], clusters, resamples)
                                      for k in per_model[a]}
    return {"means": means, "comparisons": comparisons, "per_model": per_model}


def plot_bars(per_model: dict[str, dict[str, np.ndarray]], png: Path, perceptual: str) -> Path:
    """Per dimension and aggregate (normalized to [0, 1] by each dimension's maximum), teacher and
    probe panels, one bar per model with a 95% bootstrap interval of the mean."""
    from roboalign_env.eval.media import pyplot

    plt = pyplot()

    from roboalign_env.eval.media import save_figure

    names = list(per_model)
    labels = [SHORT_NAMES[d] for d in DIMENSIONS] + ["aggregate"]
    fig, axes = plt.subplots(1, 3, figsize=(16, 3.8), gridspec_kw={"width_ratios": [3, 3, 1.6]})
    rng = np.random.default_rng(0)
    for ax, judge in zip(axes[:2], ("teacher", "probe")):
        width = 0.8 / len(names)
        for j, name in enumerate(names):
            vals, errs = [], []
            for k, d in enumerate(DIMENSIONS + ("aggregate",)):
                key = f"{judge}_{d}"
                x = per_model[name][key] / (MAX_SCORES[k] if k < len(MAX_SCORES) else 1)
                boots = np.array([x[rng.integers(0, len(x), len(x))].mean() for _ in range(1000)])
                vals.append(x.mean())
                errs.append([x.mean() - np.percentile(boots, 2.5), np.percentile(boots, 97.5) - x.mean()])
            ax.bar(np.arange(len(labels)) + (j - (len(names) - 1) / 2) * width, vals, width,
                   yerr=np.array(errs).T, capsize=2, label=name)
        ax.set_xticks(np.arange(len(labels)), labels)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{judge} (score / max), held-out prompts")
        ax.legend(fontsize=7, loc="lower left")
    ax = axes[2]
    metrics = ("psnr", "ssim", "lpips")
    base = names[0]
    for j, name in enumerate(names):
        rel = [100 * (per_model[name][m].mean() / per_model[base][m].mean() - 1) for m in metrics]
        ax.bar(np.arange(3) + (j - (len(names) - 1) / 2) * 0.8 / len(names), rel, 0.8 / len(names), label=name)
    ax.axhline(0, color="k", lw=0.8)
    ax.set_xticks(np.arange(3), ["PSNR\n(higher better)", "SSIM\n(higher better)", f"{perceptual.split(' ')[0]}\n(lower better)"])
    ax.set_title(f"vs real frames, % change from {base}")
    fig.tight_layout()
    return save_figure(fig, png)


def write_videos(frames: dict[str, torch.Tensor], prompts: dict, mp4: Path, picks: list[int]) -> Path:
    """Real | each model, for the same prompts one after another."""
    from roboalign_env.eval.media import grid, upscale, write_mp4

    def u8(x):
        return (x.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()

    clips = []
    for i in picks:
        columns = [u8(prompts["real"][i])] + [u8(f[i]) for f in frames.values()]
        clips.append(np.stack([grid([[c[t] for c in columns]]) for t in range(len(columns[0]))]))
    video = upscale(np.concatenate(clips), 3)
    header = _labels(["real"] + list(frames), video.shape[2], 3 * 66)
    return write_mp4(mp4, np.concatenate([np.broadcast_to(header, (len(video), *header.shape)), video], 1), fps=6)


def _labels(names: list[str], width: int, column: int, height: int = 16) -> np.ndarray:
    """A white strip with each column's name over it."""
    from PIL import Image, ImageDraw

    strip = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(strip)
    for j, name in enumerate(names):
        draw.text((6 + j * column, 2), name, fill="black")
    return np.asarray(strip)


def named_folders(items: tuple[str, ...] | list[str], flag: str = "--models") -> dict[str, Path]:
    """``NAME=FOLDER`` strings as ``{name: folder}``; a clear error for a malformed item or a missing folder."""
    models = {}
    for item in items:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            raise ValueError(f"{flag}: expected NAME=FOLDER, got {item!r}")
        if not Path(folder).is_dir():
            raise FileNotFoundError(f"{flag} {item}: {folder} is not a folder")
        models[name] = Path(folder)
    return models


def evaluate_alignment(models: dict[str, Path], episodes: Path, teacher_dir: Path, probe_dir: Path, out: Path,
                       horizon: int = 16, window: Window = MODEL_WINDOW, temperature: float = 1.0, seed: int = 0,
                       starts_per_episode: int = 3, heldout_source: str = HELDOUT_SOURCE,
                       limit: int | None = None, resamples: int = 10_000, videos: int = 4,
                       command: str | None = None, split: str = "test", perceptual: str = "st-lpips",
                       benchmark_out: str | Path | None = None) -> dict:
    """Roll out, score, compare; write results.json, alignment_bars.png and side_by_side.mp4 to ``out``
    (and the results without per-prompt rows to ``benchmark_out``)."""
    from roboalign_env.eval.metrics import load_perceptual, perceptual_name
    from roboalign_env.models.registry import load_scorer

    if len(models) < 2:
        raise ValueError(f"models: need at least two to compare, got {list(models)}")
    load_perceptual(perceptual)
    prompts = eval_prompts(episodes, horizon, heldout_source, starts_per_episode, limit, split)
    frames, seconds = {}, {}
    for name, folder in models.items():
        frames[name], seconds[name] = roll_out(folder, prompts, window, temperature, seed)
    teacher, probe = load_scorer(teacher_dir), load_scorer(probe_dir)
    scores = score_models(frames, prompts, teacher, probe, perceptual=perceptual)
    # the real clips through the same two judges: what a perfect world model would score
    real = score_models({"real": prompts["real"]}, prompts, teacher, probe, frame_metrics_too=False)["real"]
    reference = {"teacher_aggregate": float(aggregate(real["teacher"]).mean()),
                 "probe_aggregate": float(aggregate(real["probe"]).mean()),
                 **{f"{j}_{d}": float(real[j][:, k].mean()) for j in ("teacher", "probe") for k, d in enumerate(DIMENSIONS)}}
    names = list(models)
    pairs = [(b, names[0]) for b in names[1:]] + [(names[-1], b) for b in names[1:-1]]
    clusters = np.array(prompts["episodes"])
    summary = summarize(scores, clusters, pairs, resamples)
    per_model = summary.pop("per_model")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    plot_bars(per_model, out / "alignment_bars.png", perceptual_name(perceptual))
    write_videos(frames, prompts, out / "side_by_side.mp4", list(range(0, len(prompts["first"]),
                                                                      max(1, len(prompts["first"]) // videos)))[:videos])
    per_prompt = [{"episode": e, "start": s, "instruction": t,
                   **{n: {"teacher": scores[n]["teacher"][i].round(4).tolist(), "probe": scores[n]["probe"][i].tolist(),
                          **{m: round(float(scores[n][m][i]), 4) for m in ("psnr", "ssim", "lpips")}} for n in names}}
                  for i, (e, s, t) in enumerate(zip(prompts["episodes"], prompts["starts"], prompts["instructions"]))]
    results = {
        "command": command, "models": {n: str(p) for n, p in models.items()}, "teacher": str(teacher_dir),
        "probe": str(probe_dir), "split": split, "prompts": len(prompts["first"]), "episodes": int(len(set(prompts["episodes"]))),
        "horizon": horizon, "window": window, "temperature": temperature, "seed": seed,
        "perceptual_metric": perceptual_name(perceptual), "rollout_seconds": seconds, "bootstrap_resamples": resamples,
        "bootstrap_unit": "episode (paired; prompts of an episode resampled together)",
        "dimensions": list(DIMENSIONS), "real_clips_scored": reference, **summary, "per_prompt": per_prompt,
    }
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=1)), mode="w")
    if benchmark_out is not None:
        slim = {k: v for k, v in results.items() if k != "per_prompt"}
        atomic_write(benchmark_out, lambda f: f.write(json.dumps(slim, indent=1)), mode="w")
    return results
