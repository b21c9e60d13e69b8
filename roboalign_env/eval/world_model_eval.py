"""Held-out evaluation of a world model: open-loop rollouts against the real robosuite frames.

For each held-out ("test") episode the model starts from the real first frame and is driven by the
episode's real actions for ``horizon`` frames, once as the baseline and once with Sliding Window
Re-encoding. The baseline never re-encodes (default autoregression), except for an ``anchor_frames``
model, which cannot predict more than ``anchor_horizon`` frames from one context: its baseline is its
longest window, the fewest re-encodings it can make. Every predicted frame is compared with the real
frame at the same step (PSNR, SSIM, a perceptual distance; see :mod:`roboalign_env.eval.metrics`).
Horizon ``h`` reports the mean over predicted frames ``1..h``. Decoding is greedy, so the numbers are deterministic.
"""

from __future__ import annotations

import json
import resource
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from einops import rearrange

from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.io import atomic_write
from roboalign_env.data.splits import split_episode_ids
from roboalign_env.eval.media import grid, save_figure, upscale, write_mp4
from roboalign_env.eval.metrics import MOTION_THRESHOLD, frame_metrics, load_perceptual, perceptual_name, psnr, ssim
from roboalign_env.models.tokenizer import VideoTokenizer, code_digits
from roboalign_env.models.transformer import SWR_WINDOW, DynamicsTransformer
from roboalign_env.models.world_model import WorldModel

METRICS = ("psnr", "ssim", "lpips")


@dataclass
class HeldOut:
    """Real frames (N, F+1, 3, H, W) in [0, 1] and actions (N, F, 7) of held-out episodes."""

    episode_ids: list[str]
    frames: torch.Tensor
    actions: torch.Tensor


def load_held_out(episodes: Path, horizon: int, limit: int | None = None, split: str = "test") -> HeldOut:
    rows = {r["episode_id"]: r for r in read_manifest(episodes)}
    ids = sorted(split_episode_ids(episodes, split))[:limit]
    if not ids:
        raise ValueError(f"{episodes}: no {split!r} episodes to evaluate on")
    eps = [load_episode(Path(episodes) / rows[i]["path"]) for i in ids]
    short = [e.episode_id for e in eps if e.num_steps < horizon]
    if short:
        raise ValueError(f"horizon {horizon} is longer than episodes {short[:3]} ({eps[0].num_steps} steps)")
    frames = np.stack([e.frames[: horizon + 1] for e in eps])
    actions = np.stack([e.actions[:horizon] for e in eps])
    return HeldOut(ids, rearrange(torch.from_numpy(frames), "n t h w c -> n t c h w").float() / 255,
                   torch.from_numpy(actions).float())


@torch.no_grad()
def reconstruction_metrics(tokenizer: VideoTokenizer, frames: torch.Tensor) -> dict[str, float]:
    """PSNR/SSIM of reconstructed context frames and dynamics frames of clips (B, T, 3, H, W), and how
    stable the dynamics codes are: the share that change from the previous frame, and the share of the
    cells where no pixel moved whose code changes anyway (``code_flicker``: change the transformer is
    trained on but cannot predict from the actions)."""
    frames = frames.float()
    with torch.autocast(frames.device.type, enabled=False):
        recon = tokenizer(frames)["recon"].float()
        context_codes, dynamics_codes = tokenizer.encode_clip(frames)
        changed = tokenizer.changed_codes(frames, dynamics_codes)
    still = tokenizer.still_cells(frames, MOTION_THRESHOLD)
    ctx = (recon[:, 0], frames[:, 0])
    dyn = (recon[:, 1:].flatten(0, 1), frames[:, 1:].flatten(0, 1))
    # the trivial "nothing moves" reconstruction of the same frames, for scale
    copy = (frames[:, :1].expand_as(frames[:, 1:]).flatten(0, 1), dyn[1])
    return {
        "psnr_context": psnr(*ctx).mean().item(), "ssim_context": ssim(*ctx).mean().item(),
        "psnr_dynamics": psnr(*dyn).mean().item(), "ssim_dynamics": ssim(*dyn).mean().item(),
        "psnr_copy_context": psnr(*copy).clamp(max=60).mean().item(), "ssim_copy_context": ssim(*copy).mean().item(),
        # distinct codes seen: a collapsed quantizer shows 1
        "codes_context": context_codes.unique().numel(), "codes_dynamics": dynamics_codes.unique().numel(),
        "changed_fraction": changed.float().mean().item(),
        "code_flicker": (changed & still).sum().item() / max(1, int(still.sum())),
    }


@torch.no_grad()
def action_use_metrics(tokenizer: VideoTokenizer, transformer: DynamicsTransformer, frames: torch.Tensor,
                       actions: torch.Tensor) -> dict[str, float]:
    """Does the transformer read the motion from the action? Teacher-forced predictions of the dynamics
    codes of clips (B, T, 3, H, W) under their actions (B, T-1, 7), scored on the codes of cells in which
    a pixel moved since the previous frame (by more than the motion threshold):

    - ``moving_nll`` with the clips' own actions and ``moving_nll_other_actions`` with another clip's
      (the batch rolled by one); ``action_information``, their difference in nats per moving code, is
      what the action tells the model (0: it ignores the action);
    - ``moving_accuracy`` and ``moving_digit_error`` (summed absolute FSQ digit difference) of the greedy
      code, beside ``*_copy``, the same for the previous frame's code (nothing moves).
    """
    if len(frames) < 2:
        raise ValueError(f"action_use_metrics needs at least 2 clips (one lends the other its actions), got {len(frames)}")
    tok, tf = tokenizer, transformer
    frames = frames.float()
    context, dynamics = tok.encode_clip(frames)
    moving = ~tok.still_cells(frames, MOTION_THRESHOLD)
    previous = tok.previous_codes(frames, dynamics)
    own, other = tf(context, actions, dynamics), tf(context, actions.roll(1, 0), dynamics)

    def nll(logits: torch.Tensor) -> float:
        per_code = torch.nn.functional.cross_entropy(logits.flatten(0, 2), dynamics.flatten(), reduction="none")
        return per_code.view(dynamics.shape)[moving].mean().item()

    def digit_error(codes: torch.Tensor) -> float:
        levels = tok.config.levels
        return (code_digits(codes, levels) - code_digits(dynamics, levels)).abs().sum(-1)[moving].float().mean().item()

    greedy = own.argmax(-1)
    result = {"moving_fraction": moving.float().mean().item(), "moving_nll": nll(own),
              "moving_nll_other_actions": nll(other),
              "moving_accuracy": (greedy == dynamics)[moving].float().mean().item(),
              "moving_accuracy_copy": (previous == dynamics)[moving].float().mean().item(),
              "moving_digit_error": digit_error(greedy), "moving_digit_error_copy": digit_error(previous)}
    result["action_information"] = result["moving_nll_other_actions"] - result["moving_nll"]
    return result


def held_out_clips(data: HeldOut, clip_len: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-overlapping clips (starts 0, 8, 16, ...) of every held-out episode, (M, T, 3, H, W), and the
    actions between their frames, (M, T-1, 7)."""
    starts = range(0, data.frames.shape[1] - clip_len + 1, clip_len)
    return (torch.cat([data.frames[:, s : s + clip_len] for s in starts]),
            torch.cat([data.actions[:, s : s + clip_len - 1] for s in starts]))


def evaluate_rollouts(model: WorldModel, data: HeldOut, window: int | None, batch_size: int = 16,
                      perceptual: str = "st-lpips") -> dict:
    """Roll out every episode; per-frame metrics (F,) averaged over episodes, timing and memory."""
    per_frame = {m: [] for m in METRICS}
    predictions, seconds, peak = [], 0.0, 0
    device = model.tokenizer.device
    for start in range(0, len(data.frames), batch_size):
        real = data.frames[start : start + batch_size]
        tic = time.perf_counter()
        roll = model.rollout(real[:, 0].to(device), data.actions[start : start + batch_size].to(device), window=window)
        seconds += time.perf_counter() - tic
        peak = max(peak, roll.peak_sequence)
        pred = roll.frames.cpu()
        predictions.append(pred)
        scores = frame_metrics(pred.flatten(0, 1), real[:, 1:].flatten(0, 1), metric=perceptual)
        for m in METRICS:
            per_frame[m].append(scores[m].view(len(real), -1))
    n_frames = data.actions.shape[0] * data.actions.shape[1]
    cfg = model.transformer.config
    kv_bytes = 2 * cfg.num_layers * batch_size * peak * cfg.hidden_size * 4
    return {
        "per_frame": {m: torch.cat(v).mean(0).tolist() for m, v in per_frame.items()},
        "total_seconds": seconds,
        "ms_per_frame": 1000 * seconds / n_frames,
        "peak_sequence_length": peak,
        "peak_kv_cache_mb": kv_bytes / 2**20,
        "predictions": torch.cat(predictions),
    }


def copy_first_frame(data: HeldOut, perceptual: str = "st-lpips") -> dict:
    """The "nothing moves" baseline: every predicted frame is the real first frame."""
    pred = data.frames[:, :1].expand_as(data.frames[:, 1:])
    scores = frame_metrics(pred.flatten(0, 1), data.frames[:, 1:].flatten(0, 1), metric=perceptual)
    n = len(data.frames)
    return {"per_frame": {m: v.view(n, -1).clamp(max=60).mean(0).tolist() for m, v in scores.items()},
            "total_seconds": 0.0, "ms_per_frame": 0.0, "peak_sequence_length": 0, "peak_kv_cache_mb": 0.0,
            "predictions": pred}


def at_horizons(per_frame: dict[str, list[float]], horizons: list[int]) -> dict[str, dict[str, float]]:
    """Mean of each per-frame metric over predicted frames 1..h, for every h."""
    return {str(h): {m: float(np.mean(v[:h])) for m, v in per_frame.items()} for h in horizons}


def run_evaluation(model_dir: Path, episodes: Path, out: Path, horizon: int = 64, episodes_limit: int | None = None,
                   window: int = SWR_WINDOW, horizons: tuple[int, ...] = (8, 16, 32, 48, 64), batch_size: int = 16,
                   videos: int = 4, device: str = "cpu", perceptual: str = "st-lpips") -> dict:
    """Evaluate the baseline vs SWR; write ``results.json``, ``metrics_vs_horizon.png`` and ``side_by_side.mp4``."""
    horizons = [h for h in horizons if h <= horizon]
    load_perceptual(perceptual)
    model = WorldModel.load(model_dir, device)
    data = load_held_out(episodes, horizon, episodes_limit)
    baseline_window = model.transformer.config.longest_window
    runs = {"baseline": evaluate_rollouts(model, data, baseline_window, batch_size, perceptual),
            f"swr_w{window}": evaluate_rollouts(model, data, window, batch_size, perceptual)}
    (baseline, swr) = runs.values()
    runs["copy_first_frame"] = copy_first_frame(data, perceptual)
    clips, clip_actions = held_out_clips(data)
    recon = [reconstruction_metrics(model.tokenizer, c.to(device)) for c in clips.split(batch_size)]
    use = [action_use_metrics(model.tokenizer, model.transformer, c.to(device), a.to(device))
           for c, a in zip(clips.split(batch_size), clip_actions.split(batch_size)) if len(c) > 1]
    results = {
        "tokenizer_reconstruction": {"clips": len(clips), **{k: float(np.mean([r[k] for r in recon]))
                                                                    for k in recon[0] if not k.startswith("codes_")}},
        "action_use": {"clips": sum(len(c) for c in clips.split(batch_size) if len(c) > 1),
                       **{k: float(np.mean([u[k] for u in use])) for k in use[0]}},
        "model": str(model_dir), "episodes": len(data.episode_ids), "horizon": horizon, "window": window,
        "baseline_window": baseline_window,
        "perceptual_metric": perceptual_name(perceptual), "decoding": "greedy", "device": str(device),
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "runs": {name: {**{k: v for k, v in r.items() if k != "predictions"},
                        "at_horizon": at_horizons(r["per_frame"], horizons)} for name, r in runs.items()},
    }
    final = str(horizons[-1])
    b, s = results["runs"]["baseline"]["at_horizon"][final], results["runs"][f"swr_w{window}"]["at_horizon"][final]
    results["swr_vs_baseline"] = {
        "horizon": int(final),
        "ssim_gain_pct": 100 * (s["ssim"] / b["ssim"] - 1),
        "lpips_reduction_pct": 100 * (1 - s["lpips"] / b["lpips"]),
        "psnr_gain_db": s["psnr"] - b["psnr"],
        "extra_time_pct": 100 * (swr["total_seconds"] / baseline["total_seconds"] - 1),
    }
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=1)), mode="w")
    plot_vs_horizon(results, out / "metrics_vs_horizon.png")
    write_side_by_side(data, {"baseline": baseline, "swr": swr}, out / "side_by_side.mp4", videos)
    return results


def plot_vs_horizon(results: dict, png: Path) -> Path:
    from roboalign_env.eval.media import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 3, figsize=(13, 3.4))
    for ax, metric in zip(axes, METRICS):
        for name, run in results["runs"].items():
            values = run["per_frame"][metric]
            ax.plot(range(1, len(values) + 1), values, label=name, ls=":" if name == "copy_first_frame" else "-")
        ax.axvline(7, color="grey", ls=":", lw=1, label="training clip length")
        label = results["perceptual_metric"] if metric == "lpips" else metric.upper()
        ax.set_title(f"{label} per predicted frame")
        ax.set_xlabel("frames ahead")
        ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, png)


def write_side_by_side(data: HeldOut, runs: dict, mp4: Path, count: int) -> Path:
    """One row per episode: real | baseline | SWR, episodes one after another."""
    to_u8 = lambda x: (x.permute(0, 2, 3, 1).clamp(0, 1) * 255).round().byte().numpy()  # noqa: E731
    clips = []
    for i in range(min(count, len(data.frames))):
        columns = [to_u8(data.frames[i, 1:])] + [to_u8(r["predictions"][i]) for r in runs.values()]
        clips.append(np.stack([grid([[c[t] for c in columns]]) for t in range(len(columns[0]))]))
    return write_mp4(mp4, upscale(np.concatenate(clips), 3))
