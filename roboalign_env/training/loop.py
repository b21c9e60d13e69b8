"""The one training loop every trainer shares (tokenizer, world model, judge, distillation).

A trainer supplies three things: a ``PreTrainedModel`` to optimize, ``make_batch(step, rank)`` that
returns the batch for a step (drawn from a generator seeded by ``(seed, step, rank)``, so the data
stream is a pure function of the step), and ``compute_loss(model, batch) -> (loss, metrics)``.
The loop owns everything else: Accelerate (one CPU process in tests; ``accelerate launch`` or
``torchrun`` on many GPUs or nodes with no code change), bf16 autocast, AdamW with warmup + cosine,
gradient clipping, a progress bar, metrics JSONL, loss-curve PNGs, and checkpoints.

Run folder layout::

    checkpoints/step_00000200/       the latest save, complete before it is made current:
        model/                       config.json + model.safetensors (save_pretrained)
        resume/                      optimizer.safetensors + state.json (step, seed, optimizer hyper-parameters)
    checkpoint -> checkpoints/step_00000200    the current save (a relative symlink)
    model -> checkpoint/model        the latest weights, where every reader looks for them
    metrics.jsonl     one row per logged step ({"step", "split", metric: value, ...})
    curves.png        every logged metric against the step

Saving can be killed at any instant: the new step folder is written under a temporary name,
fsynced and renamed, and only then does one atomic rename of a fresh ``checkpoint`` symlink make it
current; the old step folder is deleted afterwards. ``model`` is created once (dangling until the
first save is current) and never changes. Leftovers of a killed save are deleted on the next start.

Resume: re-running with the same ``out`` continues from the current save. Batches and the torch
RNG are re-seeded from ``(seed, step, rank)`` at every step, so the RNG state at a save is a pure
function of the seed and the step that the checkpoint stores, and a resumed run is bit-identical to an
uninterrupted one on CPU (a resume with another seed is refused). Runs saved by the older layout
(``model/`` and ``resume/`` as plain folders in ``out``) resume too and are switched to this one at
their next save. Nothing is pickled: weights and optimizer moments are safetensors, the rest JSON.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Literal

import torch
from safetensors.torch import load_file
from safetensors.torch import save as safetensors_bytes

from roboalign_env.data.io import fsync_dir, read_jsonl, sync_tree, write_jsonl

_MODEL_LINK = os.path.join("checkpoint", "model")
"""Target of the run folder's ``model`` symlink (relative to the run folder)."""


@dataclass(frozen=True)
class LoopConfig:
    """Optimization and bookkeeping settings shared by every trainer."""

    out: Path
    """Run folder (checkpoints/, checkpoint, model, metrics.jsonl, curves.png)."""
    steps: int = 2000
    """Optimizer steps in total (a resumed run stops at the same step)."""
    lr: float = 3e-4
    """Peak learning rate (AdamW)."""
    weight_decay: float = 0.01
    """AdamW weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps before the cosine decay."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of the peak."""
    grad_clip: float = 1.0
    """Global gradient-norm clip (0 turns it off)."""
    mixed_precision: Literal["no", "bf16"] = "no"
    """bf16 autocast (CPU with AMX, or GPU); master weights stay fp32. On a CPU without native bf16 it falls
    back to float32 (there autocast is emulated, several times slower)."""
    save_every: int = 250
    """Save the model and resume state every this many steps (and at the end)."""
    log_every: int = 10
    """Log training metrics every this many steps."""
    eval_every: int = 250
    """Run the trainer's evaluation every this many steps (when it has one)."""
    seed: int = 0
    """Seed of the data stream and of every random draw in the loop."""
    progress: bool = True
    """Show a progress bar."""
    loader_workers: int = 0
    """Processes that prepare batches ahead of the training step (0: the training process makes each batch
    when it needs it). On a GPU, a few keep it from waiting on clip decoding and augmentation; the batches
    are the same either way (each is a pure function of its step)."""


def lr_at(cfg: LoopConfig, step: int) -> float:
    """Learning rate at ``step``: linear warm-up, then cosine down to ``min_lr_ratio * lr``."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    span = max(1, cfg.steps - cfg.warmup_steps)
    progress = min(1.0, (step - cfg.warmup_steps) / span)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))


def step_seed(seed: int, step: int, rank: int = 0) -> int:
    """A 63-bit seed for one (seed, step, rank) triple; used for batches and for the torch RNG."""
    import numpy as np

    return int(np.random.default_rng([seed, step, rank]).integers(2**63 - 1))


def cpu_has_native_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX), as oneDNN reports it."""
    check = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    return True if check is None else bool(check())


def effective_precision(requested: str) -> str:
    """The precision a run trains in: ``requested``, except bf16 on a CPU that lacks native bf16, where
    autocast is emulated and several times slower than float32; there it is float32, and it says so."""
    if requested == "bf16" and not torch.cuda.is_available() and not cpu_has_native_bf16():
        print("mixed_precision='bf16': this CPU has no native bf16 (AVX512-BF16 or AMX), where autocast is "
              "several times slower than float32; training in float32", flush=True)
        return "no"
    return requested


def train(
    cfg: LoopConfig,
    model: torch.nn.Module,
    make_batch: Callable[[int, int], Any],
    compute_loss: Callable[[torch.nn.Module, Any], tuple[torch.Tensor, dict[str, float]]],
    evaluate: Callable[[torch.nn.Module, int], dict[str, float]] | None = None,
    trainable: Callable[[torch.nn.Module], list[torch.nn.Parameter]] | None = None,
) -> torch.nn.Module:
    """Optimize ``model`` for ``cfg.steps`` steps, resuming from ``cfg.out`` when a save exists.

    ``make_batch(step, rank)`` returns a batch (tensors, or dicts/lists of them) on the CPU;
    the loop moves it to the device. ``compute_loss`` must go through ``model(...)`` (with several
    processes the model is wrapped in DistributedDataParallel, whose forward syncs gradients).
    ``evaluate(model, step)`` returns metrics logged with ``split="val"``. ``trainable(model)`` picks
    the parameters to optimize (default: all with ``requires_grad``). Returns the unwrapped model.
    """
    from roboalign_env.extras import require

    if isinstance(cfg.loader_workers, bool) or not isinstance(cfg.loader_workers, int) or cfg.loader_workers < 0:
        raise ValueError(f"loader_workers must be an integer, 0 (no worker processes) or more; "
                         f"got {cfg.loader_workers!r}")
    accelerate = require("accelerate", "train", "training")
    Accelerator, send_to_device = accelerate.Accelerator, accelerate.utils.send_to_device
    from tqdm.auto import tqdm

    out = Path(cfg.out)
    accelerator = Accelerator(mixed_precision=effective_precision(cfg.mixed_precision), cpu=not torch.cuda.is_available())
    params = trainable(model) if trainable else [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    root = _resume_root(out)
    start = _load_resume(root, model, optimizer, cfg.seed) if root is not None else 0
    model, optimizer = accelerator.prepare(model, optimizer)
    main = accelerator.is_main_process
    if main:
        out.mkdir(parents=True, exist_ok=True)
        _tidy(out)
        _truncate_metrics(out / "metrics.jsonl", start)
        (out / "loop_config.json").write_text(json.dumps(asdict(cfg), default=str, indent=1))

    bar = tqdm(total=cfg.steps, initial=start, disable=not (cfg.progress and main), desc=out.name, dynamic_ncols=True)
    tic = time.perf_counter()
    model.train()
    batches = _batches(make_batch, range(start, cfg.steps), accelerator.process_index, cfg.loader_workers)
    for step, batch in zip(range(start, cfg.steps), batches):
        torch.manual_seed(step_seed(cfg.seed, step, accelerator.process_index) + 1)
        batch = send_to_device(batch, accelerator.device)
        for group in optimizer.param_groups:
            group["lr"] = lr_at(cfg, step)
        with accelerator.autocast():
            loss, metrics = compute_loss(model, batch)
        if not torch.isfinite(loss):
            raise FloatingPointError(f"step {step}: loss is {loss.item()} (lower --lr or check the data)")
        accelerator.backward(loss)
        grad_norm = accelerator.clip_grad_norm_(params, cfg.grad_clip) if cfg.grad_clip > 0 else None
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        bar.update(1)
        done = step + 1
        if main and (done % cfg.log_every == 0 or done == cfg.steps):
            row = {"step": done, "split": "train", "loss": loss.item(), "lr": lr_at(cfg, step),
                   "sec": round(time.perf_counter() - tic, 3), **metrics}
            if grad_norm is not None:
                row["grad_norm"] = float(grad_norm)
            _append_metrics(out / "metrics.jsonl", row)
            bar.set_postfix(loss=f"{row['loss']:.4f}")
        if evaluate is not None and (done % cfg.eval_every == 0 or done == cfg.steps):
            model.eval()
            with torch.no_grad(), accelerator.autocast():
                val = evaluate(accelerator.unwrap_model(model), done)
            model.train()
            if main:
                _append_metrics(out / "metrics.jsonl", {"step": done, "split": "val", **val})
        if done % cfg.save_every == 0 or done == cfg.steps:
            accelerator.wait_for_everyone()
            if main:
                _save(out, done, cfg.seed, accelerator.unwrap_model(model), optimizer)
                plot_metrics(out / "metrics.jsonl", out / "curves.png")
    bar.close()
    accelerator.wait_for_everyone()
    return accelerator.unwrap_model(model)


class _StepBatches(torch.utils.data.Dataset):
    """The batches of a range of steps, in order, for a DataLoader's worker processes."""

    def __init__(self, make_batch: Callable[[int, int], Any], steps: range, rank: int):
        self.make_batch, self.steps, self.rank = make_batch, steps, rank

    def __len__(self) -> int:
        return len(self.steps)

    def __getitem__(self, index: int) -> Any:
        return self.make_batch(self.steps[index], self.rank)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # the workers share the cores with the training process


def _batches(make_batch: Callable[[int, int], Any], steps: range, rank: int, workers: int):
    """The batches of ``steps`` in order: made in this process, or ahead by ``workers`` forked processes."""
    if workers == 0 or not steps:
        return (make_batch(step, rank) for step in steps)
    return iter(torch.utils.data.DataLoader(
        _StepBatches(make_batch, steps, rank), batch_size=None, num_workers=workers, prefetch_factor=4,
        worker_init_fn=_one_thread, multiprocessing_context="fork"))


def _save(out: Path, step: int, seed: int, model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """Write the checkpoint of ``step`` as one complete, fsynced folder, then make it current in one
    atomic rename (see the module docstring); every path used is inside ``out``. ``checkpoints/``
    holds nothing but the current step folder here: ``train`` tidies it up on start and after every save."""
    checkpoints = out / "checkpoints"
    name = f"step_{step:08d}"
    tmp = checkpoints / f".{name}.tmp"
    model.save_pretrained(tmp / "model", safe_serialization=True)
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for index, slots in state["state"].items():
        for key, value in slots.items():
            if torch.is_tensor(value):
                tensors[f"{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{index}.{key}"] = value
    (tmp / "resume").mkdir()
    (tmp / "resume" / "optimizer.safetensors").write_bytes(safetensors_bytes(tensors))
    meta = {"step": step, "seed": seed, "param_groups": state["param_groups"], "scalars": scalars}
    (tmp / "resume" / "state.json").write_text(json.dumps(meta))
    sync_tree(tmp)
    tmp.rename(checkpoints / name)
    fsync_dir(checkpoints)
    _link_model(out)
    _symlink(os.path.join("checkpoints", name), out / "checkpoint")
    _tidy(out)


def _symlink(target: str, link: Path) -> None:
    """Point ``link`` at ``target`` in one atomic rename of a fresh symlink over it (a ``.NAME.tmp``
    that a kill left behind is deleted by ``_tidy``)."""
    tmp = link.with_name(f".{link.name}.tmp")
    os.symlink(target, tmp)
    os.replace(tmp, link)
    fsync_dir(link.parent)


def _link_model(out: Path) -> None:
    """Make ``out/model`` the symlink ``checkpoint/model``. A ``model/`` folder of the older layout is
    kept until a checkpoint of this layout is current, then moved aside, linked over and deleted."""
    model = out / "model"
    if model.is_symlink() and os.readlink(model) == _MODEL_LINK:
        return
    if model.is_dir() and not model.is_symlink():
        if not (out / "checkpoint").is_symlink():
            return
        model.rename(out / ".model.old")  # deleted by _tidy
    _symlink(_MODEL_LINK, model)


def _tidy(out: Path) -> None:
    """Delete what killed saves left behind: step folders other than the current one, temporary
    symlinks, and the older layout's folders once a current checkpoint replaces them."""
    current = out / "checkpoint"
    keep = os.path.basename(os.readlink(current)) if current.is_symlink() else None
    if (out / "checkpoints").is_dir():
        for entry in (out / "checkpoints").iterdir():
            if entry.name != keep:
                shutil.rmtree(entry)
    for leftover in (".checkpoint.tmp", ".model.tmp"):
        (out / leftover).unlink(missing_ok=True)
    if keep is not None:
        _link_model(out)
        for old in (out / ".model.old", out / "resume"):
            if old.is_dir():
                shutil.rmtree(old)


def _resume_root(out: Path) -> Path | None:
    """The folder holding ``model/`` and ``resume/`` to resume from: the current step folder, a run
    folder of the older layout, or None for a fresh run."""
    current = out / "checkpoint"
    if current.is_symlink():
        target = os.readlink(current)  # resolved once: a save can't switch it between two reads
        if os.path.dirname(target) != "checkpoints" or not os.path.basename(target).startswith("step_"):
            raise ValueError(f"{current} points to {target}, not to a step folder in {out / 'checkpoints'}")
        root = out / target
        if not (root / "resume" / "state.json").is_file():
            raise FileNotFoundError(f"{current} points to {root}, which holds no complete checkpoint")
        return root
    return out if (out / "resume" / "state.json").is_file() else None


def _load_resume(root: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, seed: int) -> int:
    """Restore weights from ``root/model`` and the optimizer from ``root/resume``; return the step."""
    meta = json.loads((root / "resume" / "state.json").read_text())
    if meta.get("seed", seed) != seed:
        raise ValueError(f"{root}: the checkpoint was saved by a run with seed {meta['seed']}, not {seed}; "
                         "resuming it with another seed would change its data stream (use a new --out)")
    weights = load_file(str(root / "model" / "model.safetensors"))
    try:
        missing, unexpected = model.load_state_dict(weights, strict=False)
    except RuntimeError as err:
        missing, unexpected = [str(err).splitlines()[1].strip()], []
    params = dict(model.named_parameters())
    if unexpected or any(k in params or "size mismatch" in k for k in missing):
        raise ValueError(f"{root / 'model'}: the checkpoint to resume from does not match this model "
                         f"(missing or mismatched {missing[:3]}, unexpected {unexpected[:3]}); "
                         "use a new --out or the same model settings")
    moments = load_file(str(root / "resume" / "optimizer.safetensors"))
    state: dict[int, dict[str, Any]] = {}
    for key, value in list(moments.items()) + list(meta["scalars"].items()):
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    return int(meta["step"])


def _append_metrics(path: Path, row: dict) -> None:
    with path.open("a") as f:
        f.write(json.dumps(row) + "\n")


def _truncate_metrics(path: Path, step: int) -> None:
    """Drop rows logged after the step we resume from (they will be logged again)."""
    if path.is_file():
        write_jsonl(path, [r for r in read_jsonl(path) if r["step"] <= step])


def plot_metrics(metrics: Path, png: Path) -> Path | None:
    """One panel per metric against the step, train and val series overlaid; written atomically."""
    from roboalign_env.eval.media import pyplot

    plt = pyplot()

    from roboalign_env.eval.media import save_figure

    rows = list(read_jsonl(metrics)) if Path(metrics).is_file() else []
    skip = {"step", "split", "sec", "lr"}
    names = sorted({k for r in rows for k, v in r.items() if k not in skip and isinstance(v, (int, float))})
    if not names:
        return None
    cols = min(4, len(names))
    nrows = math.ceil(len(names) / cols)
    fig, axes = plt.subplots(nrows, cols, figsize=(4 * cols, 3 * nrows), squeeze=False)
    for ax, name in zip(axes.flat, names):
        for split in ("train", "val"):
            pts = [(r["step"], r[name]) for r in rows if r.get("split") == split and name in r]
            if pts:
                ax.plot(*zip(*pts), label=split, marker="o" if split == "val" else None, ms=3)
        ax.set_title(name)
        ax.set_xlabel("step")
        if name.endswith("loss"):
            ax.set_yscale("log")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(names):]:
        ax.axis("off")
    fig.tight_layout()
    return save_figure(fig, png, dpi=80)
