"""RoboAlign-R1 post-training: GRPO of the world model against a reward on its own rollouts.

One step of the shared loop (:mod:`roboalign_env.training.loop`):

1. **Prompts.** ``prompts_per_step`` (first frame, action sequence, instruction) triples are drawn
   from the training episodes (a pure function of ``(seed, step)``, so a resumed run draws the same).
2. **Rollouts.** The current policy samples ``group_size`` (G) rollouts per prompt, ``horizon``
   frames each, with Sliding Window Re-encoding (window W) when the horizon exceeds W; every row
   has its own ``torch.Generator`` seeded from the step, and the sampler returns the log-probability
   of every sampled dynamics code (under the untruncated softmax(logits / T)).
3. **Reward.** ``reward="student"``: ``sum_k w_k * student_k / 10`` on the video (first frame +
   rollout) and the instruction, the student's six expected scores with weights ``weights``.
   ``reward="rlvr"`` (the RLVR-World-style verifiable baseline): ``-(MAE + LPIPS)`` of the rollout
   against the real frames, averaged over frames.
4. **Advantages.** Group-normalized: ``A_i = (r_i - mean_g(r)) / (std_g(r) + eps)`` over the G
   rollouts of the same prompt (unbiased std), the same for every token of a rollout.
5. **Objective** (per dynamics token t of rollout i, averaged over tokens, then over rollouts)::

       rho   = exp(log pi_theta - log pi_old)                      (pi_old: the sampler's log-probs)
       surr  = min(rho * A, clip(rho, 1 - eps, 1 + eps) * A)
       kl    = exp(log pi_ref - log pi_theta) - (log pi_ref - log pi_theta) - 1   (k3, unbiased, >= 0)
       loss  = -(surr - beta * kl)

   ``log pi_theta`` is recomputed with gradients by the teacher-forced transformer, one pass per SWR
   window with that window's context codes (:func:`rollout_log_probs`); ``pi_ref`` is the frozen
   SFT transformer. With one optimizer step per batch of rollouts the ratio starts at 1 up to
   numerics (bf16, the cached decode) and the clip bounds how far one step can push a token.
6. **Online iterative distillation** (``reward="student"``): every ``distill_every`` (K) updates,
   fresh rollouts of the current policy (and the real clips of the same prompts) are labelled by the
   teacher; before they are added, the student's agreement with the teacher on them is logged
   (``student_teacher_agreement``: the share of (rollout, dimension) pairs where the argmax levels
   agree); then the student is re-distilled on everything labelled so far for ``distill_steps`` steps.
   Each round is written to ``out/distill/round_XXX`` (the labelled videos as npz, the student as a
   checkpoint), so a resumed run restores the student and its data exactly.
"""

from __future__ import annotations

import copy
import json
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from roboalign_env.models.scoring import TOTAL
from roboalign_env.models.world_model import WorldModel
from roboalign_env.training.loop import LoopConfig, step_seed, train

RewardKind = Literal["student", "rlvr"]


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO settings (the loop's settings, learning rate and steps, live in :class:`LoopConfig`)."""

    reward: RewardKind = "student"
    """'student' (RoboAlign-R1: the distilled student's weighted six scores) or 'rlvr' (-(MAE + LPIPS) vs real frames)."""
    group_size: int = 8
    """G: rollouts per prompt; the advantage baseline is the group mean."""
    prompts_per_step: int = 2
    """Prompts per update (G x prompts rollouts, generated in one batch)."""
    horizon: int = 16
    """Frames per rollout."""
    window: int = 6
    """SWR window W in frames (context + W-1 generated)."""
    temperature: float = 1.0
    """Sampling temperature (the ratio and KL use softmax(logits / T))."""
    top_k: int | None = None
    """Top-k sampling (None: the full softmax, so the sampler is exactly the policy the ratio assumes)."""
    clip: float = 0.2
    """Clip range eps of the importance ratio."""
    beta: float = 0.04
    """Weight of the KL (k3 estimator) to the frozen SFT reference."""
    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    """w_k of the six student dimensions (IF, MS, AOC, TC, CR, PA); reward = sum_k w_k * score_k / 10."""
    rlvr_weight: float = 0.0
    """With reward='student', add this times the RLVR reward (a hybrid that also pays pixel fidelity
    against the real frames; 0 is the paper's student-only reward)."""
    distill_every: int = 20
    """K: re-distil the student every this many updates (0 turns online distillation off)."""
    distill_prompts: int = 16
    """Fresh prompts per distillation round: one policy rollout each, plus its real clip, teacher-labelled."""
    distill_steps: int = 30
    """Student optimizer steps per round (on every video labelled so far)."""
    distill_lr: float = 1e-4
    """Student learning rate during online distillation."""
    distill_batch: int = 32
    """Videos per student step."""
    adv_eps: float = 1e-4
    """Added to the group std before dividing."""


# --- the objective --------------------------------------------------------------------------------

def group_advantages(rewards: torch.Tensor, group_size: int, eps: float = 1e-4) -> torch.Tensor:
    """(N,) rewards of N = prompts x G rollouts (grouped contiguously) -> (N,) normalized advantages."""
    if rewards.ndim != 1 or len(rewards) % group_size:
        raise ValueError(f"rewards: expected (prompts * {group_size},), got {tuple(rewards.shape)}")
    r = rewards.float().view(-1, group_size)
    std = r.std(1, keepdim=True) if group_size > 1 else torch.zeros_like(r[:, :1])
    centered = r - r.mean(1, keepdim=True)
    # a group whose rollouts all score the same carries no signal: advantage 0 (never 0 / 0)
    return torch.where(std > 0, centered / (std + eps), torch.zeros_like(centered)).flatten()


def grpo_loss(log_probs: torch.Tensor, old_log_probs: torch.Tensor, ref_log_probs: torch.Tensor | None,
              advantages: torch.Tensor, clip: float = 0.2, beta: float = 0.04) -> tuple[torch.Tensor, dict]:
    """Clipped surrogate with k3 KL; log-probs (N, ...) per token, advantages (N,). Returns (loss, metrics)."""
    n = log_probs.shape[0]
    lp, old = log_probs.reshape(n, -1), old_log_probs.reshape(n, -1).to(log_probs.dtype)
    adv = advantages.reshape(n, 1).to(lp.dtype)
    ratio = torch.exp(lp - old)
    surr = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    if ref_log_probs is not None and beta:
        delta = ref_log_probs.reshape(n, -1).to(lp.dtype) - lp
        kl = torch.exp(delta) - delta - 1
    else:
        kl = torch.zeros_like(lp)
    per_token = surr - beta * kl
    loss = -per_token.mean(1).mean()
    with torch.no_grad():
        clipped = ((ratio - 1).abs() > clip).float().mean()
    return loss, {"kl": kl.detach().mean().item(), "clip_fraction": clipped.item(),
                  "ratio_mean": ratio.detach().mean().item(), "surrogate": surr.detach().mean().item()}


def rollout_log_probs(model: Callable, windows: list[tuple[int, torch.Tensor]], actions: torch.Tensor,
                      codes: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Teacher-forced log-probabilities (B, F, 16) of a rollout's codes, one pass per SWR window.

    ``model`` is the transformer (or its DDP wrapper): ``model(context_codes, actions, codes)`` gives
    logits. Window ``i`` starts at generated frame ``windows[i][0]`` with context ``windows[i][1]``.
    """
    t = temperature if temperature > 0 else 1.0
    bounds = [s for s, _ in windows] + [codes.shape[1]]
    out = []
    for (start, context), end in zip(windows, bounds[1:]):
        if end <= start:
            continue
        c = codes[:, start:end]
        logits = model(context, actions[:, start:end], c).float() / t
        out.append(logits.log_softmax(-1).gather(-1, c.unsqueeze(-1)).squeeze(-1))
    return torch.cat(out, 1)


# --- prompts ----------------------------------------------------------------------------------------

@dataclass
class Prompts:
    """Prompt pool: real frames (E, L+1, H, W, 3) uint8 and actions (E, L, 7) of episodes, the allowed
    start frames per episode, and instruction templates. A prompt is (episode, start, instruction)."""

    frames: np.ndarray
    actions: np.ndarray
    starts: list[np.ndarray]
    instructions: list[list[str]]
    episode_ids: list[str]
    horizon: int
    pool: np.ndarray = field(init=False)

    def __post_init__(self):
        self.pool = np.array([(e, s) for e, st in enumerate(self.starts) for s in st], np.int64).reshape(-1, 2)
        if not len(self.pool):
            raise ValueError("no prompts: every episode is shorter than the horizon")

    def __len__(self) -> int:
        return len(self.pool)

    def take(self, picks: np.ndarray, rng: np.random.Generator | None = None) -> dict:
        """Prompts ``pool[picks]``: first (P, 3, H, W) and real (P, F, 3, H, W) frames in [0, 1],
        actions (P, F, 7), instructions (a random template when ``rng`` is given, else the first)."""
        e, s = self.pool[picks, 0], self.pool[picks, 1]
        idx = s[:, None] + np.arange(self.horizon + 1)
        frames = torch.from_numpy(self.frames[e[:, None], idx]).permute(0, 1, 4, 2, 3).float() / 255
        actions = torch.from_numpy(self.actions[e[:, None], idx[:, :-1]]).float()
        texts = [self.instructions[i][int(rng.integers(len(self.instructions[i])))] if rng is not None
                 else self.instructions[i][0] for i in e]
        return {"first": frames[:, 0], "real": frames[:, 1:], "actions": actions, "instructions": texts,
                "episodes": [self.episode_ids[i] for i in e], "starts": s.tolist()}


def allowed_starts(num_steps: int, horizon: int, first_success: int | None) -> np.ndarray:
    """Start frames whose window of ``horizon`` steps contains the moment of first success (at an
    offset of 2..horizon-2), so the rollout must show the manipulation completing; every start when
    the episode never succeeds."""
    last = num_steps - horizon
    if last < 0:
        return np.zeros(0, np.int64)
    if first_success is None:
        return np.arange(0, last + 1)
    lo, hi = max(0, first_success - horizon + 2), min(last, max(0, first_success - 2))
    return np.arange(lo, max(lo, hi) + 1)


def load_prompts(episodes: str | Path, split: str, horizon: int, heldout_source: str = "pickplace_can_ur5e",
                 successful_only: bool = True, limit: int | None = None) -> Prompts:
    """Prompts from one bench split's episodes (``split_of`` with ``heldout_source`` held out).

    ``successful_only``: keep episodes whose real run succeeds. On a failure-mode episode a faithful
    model must show the failure, so a reward for manipulation success there pays for hallucination;
    on successful ones a higher score means the dream shows what the robot really did.
    """
    from roboalign_env.data.bench import split_of
    from roboalign_env.data.episodes import load_episode, read_manifest

    rows = [r for r in read_manifest(episodes) if split_of(r["episode_id"], r["source"], heldout_source) == split
            and (r.get("success") or not successful_only)]
    rows = sorted(rows, key=lambda r: r["episode_id"])[:limit]
    if not rows:
        raise ValueError(f"{episodes}: no {'successful ' if successful_only else ''}episodes in split {split!r}")
    frames, actions, starts, texts, ids = [], [], [], [], []
    for r in rows:
        ep = load_episode(Path(episodes) / r["path"])
        frames.append(ep.frames)
        actions.append(ep.actions)
        starts.append(allowed_starts(ep.num_steps, horizon, r.get("first_success_step")))
        texts.append(list(ep.meta.get("instruction_templates") or [ep.meta["instruction"]]))
        ids.append(ep.episode_id)
    return Prompts(np.stack(frames), np.stack(actions).astype(np.float32), starts, texts, ids, horizon)


# --- rewards ----------------------------------------------------------------------------------------

def student_reward(student, weights) -> Callable:
    """Reward = sum_k w_k * student_k / 10 on (first frame + rollout, instruction)."""
    w = torch.tensor(weights, dtype=torch.float32)
    if w.shape != (6,):
        raise ValueError(f"weights: expected 6 numbers (one per dimension), got {tuple(weights)}")

    def reward(frames, codes, prompt) -> torch.Tensor:
        video = torch.cat([prompt["first"][:, None], frames.float().cpu()], 1)
        expected = student().score(video, prompt["instructions"]).expected.float().cpu()
        return (expected * w).sum(-1) / TOTAL

    return reward


def rlvr_reward(frames, codes, prompt) -> torch.Tensor:
    """RLVR-World-style verifiable reward: -(MAE + LPIPS) against the real frames, mean over frames."""
    from roboalign_env.eval.metrics import perceptual

    pred, real = frames.float().cpu().clamp(0, 1), prompt["real"].float()
    mae = (pred - real).abs().mean(dim=(2, 3, 4))
    lp = perceptual(pred.flatten(0, 1), real.flatten(0, 1)).view(mae.shape)
    return -(mae + lp).mean(1)


def hybrid_reward(student: Callable, rlvr_weight: float) -> Callable:
    """The student reward plus ``rlvr_weight`` times :func:`rlvr_reward`."""

    def reward(frames, codes, prompt) -> torch.Tensor:
        return student(frames, codes, prompt) + rlvr_weight * rlvr_reward(frames, codes, prompt)

    return reward


# --- the trainer --------------------------------------------------------------------------------------

def _repeat(prompt: dict, g: int) -> dict:
    out = {}
    for k, v in prompt.items():
        out[k] = v.repeat_interleave(g, 0) if torch.is_tensor(v) else [x for x in v for _ in range(g)]
    return out


class GRPOTrainer:
    """Holds the policy, the frozen reference, the prompt pool, the reward and (optionally) the online
    distiller; supplies ``make_batch``/``compute_loss`` to :func:`~roboalign_env.training.loop.train`."""

    def __init__(self, cfg: GRPOConfig, loop: LoopConfig, world_model: WorldModel, prompts: Prompts,
                 reward: Callable, distiller=None, reference=None):
        self.cfg, self.loop, self.prompts, self.reward, self.distiller = cfg, loop, prompts, reward, distiller
        self.world_model = world_model
        self.reference = (reference or copy.deepcopy(world_model.transformer)).eval().requires_grad_(False)
        self.rounds_dir = Path(loop.out) / "distill"
        self._restored = False
        self.round_metrics: dict[str, float] = {}

    # rollouts ---------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, prompt: dict, seed: int) -> tuple:
        wm = self.world_model
        gens = [torch.Generator().manual_seed(seed + i) for i in range(len(prompt["first"]))]
        was = wm.transformer.training
        wm.transformer.eval()
        try:
            roll = wm.rollout(prompt["first"], prompt["actions"], window=self.cfg.window,
                              temperature=self.cfg.temperature, top_k=self.cfg.top_k, generators=gens)
        finally:
            wm.transformer.train(was)
        return roll

    def make_batch(self, step: int, rank: int) -> dict:
        cfg = self.cfg
        if self.distiller is not None and cfg.distill_every:
            if not self._restored:
                self._restore_rounds(step)
            if step % cfg.distill_every == 0:
                self._distill_round(step, rank)
        self._restored = True
        seed = step_seed(self.loop.seed, step, rank)
        rng = np.random.default_rng(seed)
        picks = rng.integers(0, len(self.prompts), cfg.prompts_per_step)
        prompt = _repeat(self.prompts.take(picks, rng), cfg.group_size)
        roll = self.sample(prompt, seed % 2**62)
        rewards = self.reward(roll.frames, roll.codes, prompt).float()
        adv = group_advantages(rewards, cfg.group_size, cfg.adv_eps)
        metrics = {"reward": rewards.mean().item(), "reward_std_in_group": rewards.view(-1, cfg.group_size).std(1).mean().item(),
                   **self.round_metrics}
        self.round_metrics = {}
        return {"contexts": [c for _, c in roll.windows], "starts": torch.tensor([s for s, _ in roll.windows]),
                "actions": prompt["actions"], "codes": roll.codes, "old_log_probs": roll.log_probs,
                "advantages": adv, "metrics": metrics}

    def compute_loss(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        windows = list(zip(batch["starts"].tolist(), batch["contexts"]))
        lp = rollout_log_probs(model, windows, batch["actions"], batch["codes"], self.cfg.temperature)
        ref = None
        if self.cfg.beta:
            self.reference.to(lp.device)
            with torch.no_grad():
                ref = rollout_log_probs(self.reference, windows, batch["actions"], batch["codes"], self.cfg.temperature)
        loss, metrics = grpo_loss(lp, batch["old_log_probs"], ref, batch["advantages"], self.cfg.clip, self.cfg.beta)
        return loss, {**batch["metrics"], **metrics}

    # online distillation ---------------------------------------------------------------------------
    def _round_dir(self, r: int) -> Path:
        return self.rounds_dir / f"round_{r:03d}"

    def _distill_round(self, step: int, rank: int) -> None:
        """Teacher-label fresh rollouts (and their real clips), log agreement, re-distil (step > 0)."""
        from roboalign_env.data.bench_cache import VideoSet
        from roboalign_env.data.io import atomic_savez
        from roboalign_env.training.judge import predict

        cfg, d = self.cfg, self.distiller
        r = step // cfg.distill_every
        folder = self._round_dir(r)
        shutil.rmtree(folder, ignore_errors=True)  # a round a killed run left behind is redone identically
        seed = step_seed(self.loop.seed + 7919, step, rank)
        rng = np.random.default_rng(seed)
        prompt = self.prompts.take(rng.integers(0, len(self.prompts), cfg.distill_prompts), rng)
        roll = self.sample(prompt, seed % 2**62)
        fake = torch.cat([prompt["first"][:, None], roll.frames.cpu()], 1)
        real = torch.cat([prompt["first"][:, None], prompt["real"]], 1)
        texts = prompt["instructions"] * 2
        videos = VideoSet.from_videos(torch.cat([fake, real]), texts)
        labels = predict(d.teacher, videos)["log_probs"]
        n = len(fake)
        student_pred = predict(d.student, videos, indices=np.arange(n))
        teacher_levels = np.stack([lp[:n].argmax(-1) for lp in labels], -1)
        teacher_agg = np.stack([(np.exp(lp[:n]) * np.arange(lp.shape[1])).sum(-1) for lp in labels], -1).sum(1) / TOTAL
        self.round_metrics = {
            "student_teacher_agreement": float((student_pred["argmax"] == teacher_levels).mean()),
            "student_minus_teacher_aggregate": float((student_pred["expected"].sum(1) / TOTAL - teacher_agg).mean()),
            "teacher_aggregate_on_rollouts": float(teacher_agg.mean()),
        }
        folder.mkdir(parents=True, exist_ok=True)
        atomic_savez(folder / "videos.npz", video=videos.video, length=videos.length,
                     instructions=np.array(texts), **{f"log_probs_{k}": lp for k, lp in enumerate(labels)})
        d.data.add(videos, labels)
        if step > 0:
            d.round = r
            shutil.rmtree(d.out / f"round_{r:03d}", ignore_errors=True)
            d.update(cfg.distill_steps, seed=r)
            d.student.eval()
        (folder / "done.json").write_text(json.dumps({"step": step, "videos": len(d.data), **self.round_metrics}))

    def _restore_rounds(self, start: int) -> None:
        """On resume at ``start``: re-add the labelled videos of rounds already run and load the
        student the last of them produced."""
        from roboalign_env.data.bench_cache import VideoSet

        d, k = self.distiller, self.cfg.distill_every
        last = None
        for r in range(0, (start + k - 1) // k):
            folder = self._round_dir(r)
            if not (folder / "done.json").is_file():
                raise FileNotFoundError(f"{folder}: distillation round {r} is missing; cannot resume at step {start}")
            with np.load(folder / "videos.npz", allow_pickle=False) as f:
                vs = VideoSet.from_videos([f["video"][i, : f["length"][i]] for i in range(len(f["length"]))],
                                          [str(t) for t in f["instructions"]])
                labels = [f[f"log_probs_{j}"] for j in range(6)]
            d.data.add(vs, labels)
            if r > 0:
                last = r
        if last is not None:
            from safetensors.torch import load_file

            weights = load_file(str(d.out / f"round_{last:03d}" / "model" / "model.safetensors"))
            d.student.load_state_dict(weights)
            d.student.eval()
            d.round = last + 1
        self._restored = True

    def train(self) -> torch.nn.Module:
        self.world_model.transformer.requires_grad_(True)
        out = Path(self.loop.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "grpo_config.json").write_text(json.dumps(asdict(self.cfg), indent=1))
        policy = train(self.loop, self.world_model.transformer, self.make_batch, self.compute_loss)
        self.world_model.transformer = policy.eval()
        return policy


def plot_grpo(metrics: str | Path, png: str | Path) -> Path | None:
    """The three curves a person checks: reward (and its 10-update mean), KL to the reference, and
    the student's agreement with the teacher on the policy's own fresh rollouts (with the teacher's
    aggregate on them); written next to the loop's all-metrics ``curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from roboalign_env.data.io import read_jsonl
    from roboalign_env.eval.media import save_figure

    rows = [r for r in read_jsonl(metrics) if r.get("split") == "train"] if Path(metrics).is_file() else []
    if not rows:
        return None
    step = np.array([r["step"] for r in rows])
    reward = np.array([r["reward"] for r in rows])
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.4))
    axes[0].plot(step, reward, lw=0.8, alpha=0.5, label="batch mean")
    if len(reward) >= 10:
        axes[0].plot(step[9:], np.convolve(reward, np.ones(10) / 10, "valid"), lw=2, label="10-update mean")
    axes[0].set_title("reward")
    axes[1].plot(step, [r["kl"] for r in rows])
    axes[1].set_title("KL to the SFT reference (k3, per token)")
    rounds = [r for r in rows if "student_teacher_agreement" in r]
    if rounds:
        x = [r["step"] for r in rounds]
        axes[2].plot(x, [r["student_teacher_agreement"] for r in rounds], "o-", label="student-teacher agreement")
        axes[2].plot(x, [r["teacher_aggregate_on_rollouts"] for r in rounds], "s--", label="teacher aggregate")
        axes[2].plot(x, [r["teacher_aggregate_on_rollouts"] + r["student_minus_teacher_aggregate"] for r in rounds],
                     "^:", label="student aggregate")
    axes[2].set_title("on the policy's fresh rollouts (before re-distilling)")
    for ax in axes:
        ax.set_xlabel("update")
        ax.legend(fontsize=7) if ax.get_legend_handles_labels()[0] else None
    fig.tight_layout()
    return save_figure(fig, png)


def post_train(cfg: GRPOConfig, loop: LoopConfig, world_model: str | Path, episodes: str | Path,
               student: str | Path | None = None, teacher: str | Path | None = None,
               heldout_source: str = "pickplace_can_ur5e", export_to: str | Path | None = None) -> WorldModel:
    """Load everything, run GRPO (resumable), write ``out/world_model`` (and ``export_to``)."""
    from roboalign_env.models.registry import load_scorer
    from roboalign_env.training.distill import OnlineDistiller

    model = WorldModel.load(world_model)
    prompts = load_prompts(episodes, "train", cfg.horizon, heldout_source)
    distiller = None
    if cfg.reward == "student":
        if student is None:
            raise ValueError("--student: the student reward checkpoint is needed for reward='student'")
        scorer = load_scorer(student)
        if cfg.distill_every:
            if teacher is None:
                raise ValueError("--teacher: online distillation needs the teacher judge (or --distill-every 0)")
            distiller = OnlineDistiller(scorer, load_scorer(teacher), Path(loop.out) / "student", lr=cfg.distill_lr,
                                        batch_size=cfg.distill_batch, mixed_precision=loop.mixed_precision)
            reward = student_reward(lambda: distiller.student, cfg.weights)
        else:
            reward = student_reward(lambda: scorer, cfg.weights)
        if cfg.rlvr_weight:
            reward = hybrid_reward(reward, cfg.rlvr_weight)
    elif cfg.reward == "rlvr":
        reward = rlvr_reward
    else:
        raise ValueError(f"reward {cfg.reward!r}; expected 'student' or 'rlvr'")
    trainer = GRPOTrainer(cfg, loop, model, prompts, reward, distiller)
    trainer.train()
    model = trainer.world_model
    plot_grpo(Path(loop.out) / "metrics.jsonl", Path(loop.out) / "grpo_curves.png")
    model.save(Path(loop.out) / "world_model")
    if export_to is not None:
        model.save(export_to, dtype=torch.bfloat16)
    return model
