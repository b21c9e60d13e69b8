"""Training the state probe on real frames of a collection, and its held-out position error in cm.

Episodes are split by a hash of their id (the bench's rule, with no held-out source: the probe
must read every scene); ``train`` frames fit the probe, ``test`` frames give the held-out error.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.io import atomic_write
from roboalign_env.data.splits import split_of
from roboalign_env.models.state_probe import FLAGS, MAX_OBJECTS, StateProbe, StateProbeConfig
from roboalign_env.training.loop import LoopConfig, step_seed, train


class FrameSet:
    """Every frame of a set of episodes with its privileged state, objects padded to ``MAX_OBJECTS``."""

    def __init__(self, episodes, sources: list[str]):
        frames, src, eef, grip, obj, objmask, flags, success, progress = ([] for _ in range(9))
        for ep in episodes:
            n, k = len(ep.frames), ep.state["object_pos"].shape[1]
            frames.append(ep.frames)
            src.append(np.full(n, sources.index(ep.meta["source"])))
            eef.append(ep.state["eef_pos"])
            grip.append(ep.state["gripper_opening"])
            o = np.zeros((n, MAX_OBJECTS, 3), np.float32)
            o[:, :k] = ep.state["object_pos"]
            obj.append(o)
            m = np.zeros((n, MAX_OBJECTS), bool)
            m[:, :k] = True
            objmask.append(m)
            f = np.zeros((n, MAX_OBJECTS, len(FLAGS)), np.float32)
            f[:, :k] = np.stack([ep.state[name] for name in FLAGS], -1)
            flags.append(f)
            success.append(ep.state["success"])
            progress.append(ep.state["progress"])
        cat = np.concatenate
        self.frames, self.source = cat(frames), cat(src)
        self.eef, self.gripper = cat(eef).astype(np.float32), cat(grip).astype(np.float32)
        self.objects, self.object_mask, self.flags = cat(obj), cat(objmask), cat(flags)
        self.success, self.progress = cat(success).astype(np.float32), cat(progress).astype(np.float32)

    def __len__(self) -> int:
        return len(self.frames)

    def batch(self, idx) -> dict[str, torch.Tensor]:
        t = torch.from_numpy
        return {"frames": t(self.frames[idx]).permute(0, 3, 1, 2).float() / 255.0, "source": t(self.source[idx]),
                "eef": t(self.eef[idx]), "gripper": t(self.gripper[idx]), "objects": t(self.objects[idx]),
                "object_mask": t(self.object_mask[idx]), "flags": t(self.flags[idx]),
                "success": t(self.success[idx]), "progress": t(self.progress[idx])}


def load_split(collection: str | Path, split: str) -> list:
    """The episodes of ``split`` (hash of the episode id, every source included)."""
    collection = Path(collection)
    rows = [r for r in read_manifest(collection) if split_of(r["episode_id"], r["source"], heldout_source="") == split]
    return [load_episode(collection / r["path"]) for r in rows]


def step_maxima(episodes, sources: list[str]) -> tuple[list[float], list[float]]:
    """Per source, the largest end-effector step (m) and mean-brightness step between displayed frames
    of real episodes, at every stride a bench clip of the episode may use."""
    eef, light = np.zeros(len(sources)), np.zeros(len(sources))
    for ep in episodes:
        i = sources.index(ep.meta["source"])
        brightness = ep.frames.reshape(len(ep.frames), -1).mean(1) / 255.0
        for stride in range(1, max(1, ep.num_steps // 31) + 1):
            eef[i] = max(eef[i], np.linalg.norm(np.diff(ep.state["eef_pos"][::stride], axis=0), axis=-1).max())
            light[i] = max(light[i], np.abs(np.diff(brightness[::stride])).max())
    return eef.tolist(), light.tolist()


def probe_config(episodes) -> StateProbeConfig:
    """Source list, normalization constants and step maxima measured on the training episodes."""
    sources = sorted({ep.meta["source"] for ep in episodes})
    per_source = {ep.meta["source"]: ep.state["object_pos"].shape[1] for ep in episodes}
    positions = np.concatenate([np.concatenate([ep.state["eef_pos"], ep.state["object_pos"].reshape(-1, 3)]) for ep in episodes])
    grip = np.concatenate([ep.state["gripper_opening"] for ep in episodes])
    eef_max, light_max = step_maxima(episodes, sources)
    return StateProbeConfig(
        sources=sources, objects_per_source=[per_source[s] for s in sources],
        position_mean=positions.mean(0).tolist(), position_std=positions.std(0).tolist(),
        gripper_mean=float(grip.mean()), gripper_std=float(grip.std() + 1e-6),
        eef_step_max=eef_max, brightness_step_max=light_max, image_size=int(episodes[0].frames.shape[1]))


def probe_loss(model: StateProbe, batch: dict) -> tuple[torch.Tensor, dict]:
    c = model.config
    raw = model(batch["frames"])
    device = batch["eef"].device
    mean, std = torch.tensor(c.position_mean, device=device), torch.tensor(c.position_std, device=device)
    mask = batch["object_mask"]
    obj_err = ((raw["objects"] - (batch["objects"] - mean) / std) ** 2).mean(-1)
    losses = {
        "source": F.cross_entropy(raw["source"], batch["source"]),
        "eef": F.mse_loss(raw["eef"], (batch["eef"] - mean) / std),
        "gripper": F.mse_loss(raw["gripper"][:, 0], (batch["gripper"] - c.gripper_mean) / c.gripper_std),
        "objects": (obj_err * mask).sum() / mask.sum(),
        "flags": (F.binary_cross_entropy_with_logits(raw["flags"], batch["flags"], reduction="none").mean(-1) * mask).sum() / mask.sum(),
        "success": F.binary_cross_entropy_with_logits(raw["success"][:, 0], batch["success"]),
        "progress": F.mse_loss(raw["progress"][:, 0], batch["progress"]),
    }
    return sum(losses.values()), {f"loss_{k}": v.item() for k, v in losses.items()}


@torch.no_grad()
def position_errors(model: StateProbe, frames: FrameSet, batch_size: int = 256) -> dict:
    """Held-out Euclidean errors in cm (mean, median, 95th percentile) for the end effector and the
    objects, overall and per source; gripper-opening MAE (cm); flag and success accuracy."""
    preds = [model.read_frames(frames.batch(np.arange(s, min(s + batch_size, len(frames))))["frames"])
             for s in range(0, len(frames), batch_size)]
    get = lambda key: np.concatenate([p[key] for p in preds])  # noqa: E731
    eef_err = 100 * np.linalg.norm(get("eef_pos") - frames.eef, axis=-1)
    obj_err = 100 * np.linalg.norm(get("object_pos") - frames.objects, axis=-1)[frames.object_mask]
    obj_source = np.broadcast_to(frames.source[:, None], frames.object_mask.shape)[frames.object_mask]
    stats = lambda e: {"mean_cm": float(e.mean()), "median_cm": float(np.median(e)), "p95_cm": float(np.percentile(e, 95))}  # noqa: E731
    out = {"frames": len(frames), "eef": stats(eef_err), "objects": stats(obj_err),
           "gripper_mae_cm": float(100 * np.abs(get("gripper_opening") - frames.gripper).mean()),
           "source_accuracy": float((get("source") == frames.source).mean()),
           "flag_accuracy": float(((get("flags") >= 0.5) == (frames.flags >= 0.5))[frames.object_mask].mean()),
           "success_accuracy": float(((get("success") >= 0.5) == (frames.success >= 0.5)).mean()),
           "per_source": {}}
    for i, name in enumerate(model.config.sources):
        if (frames.source == i).any():
            out["per_source"][name] = {"eef": stats(eef_err[frames.source == i]), "objects": stats(obj_err[obj_source == i])}
    return out


def train_probe(collection: str | Path, loop: LoopConfig, batch_size: int = 128) -> tuple[StateProbe, dict]:
    """Train (or resume) the probe on the collection's train episodes; return it and its test errors
    (also written to ``loop.out/heldout_errors.json``)."""
    train_eps = load_split(collection, "train")
    if not train_eps:
        raise ValueError(f"{collection}: no training episodes")
    model = StateProbe(probe_config(train_eps))
    frames = FrameSet(train_eps, model.config.sources)
    known = lambda eps: [ep for ep in eps if ep.meta["source"] in model.config.sources]  # noqa: E731  (sources it was trained on)
    val_eps = known(load_split(collection, "val"))
    val = FrameSet(val_eps, model.config.sources) if val_eps else None

    def make_batch(step: int, rank: int) -> dict:
        rng = np.random.default_rng(step_seed(loop.seed, step, rank))
        return frames.batch(rng.integers(0, len(frames), batch_size))

    def evaluate(m, step):
        errors = position_errors(m, val)
        return {"val_eef_cm": errors["eef"]["mean_cm"], "val_objects_cm": errors["objects"]["mean_cm"]}

    model = train(loop, model, make_batch, probe_loss, evaluate if val is not None else None)
    test_eps = known(load_split(collection, "test"))
    errors = position_errors(model, FrameSet(test_eps, model.config.sources)) if test_eps else {}
    atomic_write(Path(loop.out) / "heldout_errors.json", lambda f: f.write(json.dumps(errors, indent=1)), mode="w")
    return model, errors
