"""Per-frame image metrics: PSNR and SSIM from torchmetrics, and a perceptual distance.

The perceptual distance is an explicit choice: ``"st-lpips"`` (the default: ``stlpips-pytorch``,
AlexNet, shift-tolerant, which ships its full weights) or ``"lpips"`` (the ``lpips`` package,
AlexNet), which needs torchvision's AlexNet weights already on disk and fails with a clear error
otherwise rather than downloading them. Every report that prints a perceptual number names it
(:func:`perceptual_name`).

All functions take float tensors (N, 3, H, W) in [0, 1] and return one value per frame (N,).
They always compute in float32, also when called under a bf16 autocast (SSIM in bf16 is wrong by
tens of points).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch

MOTION_THRESHOLD = 10 / 255
"""A pixel has moved when a channel changed by more than this (in [0, 1]) between the frames compared."""


def _fp32(fn):
    @functools.wraps(fn)
    def wrapper(pred: torch.Tensor, target: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(pred.device.type, enabled=False):
            return fn(pred.float(), target.float(), *args, **kwargs)

    return wrapper


@_fp32
def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from roboalign_env.extras import require

    image = require("torchmetrics.functional.image", "eval", "PSNR")
    return image.peak_signal_noise_ratio(pred.float().clamp(0, 1), target.float(), data_range=1.0,
                                   reduction="none", dim=(1, 2, 3))


@_fp32
def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from roboalign_env.extras import require

    image = require("torchmetrics.functional.image", "eval", "SSIM")
    return image.structural_similarity_index_measure(pred.float().clamp(0, 1), target.float(), data_range=1.0,
                                               reduction="none")


PERCEPTUAL_METRICS = {"st-lpips": "ST-LPIPS (alex, shift-tolerant)", "lpips": "LPIPS (alex)"}
"""The perceptual distances :func:`perceptual` computes, with the name every report prints."""


def _alexnet_hub() -> Path:
    return Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"


def _check_metric(metric: str) -> None:
    if metric not in PERCEPTUAL_METRICS:
        raise ValueError(f"perceptual metric {metric!r}; expected one of {sorted(PERCEPTUAL_METRICS)}")


def perceptual_name(metric: str = "st-lpips") -> str:
    """The printed name of ``metric`` (e.g. ``"ST-LPIPS (alex, shift-tolerant)"``)."""
    _check_metric(metric)
    return PERCEPTUAL_METRICS[metric]


def load_perceptual(metric: str = "st-lpips") -> str:
    """Load ``metric``'s network now (a clear error if it cannot be), before a long job computes it; returns its name."""
    _perceptual_net(metric)
    return perceptual_name(metric)


@functools.lru_cache(maxsize=2)
def _perceptual_net(metric: str) -> torch.nn.Module:
    import contextlib
    import io

    from roboalign_env.extras import require

    _check_metric(metric)
    if metric == "lpips":
        if not any(_alexnet_hub().glob("alexnet-*.pth")):
            raise FileNotFoundError(
                f"perceptual metric 'lpips' needs torchvision's AlexNet weights in {_alexnet_hub()} (alexnet-*.pth), "
                "which the lpips package would otherwise download; put them there or use 'st-lpips', which ships its weights")
        lpips = require("lpips", "eval", "the 'lpips' perceptual metric")
        net = lpips.LPIPS(net="alex", verbose=False)
    else:
        stlpips = require("stlpips_pytorch.stlpips", "eval", "the 'st-lpips' perceptual metric")
        with contextlib.redirect_stdout(io.StringIO()):
            net = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    return net.eval().requires_grad_(False)


@_fp32
@torch.no_grad()
def perceptual(pred: torch.Tensor, target: torch.Tensor, metric: str = "st-lpips", batch: int = 64) -> torch.Tensor:
    """The perceptual distance ``metric`` per frame (lower is better): 'st-lpips' or 'lpips'."""
    net = _perceptual_net(metric)
    out = [net(p.float().clamp(0, 1).cpu(), t.float().cpu(), normalize=True).flatten()
           for p, t in zip(pred.split(batch), target.split(batch))]
    return torch.cat(out)


def frame_metrics(pred: torch.Tensor, target: torch.Tensor, perceptual_too: bool = True,
                  chunk: int = 256, metric: str = "st-lpips") -> dict[str, torch.Tensor]:
    """``{"psnr", "ssim"[, "lpips"]}`` per frame for (N, 3, H, W) predictions against targets,
    ``chunk`` frames at a time (SSIM's intermediate maps are ~15x the input); the ``"lpips"`` entry
    is the perceptual distance ``metric``."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    parts = [(p, t) for p, t in zip(pred.split(chunk), target.split(chunk))]
    out = {"psnr": torch.cat([psnr(p, t) for p, t in parts]), "ssim": torch.cat([ssim(p, t) for p, t in parts])}
    if perceptual_too:
        out["lpips"] = perceptual(pred, target, metric)
    return out
