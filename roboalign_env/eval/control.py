"""Does the dream follow the actions? A controllability report for any world-model checkpoint.

Every held-out ("test") episode chosen as a start is restarted exactly in robosuite (its seed), and
from that same state both robosuite and the world model (same first frame, same actions, greedy unless
a sampling temperature is given, the model's own SWR window, as the environment uses) are driven by:

- constant counterfactual commands: ``+x, -x, +y, -y, +z, -z`` at ``magnitude`` with the gripper
  held as the episode's first action had it, and the gripper ``open`` / ``close`` with zero motion;
- the episode's own recorded actions (``own``), and another episode's of the same source (``other``).

Reported, per source and overall:

(a) ``direction``: the direction accuracy, whether the dreamed frame of a directional command is
    nearest (L2 over pixels) to the real frame of the same command among the six real
    counterfactuals at that step (chance: 1/6), and the same judged by the direction of change
    (cosine between changes from the first frame, so a dream that moves the right way but not as
    far still counts); ``separation``: per axis ``mean|dream(+a) - dream(-a)| / mean|real(+a) - real(-a)|``
    at the last step (1: the dream separates the commands as much as reality; 0: it ignores them),
    median over starts and axes, and the same for the gripper closed vs open;
(b) ``action_swap``: the error of the dream driven by the own actions vs by the other episode's,
    both against the real own trajectory (pixels, and end effector through the state probe);
(c) ``tracking``: end-effector and object positions read by the probe off the own-action dream
    against ground truth, beside nothing-moves (the probe on the first frame, repeated) and the
    probe on the real frames (its own error: the floor);
(d) ``frames``: PSNR / SSIM / a perceptual distance of every dreamed frame against its real frame,
    and PSNR over the moving pixels only (those differing from the real first frame by more than
    10/255 in any channel), beside nothing-moves (the real first frame as the prediction).
"""

from __future__ import annotations

import hashlib
import json
import math
import zipfile
from dataclasses import dataclass
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.io import atomic_write
from roboalign_env.data.splits import split_episode_ids
from roboalign_env.eval.media import grid, save_figure
from roboalign_env.eval.metrics import MOTION_THRESHOLD, frame_metrics, load_perceptual, perceptual_name
from roboalign_env.models.transformer import MODEL_WINDOW, Window, check_window
from roboalign_env.models.world_model import WorldModel
from roboalign_env.sim.rendering import CAMERA

DIRECTIONS = ("+x", "-x", "+y", "-y", "+z", "-z")
GRIPPER = ("open", "close")
ROLLOUTS = (*DIRECTIONS, *GRIPPER, "own", "other")
"""Every rollout of a start, in the order of the arrays below."""
AXES = ("x", "y", "z")
REPORT_STEPS = (4, 8)
"""Steps at which the direction accuracy is reported (besides the last)."""
PSNR_CAP = 60.0
"""PSNR of identical frames is infinite: capped, as in the world-model evaluation."""
SHEET_STEPS = 5


@dataclass
class Start:
    """A held-out start: the episode restarted from its seed, and the actions of every rollout."""

    episode_id: str
    source: str
    seed: int
    other_id: str | None
    actions: dict[str, np.ndarray]  # rollout name -> (steps, 7)
    recorded_frames: np.ndarray  # the episode's own frames (steps + 1, H, W, 3) uint8
    camera: str = CAMERA  # the camera setting the episode was recorded through


@dataclass
class Real:
    """What robosuite did for every rollout of one start."""

    frames: np.ndarray  # (R, steps + 1, H, W, 3) uint8
    eef: np.ndarray  # (R, steps + 1, 3) metres
    objects: np.ndarray  # (R, steps + 1, K, 3) metres


# --- the pure metrics ------------------------------------------------------------------------------------------

def command_actions(magnitude: float, gripper: float, steps: int) -> dict[str, np.ndarray]:
    """Constant (steps, 7) actions of the counterfactual commands: a position delta of ``magnitude``
    along one axis with the gripper command ``gripper``; or no motion and the gripper open (-1) / closed (+1)."""
    out = {}
    for i, name in enumerate(DIRECTIONS):
        a = np.zeros(7, np.float32)
        a[i // 2] = magnitude if name[0] == "+" else -magnitude
        a[6] = gripper
        out[name] = a
    for name, value in zip(GRIPPER, (-1.0, 1.0)):
        a = np.zeros(7, np.float32)
        a[6] = value
        out[name] = a
    return {k: np.tile(v, (steps, 1)) for k, v in out.items()}


def nearest_commands(dream: np.ndarray, real: np.ndarray, first: np.ndarray, by_change: bool = False) -> np.ndarray:
    """For each command's dreamed frame, the index of the command whose real frame it is nearest to.

    ``dream`` and ``real`` hold one frame per command (C, ...), ``first`` the first frame. Nearest is
    the smallest L2 distance, or with ``by_change`` the largest cosine between changes from ``first``.
    Ties go to the first command.
    """
    d = dream.reshape(len(dream), -1).astype(np.float64)
    r = real.reshape(len(real), -1).astype(np.float64)
    if by_change:
        f = first.reshape(-1).astype(np.float64)
        d, r = d - f, r - f
        d /= np.linalg.norm(d, axis=1, keepdims=True) + 1e-12
        r /= np.linalg.norm(r, axis=1, keepdims=True) + 1e-12
        return (d @ r.T).argmax(1)
    return ((d[:, None] - r[None]) ** 2).sum(-1).argmin(1)


def direction_hits(dream: np.ndarray, real: np.ndarray, first: np.ndarray, by_change: bool = False) -> np.ndarray:
    """Whether each command's dreamed frame is nearest to the real frame of the same command
    (:func:`nearest_commands`); a dream that ignores the commands scores 1/C."""
    return nearest_commands(dream, real, first, by_change) == np.arange(len(dream))


def confusion(nearest: np.ndarray) -> dict[str, dict[str, int]]:
    """Counts of nearest real commands (..., C) per dreamed command: ``{dreamed: {nearest real: count}}``.
    A dream that moves, but unlike any command, lands every command on the same real frame (often the
    one that changes the frame least), which the accuracy alone does not show."""
    flat = nearest.reshape(-1, len(DIRECTIONS)).astype(int)
    counts = [np.bincount(flat[:, i], minlength=len(DIRECTIONS)) for i in range(len(DIRECTIONS))]
    return {c: {DIRECTIONS[k]: int(n) for k, n in enumerate(row) if n} for c, row in zip(DIRECTIONS, counts)}


def separation_ratio(dream_a: np.ndarray, dream_b: np.ndarray, real_a: np.ndarray, real_b: np.ndarray) -> float:
    """``mean|dream_a - dream_b| / mean|real_a - real_b|`` (NaN when the real frames are identical)."""
    real = np.abs(real_a.astype(np.float64) - real_b).mean()
    return float(np.abs(dream_a.astype(np.float64) - dream_b).mean() / real) if real > 0 else math.nan


def motion_mask(real: torch.Tensor, first: torch.Tensor, threshold: float = MOTION_THRESHOLD) -> torch.Tensor:
    """(N, 1, H, W): pixels of real frames (N, 3, H, W) that differ from ``first`` by more than ``threshold``."""
    return ((real - first).abs() > threshold).any(1, keepdim=True)


def masked_psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """PSNR per frame over the pixels of ``mask`` (N, 1, H, W) only; NaN for a frame with none."""
    count = mask.sum((1, 2, 3)).double() * pred.shape[1]
    err = ((pred.double() - target.double()) ** 2 * mask).sum((1, 2, 3)) / count.clamp(min=1)
    out = (10 * torch.log10(1 / err)).clamp(max=PSNR_CAP)
    return torch.where(count > 0, out, torch.full_like(out, math.nan)).float()


def frame_scores(dream: torch.Tensor, real: torch.Tensor, first: torch.Tensor, metric: str) -> dict[str, np.ndarray]:
    """Per frame (N,): PSNR, SSIM, the perceptual distance and moving-pixel PSNR of ``dream`` against
    ``real``, and the same for nothing-moves (``first`` as the prediction); all (N, 3, H, W) in [0, 1]."""
    mask = motion_mask(real, first)
    out = {}
    for name, pred in (("dream", dream), ("nothing_moves", first)):
        scores = frame_metrics(pred, real, metric=metric)
        out[f"psnr_{name}"] = scores["psnr"].clamp(max=PSNR_CAP).numpy()
        out[f"ssim_{name}"] = scores["ssim"].numpy()
        out[f"lpips_{name}"] = scores["lpips"].numpy()
        out[f"moving_psnr_{name}"] = masked_psnr(pred, real, mask).numpy()
    out["moving_fraction"] = mask.float().mean((1, 2, 3)).numpy()
    return out


def position_error_cm(pred: np.ndarray, true: np.ndarray) -> np.ndarray:
    """Euclidean error in cm over the last axis, averaged over any axes between the first and the last."""
    err = 100 * np.linalg.norm(pred - true, axis=-1)
    return err.reshape(len(err), -1).mean(1) if err.ndim > 1 else err


# --- starts, robosuite and the dream ----------------------------------------------------------------------------

def choose_starts(episodes: Path, sources: tuple[str, ...], per_source: int, steps: int,
                  magnitude: float) -> list[Start]:
    """The first ``per_source`` test episodes of each source (sorted by id), with their rollouts' actions."""
    episodes = Path(episodes)
    rows = {r["episode_id"]: r for r in read_manifest(episodes)}
    test = set(split_episode_ids(episodes, "test"))
    present = sorted({rows[i]["source"] for i in test})
    sources = tuple(sources) or tuple(present)
    missing = [s for s in sources if s not in present]
    if missing:
        raise ValueError(f"sources: {missing} have no held-out (test) episodes in {episodes} (it has {present})")
    starts = []
    for source in sources:
        same = sorted(i for i, r in rows.items() if r["source"] == source)
        for episode_id in sorted(i for i in test if rows[i]["source"] == source)[:per_source]:
            ep = load_episode(episodes / rows[episode_id]["path"])
            if ep.num_steps < steps:
                raise ValueError(f"steps: {steps} is longer than episode {episode_id} ({ep.num_steps} steps)")
            other_id, other = None, ep.actions[:steps]  # no other episode: the swap is skipped for this start
            for candidate in same[same.index(episode_id) + 1 :] + same[: same.index(episode_id)]:
                loaded = load_episode(episodes / rows[candidate]["path"], frames=False)
                if loaded.num_steps >= steps:
                    other_id, other = candidate, loaded.actions[:steps]
                    break
            actions = {**command_actions(magnitude, float(ep.actions[0, 6]), steps),
                       "own": ep.actions[:steps], "other": other}
            starts.append(Start(episode_id, source, int(ep.meta["seed"]), other_id,
                                {k: np.asarray(v, np.float32) for k, v in actions.items()}, ep.frames[: steps + 1],
                                ep.meta.get("camera", CAMERA)))
    return starts


def simulate(start: Start, image_size: int) -> Real:
    """Restart the episode from its seed once per rollout and step robosuite through its actions."""
    from roboalign_env.sim.replay import replay

    runs = [replay(start.source, start.seed, start.actions[name], image_size, start.camera) for name in ROLLOUTS]
    return Real(np.stack([f for f, _ in runs]), np.stack([t["eef_pos"] for _, t in runs]),
                np.stack([t["object_pos"] for _, t in runs]))


def real_rollouts(starts: list[Start], image_size: int, cache: Path | None = None, progress: bool = True) -> list[Real]:
    """What robosuite does for every rollout of every start (:func:`simulate`). With ``cache``, a start that an
    earlier report simulated (same source, seed, actions and image size, same robosuite and MuJoCo) is read from
    there, and a new one is written there, so reports on several models of one collection simulate it once."""
    real = []
    for start in tqdm(starts, desc="robosuite", unit="start", disable=not progress):
        path = None if cache is None else Path(cache) / f"{start.episode_id}-{_rollouts_key(start, image_size)}.npz"
        rollouts = _read_real(path) if path is not None and path.is_file() else None
        if rollouts is None:
            rollouts = simulate(start, image_size)
            if path is not None:
                atomic_write(path, lambda f, r=rollouts: np.savez(f, frames=r.frames, eef=r.eef, objects=r.objects))
        real.append(rollouts)
    return real


def _rollouts_key(start: Start, image_size: int) -> str:
    """What a start's real rollouts depend on, hashed."""
    key = [start.source, start.seed, image_size, ROLLOUTS, version("robosuite"), version("mujoco")]
    if start.camera != CAMERA:  # the default camera is left out, so earlier caches stay valid
        key.append(start.camera)
    digest = hashlib.sha256(json.dumps(key).encode())
    for name in ROLLOUTS:
        digest.update(np.ascontiguousarray(start.actions[name], np.float32).tobytes())
    return digest.hexdigest()[:16]


def _read_real(path: Path) -> Real | None:
    """A cached start's rollouts; None for a file that cannot be read (it is simulated and written again)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            return Real(data["frames"], data["eef"], data["objects"])
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def to_float(frames: np.ndarray) -> torch.Tensor:
    """uint8 (..., H, W, 3) -> float (..., 3, H, W) in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames)).movedim(-1, -3).float() / 255


def to_uint8(frames: torch.Tensor) -> np.ndarray:
    return (frames.movedim(-3, -1).clamp(0, 1) * 255).round().byte().cpu().numpy()


def dream_all(model: WorldModel, first: np.ndarray, actions: np.ndarray, window: Window, batch_size: int,
              progress: bool, guidance: float | None = None, passes: int | None = None,
              temperature: float = 0.0) -> np.ndarray:
    """Rollouts from first frames (N, H, W, 3) uint8 under actions (N, steps, 7): (N, steps, H, W, 3) uint8
    (``guidance``: classifier-free guidance scale, ``passes``: refinement passes per frame, None for the model's
    defaults). Greedy at ``temperature`` 0; sampled otherwise, rollout i from a generator seeded i."""
    device = model.tokenizer.device
    out = []
    for s in tqdm(range(0, len(first), batch_size), desc="dream", unit="batch", disable=not progress):
        rows = range(s, min(s + batch_size, len(first)))
        generators = [torch.Generator().manual_seed(i) for i in rows] if temperature > 0 else None
        roll = model.rollout(to_float(first[s : s + batch_size]).to(device),
                             torch.from_numpy(actions[s : s + batch_size]).to(device), window=window,
                             temperature=temperature, generators=generators, guidance=guidance, passes=passes)
        out.append(to_uint8(roll.frames))
    return np.concatenate(out)


@torch.no_grad()
def reconstruct_all(model: WorldModel, frames: np.ndarray, window: int | None, batch_size: int) -> np.ndarray:
    """The tokenizer's own reconstruction of real videos (N, steps + 1, H, W, 3) uint8, rolled out as a dream is:
    every later frame is encoded to dynamics codes and decoded against its SWR window's context, which is the real
    first frame for the first window and, for every later window, the reconstruction of the frame before it (a
    dream re-encodes its own last frame, never the real one). Returns (N, steps, H, W, 3) uint8: what a
    transformer that predicted every code exactly would draw."""
    tok = model.tokenizer
    span = window - 1 if window is not None else frames.shape[1]
    out = []
    for s in range(0, len(frames), batch_size):
        video = to_float(frames[s : s + batch_size]).to(tok.device)
        context = video[:, 0]
        skips = tok.context_features(context)
        decoded = []
        for t in range(1, video.shape[1]):
            if t > 1 and (t - 1) % span == 0:  # a new window starts from the last reconstructed frame
                context = decoded[-1]
                skips = tok.context_features(context)
            codes = tok.encode_dynamics(video[:, t], context)
            decoded.append(tok.decode_dynamics(codes, context, skips).float().clamp(0, 1))
        out.append(to_uint8(torch.stack(decoded, 1)))
    return np.concatenate(out)


# --- the report ---------------------------------------------------------------------------------------------------

def _mean(x) -> float | None:
    x = np.asarray(x, np.float64)
    return float(np.nanmean(x)) if np.isfinite(x).any() else None


def _median(x) -> float | None:
    x = np.asarray(x, np.float64)
    return float(np.nanmedian(x)) if np.isfinite(x).any() else None


def _ratio(a, b) -> float | None:
    a, b = _mean(a), _mean(b)
    return a / b if a is not None and b else None


def report_steps(steps: int) -> list[int]:
    return sorted({s for s in REPORT_STEPS if s < steps} | {steps})


def summarize(m: dict[str, np.ndarray], rows: np.ndarray, steps: int, probe: bool, swap: np.ndarray) -> dict:
    """The report of the starts ``rows`` (a boolean mask) from the per-start arrays ``m``."""
    at = report_steps(steps)
    sel = lambda k: m[k][rows]  # noqa: E731
    section = {
        "starts": int(rows.sum()),
        "direction": {
            "accuracy": {str(t): _mean(sel("hits")[:, :, t - 1]) for t in at},
            "accuracy_by_change": {str(t): _mean(sel("hits_change")[:, :, t - 1]) for t in at},
            "chance": 1 / len(DIRECTIONS),
        },
        "separation": {
            "ratio_median": _median(sel("separation")),
            "ratio_per_axis": {a: _median(sel("separation")[:, i]) for i, a in enumerate(AXES)},
            "gripper_ratio_median": _median(sel("gripper_separation")),
        },
        "frames": {k: _mean(sel(k)) for k in sorted(m) if k.startswith(("psnr_", "ssim_", "lpips_", "moving_"))},
    }
    section["direction"]["accuracy_last"] = section["direction"]["accuracy"][str(steps)]
    section["direction"]["accuracy_by_change_last"] = section["direction"]["accuracy_by_change"][str(steps)]
    section["direction"]["nearest_real_command_last"] = confusion(sel("nearest")[:, :, steps - 1])
    s = rows & swap
    section["action_swap"] = {
        "starts": int(s.sum()),
        "pixel_error_own": _mean(m["pixel_own"][s]), "pixel_error_other": _mean(m["pixel_other"][s]),
        "pixel_ratio_own_over_other": _ratio(m["pixel_own"][s], m["pixel_other"][s]),
    }
    if probe:
        section["action_swap"].update({
            "eef_error_own_cm": _mean(m["eef_dream"][s]), "eef_error_other_cm": _mean(m["eef_other"][s]),
            "eef_ratio_own_over_other": _ratio(m["eef_dream"][s], m["eef_other"][s]),
            "real_divergence_cm": _mean(m["eef_divergence"][s]),
        })
        section["tracking"] = {
            part: {"dream_cm": _mean(sel(f"{part}_dream")), "nothing_moves_cm": _mean(sel(f"{part}_nothing")),
                   "probe_on_real_cm": _mean(sel(f"{part}_real"))} for part in ("eef", "objects")}
        section["tracking"]["steps"] = steps
    else:
        section["action_swap"]["eef"] = "skipped: no state probe given"
        section["tracking"] = "skipped: no state probe given (pass --probe, e.g. checkpoints/probe)"
    return section


def per_start_metrics(real: list[Real], dream: np.ndarray, perceptual: str, probe) -> dict[str, np.ndarray]:
    """Arrays over starts (S, ...) of every per-step number; ``dream`` is (S, R, steps, H, W, 3) uint8."""
    S, R, T = dream.shape[:3]
    own, other = ROLLOUTS.index("own"), ROLLOUTS.index("other")
    real_frames = np.stack([r.frames for r in real])  # (S, R, T + 1, H, W, 3)
    m = {"nearest": np.zeros((S, len(DIRECTIONS), T), dtype=int), "hits_change": np.zeros((S, len(DIRECTIONS), T)),
         "separation": np.zeros((S, len(AXES))), "gripper_separation": np.zeros(S)}
    for s in range(S):
        first = real_frames[s, own, 0]
        for t in range(T):
            d, r = dream[s, : len(DIRECTIONS), t], real_frames[s, : len(DIRECTIONS), t + 1]
            m["nearest"][s, :, t] = nearest_commands(d, r, first)
            m["hits_change"][s, :, t] = direction_hits(d, r, first, by_change=True)
        for i in range(len(AXES)):
            m["separation"][s, i] = separation_ratio(dream[s, 2 * i, -1], dream[s, 2 * i + 1, -1],
                                                     real_frames[s, 2 * i, -1], real_frames[s, 2 * i + 1, -1])
        o, c = ROLLOUTS.index("open"), ROLLOUTS.index("close")
        m["gripper_separation"][s] = separation_ratio(dream[s, c, -1], dream[s, o, -1],
                                                      real_frames[s, c, -1], real_frames[s, o, -1])
    m["hits"] = (m["nearest"] == np.arange(len(DIRECTIONS))[:, None]).astype(float)
    pred, target = to_float(dream).flatten(0, 2), to_float(real_frames[:, :, 1:]).flatten(0, 2)
    first = to_float(real_frames[:, :, :1]).expand(-1, -1, T, -1, -1, -1).flatten(0, 2)
    for k, v in frame_scores(pred, target, first, perceptual).items():
        m[k] = v.reshape(S, R, T)
    gap = lambda a, b: np.abs(a.astype(np.float64) - b).mean((-3, -2, -1)) / 255  # noqa: E731
    m["pixel_own"] = gap(dream[:, own], real_frames[:, own, 1:])
    m["pixel_other"] = gap(dream[:, other], real_frames[:, own, 1:])
    if probe is not None:
        m.update(probe_metrics(probe, real, dream))
    return m


def probe_metrics(probe, real: list[Real], dream: np.ndarray) -> dict[str, np.ndarray]:
    """End-effector and object errors (S, steps) in cm of the probe on dreams, on the first frame, on real frames."""
    own, other = ROLLOUTS.index("own"), ROLLOUTS.index("other")
    S, T = dream.shape[0], dream.shape[2]

    def read(frames: np.ndarray) -> dict[str, np.ndarray]:
        return probe.read_frames(to_float(frames.reshape(-1, *frames.shape[-3:])))

    out = {k: np.zeros((S, T)) for k in ("eef_dream", "eef_other", "eef_nothing", "eef_real", "eef_divergence",
                                            "objects_dream", "objects_nothing", "objects_real")}
    for s, r in enumerate(real):
        true_eef, true_obj = r.eef[own, 1:], r.objects[own, 1:]
        k = true_obj.shape[1]
        for name, frames in (("dream", dream[s, own]), ("other", dream[s, other]),
                             ("nothing", np.repeat(r.frames[own, :1], T, 0)), ("real", r.frames[own, 1:])):
            pred = read(frames)
            out[f"eef_{name}"][s] = position_error_cm(pred["eef_pos"], true_eef)
            if name != "other":
                out[f"objects_{name}"][s] = position_error_cm(pred["object_pos"][:, :k], true_obj)
        out["eef_divergence"][s] = position_error_cm(r.eef[other, 1:], true_eef)
    return out


def _json_safe(x):
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def evaluate_control(model_dir: Path, episodes: Path, out: Path, probe_dir: Path | None = None,
                     starts_per_source: int = 8, steps: int = 16, magnitude: float = 0.8,
                     sources: tuple[str, ...] = (), window: Window = MODEL_WINDOW, device: str = "cpu",
                     perceptual: str = "st-lpips", batch_size: int = 64, progress: bool = True,
                     command: str | None = None, guidance: float | None = None, tokenizer_only: bool = False,
                     passes: int | None = None, temperature: float = 0.0, real_cache: Path | None = None) -> dict:
    """Run the controllability report; write ``control.json``, ``control_per_step.png``, ``contact_sheet.png``.

    ``sources`` empty means every source with held-out episodes in ``episodes``; ``probe_dir`` None
    skips the probe-based numbers (tracking, and the action swap's end-effector error). ``guidance`` is
    the classifier-free guidance scale and ``passes`` the refinement passes per frame (None: the model's defaults,
    what the environment uses); ``window`` the SWR window ("model": the model's own, what the environment
    uses; None: no re-encoding); ``temperature`` 0 decodes greedily (the report's standard), above 0 samples
    (seeded per rollout). ``model_dir`` is a world-model folder, or a packed model folder holding one in
    ``world_model/``. ``tokenizer_only`` replaces the dream by the tokenizer's reconstruction of the real frames
    (:func:`reconstruct_all`): the ceiling that the model's tokenizer sets on every number. ``real_cache`` keeps
    robosuite's rollouts of each start for the next report (:func:`real_rollouts`; None: simulate every time).
    """
    if starts_per_source < 1:
        raise ValueError(f"starts_per_source must be >= 1, got {starts_per_source}")
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0 < magnitude <= 1:
        raise ValueError(f"magnitude must be in (0, 1] (the controller's action range), got {magnitude}")
    if not 0 <= temperature < float("inf"):
        raise ValueError(f"temperature must be a finite number >= 0 (0: greedy), got {temperature}")
    check_window(window)
    load_perceptual(perceptual)
    if (Path(model_dir) / "world_model").is_dir():  # a packed model folder (world_model/, student/, seeds/)
        model_dir = Path(model_dir) / "world_model"
    model = WorldModel.load(model_dir, device)
    guidance = model.transformer.config.resolve_guidance(guidance)
    passes = model.transformer.config.resolve_passes(passes)
    window = model.transformer.config.resolve_window(window)
    probe = load_probe(probe_dir, model.image_size) if probe_dir is not None else None
    starts = choose_starts(Path(episodes), tuple(sources), starts_per_source, steps, magnitude)
    real = real_rollouts(starts, model.image_size, real_cache, progress)
    own = ROLLOUTS.index("own")
    first = np.concatenate([np.repeat(r.frames[own : own + 1, 0], len(ROLLOUTS), 0) for r in real])
    actions = np.stack([s.actions[name] for s in starts for name in ROLLOUTS])
    if tokenizer_only:
        dream = reconstruct_all(model, np.concatenate([r.frames for r in real]), window, batch_size)
    else:
        dream = dream_all(model, first, actions, window, batch_size, progress, guidance, passes, temperature)
    dream = dream.reshape(len(starts), len(ROLLOUTS), *dream.shape[1:])
    m = per_start_metrics(real, dream, perceptual, probe)
    names = np.array([s.source for s in starts])
    swap = np.array([s.other_id is not None for s in starts])
    results = {
        "command": command,
        "settings": {"model": str(model_dir), "episodes": str(episodes), "probe": str(probe_dir) if probe_dir else None,
                     "starts_per_source": starts_per_source, "steps": steps, "magnitude": magnitude,
                     "sources": sorted(set(names)), "window": window,
                     "decoding": "tokenizer only" if tokenizer_only else "greedy" if temperature == 0 else
                     f"sampled at temperature {temperature}",
                     "guidance": guidance, "passes": passes,
                     "device": str(device),
                     "perceptual_metric": perceptual_name(perceptual), "motion_threshold": MOTION_THRESHOLD},
        "starts": [{"episode_id": s.episode_id, "source": s.source, "seed": s.seed, "other_episode_id": s.other_id,
                    "gripper_held": float(s.actions["+x"][0, 6]),
                    "restart_max_pixel_diff": _restart_diff(s.recorded_frames, r.frames[own])}
                   for s, r in zip(starts, real)],
        "overall": summarize(m, np.ones(len(starts), bool), steps, probe is not None, swap),
        "per_source": {src: summarize(m, names == src, steps, probe is not None, swap) for src in sorted(set(names))},
        "per_step": per_step(m, steps, probe is not None),
    }
    results["headline"] = headline(results)
    results = _json_safe(results)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "control.json", lambda f: f.write(json.dumps(results, indent=1)), mode="w")
    plot_per_step(results, out / "control_per_step.png")
    contact_sheet(starts, real, dream, out / "contact_sheet.png")
    return results


def headline(results: dict) -> dict:
    """The numbers to quote, from the overall and per-source sections."""
    o = results["overall"]
    f = o["frames"]
    out = {
        "direction_accuracy": o["direction"]["accuracy_last"],
        "direction_accuracy_per_source": {k: v["direction"]["accuracy_last"] for k, v in results["per_source"].items()},
        "direction_accuracy_by_change": o["direction"]["accuracy_by_change_last"],
        "separation_ratio_median": o["separation"]["ratio_median"],
        "gripper_separation_ratio_median": o["separation"]["gripper_ratio_median"],
        "swap_pixel_ratio_own_over_other": o["action_swap"]["pixel_ratio_own_over_other"],
        "psnr": {"dream": f["psnr_dream"], "nothing_moves": f["psnr_nothing_moves"]},
        "ssim": {"dream": f["ssim_dream"], "nothing_moves": f["ssim_nothing_moves"]},
        "moving_psnr": {"dream": f["moving_psnr_dream"], "nothing_moves": f["moving_psnr_nothing_moves"]},
    }
    if isinstance(o["tracking"], dict):
        out["swap_eef_ratio_own_over_other"] = o["action_swap"]["eef_ratio_own_over_other"]
        out["tracking_eef_cm"] = {k.removesuffix("_cm"): v for k, v in o["tracking"]["eef"].items()}
    return out


def load_probe(folder: Path, image_size: int):
    from roboalign_env.models.registry import load_scorer, scorer_kind

    if scorer_kind(folder) != "probe":
        raise ValueError(f"probe: {folder} is a {scorer_kind(folder)} checkpoint, not a state probe")
    probe = load_scorer(folder)
    if probe.config.image_size != image_size:
        raise ValueError(f"probe: {folder} reads {probe.config.image_size}px frames; "
                         f"the world model makes {image_size}px frames")
    return probe


def _restart_diff(recorded: np.ndarray, frames: np.ndarray) -> int | None:
    """Largest pixel difference between the recorded episode and its re-simulation (0: an exact restart)."""
    if recorded.shape != frames.shape:
        return None
    return int(np.abs(recorded.astype(np.int16) - frames).max())


def per_step(m: dict[str, np.ndarray], steps: int, probe: bool) -> dict[str, list]:
    """Every per-step curve, averaged over starts (and rollouts): the plot's data."""
    curves = {"step": list(range(1, steps + 1)),
              "direction_accuracy": m["hits"].mean((0, 1)).tolist(),
              "direction_accuracy_by_change": m["hits_change"].mean((0, 1)).tolist()}
    for k in sorted(m):
        if k.startswith(("psnr_", "ssim_", "lpips_", "moving_")):
            curves[k] = [_mean(m[k][:, :, t]) for t in range(steps)]
    if probe:
        for k in ("eef_dream", "eef_other", "eef_nothing", "eef_real",
                  "objects_dream", "objects_nothing", "objects_real"):
            curves[f"{k}_cm"] = m[k].mean(0).tolist()
    return curves


def plot_per_step(results: dict, png: Path) -> Path:
    from roboalign_env.eval.media import pyplot

    plt = pyplot()
    c = results["per_step"]
    x = c["step"]
    panels = [("direction accuracy", [("nearest frame", "direction_accuracy"),
                                      ("by direction of change", "direction_accuracy_by_change")]),
              ("PSNR (dB)", [("dream", "psnr_dream"), ("nothing moves", "psnr_nothing_moves")]),
              ("SSIM", [("dream", "ssim_dream"), ("nothing moves", "ssim_nothing_moves")]),
              (results["settings"]["perceptual_metric"], [("dream", "lpips_dream"),
                                                          ("nothing moves", "lpips_nothing_moves")]),
              ("moving-pixel PSNR (dB)", [("dream", "moving_psnr_dream"),
                                          ("nothing moves", "moving_psnr_nothing_moves")])]
    if "eef_dream_cm" in c:
        panels.append(("end-effector error (cm, probe)", [("dream, own actions", "eef_dream_cm"),
                                                          ("dream, other's actions", "eef_other_cm"),
                                                          ("nothing moves", "eef_nothing_cm"),
                                                          ("probe on real", "eef_real_cm")]))
    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for ax, (title, lines) in zip(axes.flat, panels):
        for label, key in lines:
            ax.plot(x, [math.nan if v is None else v for v in c[key]], marker=".", label=label,
                    ls=":" if "nothing" in key else "-")
        if title == "direction accuracy":
            ax.axhline(1 / len(DIRECTIONS), color="grey", ls=":", lw=1, label="chance")
            ax.set_ylim(0, 1.05)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    fig.suptitle("Does the dream follow the actions? (mean over held-out starts)")
    fig.tight_layout()
    return save_figure(fig, png)


def contact_sheet(starts: list[Start], real: list[Real], dream: np.ndarray, png: Path) -> Path:
    """For the first start of each source: a real and a dream row per rollout, at a few steps."""
    from roboalign_env.eval.media import pyplot

    plt = pyplot()
    steps = dream.shape[2]
    columns = sorted({round(t) for t in np.linspace(1, steps, min(SHEET_STEPS, steps))})
    firsts = {}
    for i, s in enumerate(starts):
        firsts.setdefault(s.source, i)
    shown = [name for name in ROLLOUTS if name != "other"]
    inch = 0.8  # per frame: about 64 pixels at the figure's 90 dpi
    size = (1.6 + inch * (len(columns) + 1), (inch * 2 * len(shown) + 0.5) * len(firsts))
    fig, axes = plt.subplots(len(firsts), 1, figsize=size, squeeze=False)
    for ax, (source, i) in zip(axes[:, 0], firsts.items()):
        rows, labels = [], []
        for name in shown:
            r = ROLLOUTS.index(name)
            rows.append([real[i].frames[r, 0]] + [real[i].frames[r, t] for t in columns])
            rows.append([real[i].frames[r, 0]] + [dream[i, r, t - 1] for t in columns])
            labels += [f"real {name}", f"dream {name}"]
        image = grid(rows)
        ax.imshow(image, interpolation="nearest")
        h = image.shape[0] / len(rows)
        ax.set_yticks([h * (j + 0.5) for j in range(len(rows))], labels, fontsize=7)
        w = image.shape[1] / (len(columns) + 1)
        ax.set_xticks([w * (j + 0.5) for j in range(len(columns) + 1)], ["start"] + [f"t={t}" for t in columns],
                      fontsize=7)
        ax.set_title(f"{source} ({starts[i].episode_id})", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png)
