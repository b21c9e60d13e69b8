"""Per-frame image metrics: PSNR and SSIM from torchmetrics, and a perceptual distance.

The perceptual distance is LPIPS (the ``lpips`` package, AlexNet) when torchvision's AlexNet weights
are already on disk, since ``lpips`` would otherwise try to download them; otherwise ST-LPIPS
(``stlpips-pytorch``, AlexNet, shift-tolerant), which ships its full weights. ``perceptual_name()``
says which one is in use, and every report that prints a perceptual number names it.

All functions take float tensors (N, 3, H, W) in [0, 1] and return one value per frame (N,).
They always compute in float32, also when called under a bf16 autocast (SSIM in bf16 is wrong by
tens of points).
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch


def _fp32(fn):
    @functools.wraps(fn)
    def wrapper(pred: torch.Tensor, target: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        with torch.autocast(pred.device.type, enabled=False):
            return fn(pred.float(), target.float(), *args, **kwargs)

    return wrapper


@_fp32
def psnr(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import peak_signal_noise_ratio

    return peak_signal_noise_ratio(pred.float().clamp(0, 1), target.float(), data_range=1.0,
                                   reduction="none", dim=(1, 2, 3))


@_fp32
def ssim(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    from torchmetrics.functional.image import structural_similarity_index_measure

    return structural_similarity_index_measure(pred.float().clamp(0, 1), target.float(), data_range=1.0,
                                               reduction="none")


def _alexnet_weights_on_disk() -> bool:
    hub = Path(os.environ.get("TORCH_HOME", Path.home() / ".cache" / "torch")) / "hub" / "checkpoints"
    return any(hub.glob("alexnet-*.pth"))


def perceptual_name() -> str:
    """``"LPIPS (alex)"`` or ``"ST-LPIPS (alex, shift-tolerant)"``: the metric :func:`perceptual` uses."""
    return "LPIPS (alex)" if _alexnet_weights_on_disk() else "ST-LPIPS (alex, shift-tolerant)"


@functools.lru_cache(maxsize=1)
def _perceptual_net() -> torch.nn.Module:
    if _alexnet_weights_on_disk():
        import lpips

        net = lpips.LPIPS(net="alex", verbose=False)
    else:
        import contextlib
        import io

        from stlpips_pytorch import stlpips

        with contextlib.redirect_stdout(io.StringIO()):
            net = stlpips.LPIPS(net="alex", variant="shift_tolerant", verbose=False)
    return net.eval().requires_grad_(False)


@_fp32
@torch.no_grad()
def perceptual(pred: torch.Tensor, target: torch.Tensor, batch: int = 64) -> torch.Tensor:
    """LPIPS-style distance per frame (lower is better); see :func:`perceptual_name`."""
    net = _perceptual_net()
    out = [net(p.float().clamp(0, 1).cpu(), t.float().cpu(), normalize=True).flatten()
           for p, t in zip(pred.split(batch), target.split(batch))]
    return torch.cat(out)


def frame_metrics(pred: torch.Tensor, target: torch.Tensor, perceptual_too: bool = True,
                  chunk: int = 256) -> dict[str, torch.Tensor]:
    """``{"psnr", "ssim"[, "lpips"]}`` per frame for (N, 3, H, W) predictions against targets,
    ``chunk`` frames at a time (SSIM's intermediate maps are ~15x the input)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} differs from target shape {tuple(target.shape)}")
    parts = [(p, t) for p, t in zip(pred.split(chunk), target.split(chunk))]
    out = {"psnr": torch.cat([psnr(p, t) for p, t in parts]), "ssim": torch.cat([ssim(p, t) for p, t in parts])}
    if perceptual_too:
        out["lpips"] = perceptual(pred, target)
    return out
