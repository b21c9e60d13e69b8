"""Hardening the student reward against an adversary in the dream (the paper's online iterative
distillation, driven by a planner instead of a policy).

Each round, the cross-entropy adversary (:mod:`roboalign_env.eval.adversary`) searches, from the real
first frames of training episodes, the actions whose dream the *current* student pays most
Manipulation Success. Every candidate the search dreams, not only the best, is scored by the teacher
and joins the distillation data (the bench's train split and the extra clips, as in
:func:`~roboalign_env.training.distill.distill_from_bench`); the student then continues distilling on
all of it, and the next round attacks the updated student. The teacher, never the attacked reward,
labels what the attack finds, so the student learns what the teacher pays for those dreams.

Only episodes of the teacher's train split are attacked: a fresh attack on other splits
(``add-dream-pairs --adversary --splits test``, labelled by robosuite) measures the result.

When the teacher changes (retrained on a wider bench), the attacks an earlier run found are still
dreams that fooled a student: ``reuse_attacks`` puts them back into the data, relabelled by the new
teacher, before the first new round.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Sequence

import numpy as np
from tqdm import tqdm

from roboalign_env.data.bench_cache import VideoSet
from roboalign_env.data.episodes import load_episode
from roboalign_env.data.paths import folders
from roboalign_env.data.io import atomic_savez
from roboalign_env.eval.adversary import SearchConfig, manipulation_success, search_actions
from roboalign_env.eval.dream_pairs import choose_episodes
from roboalign_env.models.batch_scoring import cached_predict, predict
from roboalign_env.models.transformer import MODEL_WINDOW
from roboalign_env.models.world_model import WorldModel
from roboalign_env.rubric import DIMENSIONS
from roboalign_env.training.distill import OnlineDistiller, teacher_data

MS = DIMENSIONS.index("manipulation_success")


@dataclass(frozen=True)
class HardenConfig:
    """Rounds of attack-then-distil."""

    rounds: int = 2
    """Attack-and-distil rounds; each attacks the student the previous round left."""
    per_source: int = 4
    """Training episodes attacked per source and round (other episodes each round)."""
    steps: int = 16
    """Dreamed steps per attack (the env's reward reads the first frame and 16 more)."""
    temperature: float = 1.0
    """Sampling temperature of the dream (1: the environment's default)."""
    distill_steps: int = 400
    """Distillation steps per round, continuing from the current student on all the data so far."""
    attack_weight: float = 4.0
    """How much more often an attack clip is drawn for distillation than a bench or extra clip."""
    lr: float = 3e-4
    """Learning rate of each round's distillation."""
    batch_size: int = 64
    """Videos per distillation step."""
    search: SearchConfig = SearchConfig()
    """The adversary's search (each candidate of each round of it joins the data)."""

    def __post_init__(self):
        if self.rounds < 1 or self.per_source < 1 or self.distill_steps < 1:
            raise ValueError(f"rounds={self.rounds}, per_source={self.per_source}, distill_steps={self.distill_steps}: "
                             "expected each >= 1")
        if not self.attack_weight > 0:
            raise ValueError(f"attack_weight={self.attack_weight}: expected > 0")
        if not 7 <= self.steps <= 31:
            raise ValueError(f"steps={self.steps}: expected 7..31 (a bench video holds 8 to 32 frames)")


def attack(model: WorldModel, objective, episodes: list[dict], collection: Path, config: HardenConfig, seed: int,
           progress: bool = True) -> dict[str, np.ndarray]:
    """Search each episode's first frame for what ``objective`` pays; every candidate dreamed, as arrays:
    ``video`` (N, steps + 1, H, W, 3) uint8, ``actions`` (N, steps, 7), ``instruction``, ``episode_id``,
    ``score`` (the objective's), ``best`` (True for each search's best candidate)."""
    window = model.transformer.config.resolve_window(MODEL_WINDOW)
    seen: dict[str, list] = {k: [] for k in ("video", "actions", "instruction", "episode_id", "score", "best")}
    for i, entry in enumerate(tqdm(episodes, desc="attack", unit="episode", disable=not progress)):
        ep = load_episode(collection / entry["path"])
        instruction = ep.meta["instruction"]
        start = len(seen["score"])

        def watch(videos, actions, scores, ep_id=ep.episode_id, instruction=instruction):
            seen["video"] += list(videos)
            seen["actions"] += list(actions)
            seen["score"] += list(scores)
            seen["instruction"] += [instruction] * len(videos)
            seen["episode_id"] += [ep_id] * len(videos)

        search_actions(model, ep.frames[0], instruction, objective, config.steps, window, config.temperature,
                       seed * 100_003 + i, config.search, watch=watch)
        best = np.zeros(len(seen["score"]) - start, bool)
        best[int(np.argmax(seen["score"][start:]))] = True
        seen["best"] += list(best)
    return {k: np.stack(v) if k in ("video", "actions") else np.asarray(v) for k, v in seen.items()}


def earlier_attacks(run: str | Path, out: str | Path) -> list[Path]:
    """The attack files of an earlier ``harden_student`` run folder, checked before anything is written."""
    run = Path(run)
    if run.resolve() == Path(out).resolve():
        raise ValueError(f"reuse_attacks={run}: that is this run's own folder; expected an earlier run")
    found = sorted(run.glob("attack_[0-9][0-9][0-9].npz"))
    if not found:
        raise ValueError(f"reuse_attacks={run}: no attack_XXX.npz there; expected the folder of an earlier "
                         "harden-student run")
    return found


def attack_videos(path: Path) -> VideoSet:
    """The dreamed clips of an attack file, with their instructions and actions."""
    with np.load(path, allow_pickle=False) as f:
        return VideoSet.from_videos(list(f["video"]), [str(t) for t in f["instruction"]], actions=list(f["actions"]))


def harden_student(student: str | Path, teacher: str | Path, world_model: str | Path, bench: str | Path,
                   collection: str | Path | Sequence[str | Path], out: str | Path, config: HardenConfig = HardenConfig(),
                   extra_clips: int = 12000, targets: str | Path = "runs/teacher_targets", seed: int = 0,
                   device: str = "cpu", progress: bool = True, reuse_attacks: str | Path | None = None):
    """Run ``config.rounds`` rounds of attack-then-distil on the student in ``student``; returns the last
    round's student. Extra clips are cut from every collection in ``collection``; attacks start from episodes
    of the first. Resumable: a round's attack is kept in ``out/attack_XXX.npz`` and its student in
    ``out/round_XXX/model``; a rerun picks up where a killed one stopped. Each round's outcome is a line
    of ``out/rounds.jsonl``, and the final student is copied to ``out/model``. ``reuse_attacks``: an earlier
    run folder whose ``attack_XXX.npz`` clips join the data from the start, labelled by this teacher (kept in
    ``out/reused_XXX.npz``).
    """
    from roboalign_env.data.bench import trained_view
    from roboalign_env.models.registry import load_scorer
    from roboalign_env.models.student import StudentReward

    out = Path(out)
    collections = folders(collection)
    attacked = collections[0]
    earlier = earlier_attacks(reuse_attacks, out) if reuse_attacks is not None else []
    teacher_model = load_scorer(teacher).to(device).eval()
    current = StudentReward.from_pretrained(student).float()
    if trained_view(current) != trained_view(teacher_model):
        raise ValueError(f"{student} was distilled on the bench view {trained_view(current)!r}, the teacher {teacher} "
                         f"was trained on {trained_view(teacher_model)!r}; expected the same")
    data, _ = teacher_data(teacher_model, bench, collections, extra_clips, seed, targets)
    online = OnlineDistiller(current, teacher_model, out, data, lr=config.lr, batch_size=config.batch_size)
    for k, path in enumerate(earlier):
        videos = attack_videos(path)
        online.add(videos, cached_predict(teacher_model, videos, out / f"reused_{k:03d}.npz", progress)["log_probs"],
                   config.attack_weight)
    model = WorldModel.load(Path(world_model), device)
    log = out / "rounds.jsonl"
    done = {json.loads(line)["round"] for line in log.read_text().splitlines()} if log.is_file() else set()
    for r in range(config.rounds):
        path = out / f"attack_{r:03d}.npz"
        if not path.is_file():
            episodes = [e for e, _ in choose_episodes(attacked, Path(bench), config.per_source, seed * 1_000 + r,
                                                      splits=("train",), heldout_source=trained_view(teacher_model))]
            found = attack(model, manipulation_success(online.student.eval()), episodes, attacked, config,
                           seed * 1_000 + r, progress)
            videos = VideoSet.from_videos(list(found["video"]), list(found["instruction"]), actions=list(found["actions"]))
            found.update({f"teacher_{k}": lp for k, lp in enumerate(predict(teacher_model, videos)["log_probs"])})
            atomic_savez(path, **found)
        with np.load(path, allow_pickle=False) as f:
            found = {k: f[k] for k in f.files}
        videos = attack_videos(path)
        labels = [found[f"teacher_{k}"] for k in range(len(DIMENSIONS))]
        online.add(videos, labels, config.attack_weight)
        if r in done:  # its line is written once its student is saved
            online.restore(r)
            continue
        online.train(config.distill_steps, round=r, seed=seed * 1_000 + r)
        teacher_ms = (np.exp(labels[MS]) * np.arange(labels[MS].shape[1])).sum(1)
        best = found["best"]
        row = {"round": r, "episodes": int(best.sum()), "clips": int(len(best)), "held": len(online.data),
               "reused_attacks": [str(p) for p in earlier],
               "student_ms_best": round(float(found["score"][best].mean()), 4),
               "teacher_ms_best": round(float(teacher_ms[best].mean()), 4),
               "student_ms_all": round(float(found["score"].mean()), 4),
               "teacher_ms_all": round(float(teacher_ms.mean()), 4), "config": asdict(config)}
        with open(log, "a") as f:
            f.write(json.dumps(row) + "\n")
        print(json.dumps({k: v for k, v in row.items() if k != "config"}))
    final = out / f"round_{config.rounds - 1:03d}" / "model"
    shutil.rmtree(out / "model", ignore_errors=True)
    shutil.copytree(final, out / "model")
    return online.student
