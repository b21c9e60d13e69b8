"""Batched world-model generation throughput: N rollouts advanced together, SWR on (W=6).

Frames/s = N x frames / seconds for N = 1, 4, 16, 64, with bf16 autocast off and on, all in one
run so the numbers compare as ratios on a shared machine. Each measurement steps a fresh dream
one warm-up frame, then times ``--frames`` more (greedy decoding, real tokenizer decoding to pixels
included).

    python benchmarks/world_model_throughput.py --model roboalign_env/assets/default/world_model
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
import tyro

from roboalign_env.device import resolve_device
from roboalign_env.models.transformer import MODEL_WINDOW, Window
from roboalign_env.models.world_model import WorldModel


@dataclass(frozen=True)
class Args:
    model: Path = Path("roboalign_env/assets/default/world_model")
    """World-model folder (tokenizer/ + transformer/)."""
    batch_sizes: tuple[int, ...] = (1, 4, 16, 64)
    """Numbers of rollouts N advanced in one forward pass."""
    frames: int = 12
    """Timed frames per measurement (after one warm-up frame)."""
    window: Window = MODEL_WINDOW
    """SWR window ("model": the model's own; None: no re-encoding)."""
    device: str = "auto"
    """'auto', 'cpu' or 'cuda'."""
    out: Path = Path("benchmarks/results/world_model_throughput.json")
    """Result file."""


@torch.no_grad()
def frames_per_second(model: WorldModel, n: int, frames: int, window: Window, bf16: bool) -> float:
    gen = torch.Generator().manual_seed(n)
    first = torch.rand(n, 3, model.image_size, model.image_size, generator=gen).to(model.tokenizer.device)
    actions = (torch.rand(n, frames + 1, 7, generator=gen) * 2 - 1).to(model.tokenizer.device)
    with torch.autocast(model.tokenizer.device.type, dtype=torch.bfloat16, enabled=bf16):
        dream = model.dream(first, frames + 1, window)
        dream.step(actions[:, 0])
        if first.is_cuda:
            torch.cuda.synchronize()
        tic = time.perf_counter()
        for i in range(1, frames + 1):
            dream.step(actions[:, i])
        if first.is_cuda:
            torch.cuda.synchronize()
    return n * frames / (time.perf_counter() - tic)


def main(args: Args) -> None:
    device = resolve_device(args.device)
    model = WorldModel.load(args.model, device)
    rows = []
    for n in args.batch_sizes:
        for bf16 in (False, True):
            fps = frames_per_second(model, n, args.frames, args.window, bf16)
            rows.append({"n": n, "bf16": bf16, "frames_per_s": round(fps, 1)})
            print(f"N={n:>3} bf16={'on ' if bf16 else 'off'}: {fps:7.1f} frames/s", flush=True)
    result = {
        "rows": rows, "window": args.window, "frames": args.frames, "device": device,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.processor() or platform.machine(),
        "load_average_1min": os.getloadavg()[0],
        "command": "python benchmarks/world_model_throughput.py " + " ".join(sys.argv[1:]),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1))
    print(f"wrote {args.out}\nreproduce: {result['command']}")


if __name__ == "__main__":
    main(tyro.cli(Args))
