"""Real robosuite vs the dream: the same start and the same actions, frame by frame.

For every chosen seed clip (held-out episodes shipped with the model) the real simulator starts
the clip's robosuite episode and a policy acts in it: the source's scripted policy, an SB3 policy
saved as weights (:mod:`roboalign_env.envs.policies`; it sees the real observations), or uniform
random actions. The dream starts from the same
first frame and instruction and is fed the same actions, all episodes in one batch. Reported per
step: PSNR, SSIM and LPIPS of dream against real frames, and the student's scores of both.

Writes ``results.json``, ``compare.png`` (metrics and student aggregate against the step) and
``side_by_side.mp4`` (one column per episode: real on top, dream below).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from roboalign_env.data.io import atomic_write
from roboalign_env.envs.core import DreamCore, DreamSettings
from roboalign_env.envs.policies import SB3_ALGORITHMS, load_policy, load_sb3_zip
from roboalign_env.eval.media import grid, save_figure, upscale, write_mp4
from roboalign_env.eval.metrics import frame_metrics, perceptual_name
from roboalign_env.rubric import DIMENSIONS, aggregate
from roboalign_env.sim.sources import ALL_SOURCES, SOURCES

METRICS = ("psnr", "ssim", "lpips")


def load_model(policy: str, trust_pickle: bool = False):
    """The model behind a saved ``policy`` (``predict(obs, deterministic=True)``), None for 'scripted' /
    'random'. Refused as :func:`check_policy` refuses; a weights folder is loaded in full, so a corrupt
    file fails here, before any rollout."""
    checked = check_policy(policy, trust_pickle)
    if checked is None:
        return None
    algorithm, path = checked
    if path.suffix == ".zip":
        return load_sb3_zip(path, algorithm)
    model = load_policy(path)
    if algorithm is not None and model.algorithm != algorithm:
        raise ValueError(f"policy={policy!r}: {path / 'policy.json'} holds a {model.algorithm} policy, "
                         f"not {algorithm}")
    return model


def make_policy(policy: str, model, source: str, rng: np.random.Generator):
    """``policy(obs, info) -> action``: ``scripted``, ``random``, or ``model`` (from :func:`load_model`)."""
    if policy == "scripted":

        scripted = SOURCES[source].policy("nominal", rng)
        return lambda obs, info: scripted(info["robosuite_obs"])
    if policy == "random":
        return lambda obs, info: rng.uniform(-1, 1, 7).astype(np.float32)
    return lambda obs, info: model.predict(obs, deterministic=True)[0]


def check_policy(policy: str, trust_pickle: bool = False) -> tuple[str | None, Path] | None:
    """None for 'scripted' / 'random'; (algorithm, path) for a saved policy: a weights folder from
    :func:`~roboalign_env.envs.policies.save_policy` as PATH or ALGO:PATH (algorithm None when not
    named), or, only with ``trust_pickle``, an SB3 model as ALGO:PATH.zip (a bare PATH.zip means PPO).
    Anything else is refused with a ``ValueError``."""
    if policy in ("scripted", "random"):
        return None
    algorithm, _, path = policy.rpartition(":") if ":" in policy else (None, "", policy)
    algorithm, path = algorithm and algorithm.lower(), Path(path)
    expected = (f"expected 'scripted', 'random', a saved policy folder (holding policy.json and policy.safetensors) "
                f"as PATH or ALGO:PATH, or with --trust-sb3-zip an SB3 model as ALGO:PATH.zip; "
                f"ALGO one of {', '.join(SB3_ALGORITHMS)}")
    if algorithm is not None and algorithm not in SB3_ALGORITHMS:
        raise ValueError(f"policy={policy!r}: unknown algorithm {algorithm!r}; {expected}")
    if path.suffix == ".zip":
        if not trust_pickle:
            raise ValueError(f"policy={policy!r}: an SB3 .zip is a pickle, and loading it can execute arbitrary "
                             f"code. Pass --trust-sb3-zip (trust_pickle=True) only for a file you trust, or convert "
                             f"it once with roboalign_env.envs.policies.save_policy(ALGO.load(PATH), FOLDER) and "
                             f"pass --policy FOLDER")
        if not path.is_file():
            raise ValueError(f"policy={policy!r}: no such SB3 model file {path}; {expected}")
        return algorithm or "ppo", path
    if not (path / "policy.json").is_file():
        raise ValueError(f"policy={policy!r}: {path} is not a saved policy folder; {expected}")
    return algorithm, path


def run_real(source: str, clips: list[int], seeds, steps: int, policy: str, model, seed: int, student: str | None,
             device: str) -> list[dict]:
    """Run ``policy`` (``model`` from :func:`load_model`) in robosuite from each seed clip's episode, seen
    through the camera the clips were recorded with; frames, actions and student scores."""
    from roboalign_env.envs.real import RoboAlignRealEnv

    env = RoboAlignRealEnv(source, student=student, device=device, terminate_on_success=False, camera=seeds.camera)
    runs = []
    try:
        for k, index in enumerate(clips):
            meta = seeds.meta[index]
            rng = np.random.default_rng([seed, index])
            act = make_policy(policy, model, source, rng)
            obs, info = env.reset(seed=seed + k, options={"episode_seed": meta["seed"], "instruction": meta["instructions"][0]})
            frames, actions, scores, success = [obs["image"]], [], [list(info["scores"].values())], []
            for _ in range(steps):
                action = np.asarray(act(obs, info), dtype=np.float32)
                obs, _, _, _, info = env.step(action)
                frames.append(obs["image"])
                actions.append(action)
                scores.append(list(info["scores"].values()))
                success.append(info["success"])
            runs.append({"index": int(index), "source": source, "episode_seed": meta["seed"],
                         "instruction": meta["instructions"][0], "frames": np.stack(frames),
                         "actions": np.stack(actions), "scores": np.array(scores), "success": success})
    finally:
        env.close()
    return runs


def run_dream(runs: list[dict], settings: DreamSettings) -> tuple[np.ndarray, np.ndarray, dict]:
    """Feed every real run's first frame, instruction and actions to the dream, in one batch; return its
    frames, the student's scores and the decoding it used (the model's defaults resolved)."""
    core = DreamCore(len(runs), settings)
    options = [{"frame": r["frames"][0], "instruction": r["instruction"], "source": r["source"]} for r in runs]
    infos = core.reset_rows(range(len(runs)), [np.random.default_rng(i) for i in range(len(runs))], options)
    frames, scores = [core.frames.copy()], [[list(i["scores"].values()) for i in infos]]
    actions = np.stack([r["actions"] for r in runs])
    for t in range(actions.shape[1]):
        _, _, infos = core.step(actions[:, t], np.zeros(len(runs), bool))
        frames.append(core.frames.copy())
        scores.append([list(i["scores"].values()) for i in infos])
    dream = core.dream
    decoding = {"checkpoint": settings.checkpoint or "the package's default", "window": dream.window,
                "temperature": settings.temperature, "guidance": dream.guidance, "passes": dream.passes,
                "precision": settings.precision}
    return np.stack(frames, 1), np.array(scores).transpose(1, 0, 2), decoding


def compare(out: Path, sources: tuple[str, ...], episodes_per_source: int, steps: int, policy: str,
            settings: DreamSettings, seed: int = 0, command: str = "", perceptual: str = "st-lpips",
            trust_pickle: bool = False) -> dict:
    """``trust_pickle`` allows ``policy`` ALGO:PATH.zip, an SB3 model that is unpickled (it can run code)."""
    from roboalign_env.device import resolve_device
    from roboalign_env.envs.seeds import SeedClips
    from roboalign_env.eval.metrics import load_perceptual

    unknown = sorted(set(sources) - set(ALL_SOURCES))
    if unknown:
        raise ValueError(f"unknown source(s) {unknown}; expected some of {list(ALL_SOURCES)}")
    model = load_model(policy, trust_pickle)  # check_policy, then a full load: a bad policy fails before any rollout
    load_perceptual(perceptual)
    tic = time.perf_counter()
    seeds = SeedClips.load(settings.folders()[2])
    held = {source: seeds.of_source(source) for source in sources}
    short = {source: len(clips) for source, clips in held.items() if len(clips) < episodes_per_source}
    if short:
        raise ValueError(f"episodes_per_source {episodes_per_source}: the model's seed clips hold only {short} "
                         "held-out starts of these sources; ask for at most that many")
    runs = []
    for source in sources:
        clips = list(held[source][:episodes_per_source])
        runs += run_real(source, clips, seeds, steps, policy, model, seed, settings.student,
                         resolve_device(settings.device))
    real_seconds = time.perf_counter() - tic
    dream_frames, dream_scores, decoding = run_dream(runs, settings)
    dream_seconds = time.perf_counter() - tic - real_seconds
    real_frames = np.stack([r["frames"] for r in runs])
    real_scores = np.stack([r["scores"] for r in runs])
    to_t = lambda x: torch.from_numpy(x[:, 1:]).flatten(0, 1).float().div(255)  # noqa: E731  (predicted frames only)
    metrics = {k: v.view(len(runs), steps).numpy() for k, v in frame_metrics(to_t(dream_frames), to_t(real_frames), metric=perceptual).items()}
    results = {
        "command": command,
        "policy": policy, "steps": steps, "sources": list(sources), "episodes": len(runs), "dream": decoding,
        "camera": seeds.camera,
        "perceptual_metric": perceptual_name(perceptual),
        "mean": {m: float(metrics[m].mean()) for m in METRICS},
        "per_step": {m: metrics[m].mean(0).round(4).tolist() for m in METRICS},
        "per_source": {s: {m: float(metrics[m][[r["source"] == s for r in runs]].mean()) for m in METRICS} for s in sources},
        "student": {
            "real_aggregate_per_step": aggregate(real_scores).mean(0).round(4).tolist(),
            "dream_aggregate_per_step": aggregate(dream_scores).mean(0).round(4).tolist(),
            "real_final": dict(zip(DIMENSIONS, real_scores[:, -1].mean(0).round(4).tolist())),
            "dream_final": dict(zip(DIMENSIONS, dream_scores[:, -1].mean(0).round(4).tolist())),
        },
        "real_success_rate": float(np.mean([any(r["success"]) for r in runs])),
        "episodes_detail": [{k: r[k] for k in ("source", "index", "episode_seed", "instruction")} for r in runs],
        "seconds": {"real": round(real_seconds, 1), "dream": round(dream_seconds, 1)},
    }
    out.mkdir(parents=True, exist_ok=True)
    atomic_write(out / "results.json", lambda f: f.write(json.dumps(results, indent=1)), mode="w")
    plot(results, out / "compare.png")
    hwc = lambda x: x.transpose(0, 1, 3, 4, 2)  # noqa: E731
    real_hwc, dream_hwc = hwc(real_frames), hwc(dream_frames)
    video = np.stack([grid([list(real_hwc[:, t]), list(dream_hwc[:, t])]) for t in range(steps + 1)])  # top: real
    write_mp4(out / "side_by_side.mp4", upscale(video, 2), fps=4)
    return results


def plot(results: dict, png: Path) -> Path:
    from roboalign_env.eval.media import pyplot

    plt = pyplot()

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.4))
    steps = range(1, results["steps"] + 1)
    for ax, metric in zip(axes, METRICS):
        ax.plot(steps, results["per_step"][metric])
        ax.set_title(f"{results['perceptual_metric'] if metric == 'lpips' else metric.upper()}: dream vs real")
        ax.set_xlabel("step")
    student = results["student"]
    axes[3].plot(range(results["steps"] + 1), student["real_aggregate_per_step"], label="real")
    axes[3].plot(range(results["steps"] + 1), student["dream_aggregate_per_step"], label="dream")
    axes[3].set_title("student aggregate (0-1)")
    axes[3].set_xlabel("step")
    axes[3].legend()
    fig.suptitle(f"{results['policy']} policy, {results['episodes']} episodes", fontsize=9)
    fig.tight_layout()
    return save_figure(fig, png)
