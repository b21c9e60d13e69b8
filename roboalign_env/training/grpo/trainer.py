"""RoboAlign-R1 post-training: GRPO of the world model against a reward on its own rollouts.

One step of the shared loop (:mod:`roboalign_env.training.loop`):

1. **Prompts.** ``prompts_per_step`` (first frame, action sequence, instruction) triples are drawn
   from the training episodes (a pure function of ``(seed, step)``, so a resumed run draws the same).
2. **Rollouts.** The current policy samples ``group_size`` (G) rollouts per prompt, ``horizon``
   frames each, with Sliding Window Re-encoding (window W) when the horizon exceeds W; every row
   has its own ``torch.Generator`` seeded from the step, and the sampler returns the log-probability
   of every sampled dynamics code (under the untruncated softmax(logits / T)).
3. **Reward.** Picked by name from :data:`~.rewards.REWARDS`: ``"student"`` is
   ``sum_k w_k * student_k / 10`` on the video (first frame + rollout) and the instruction, the
   student's six expected scores with weights ``weights``; ``"rlvr"`` (the RLVR-World-style
   verifiable baseline) is ``-(MAE + perceptual)`` of the rollout against the real frames, averaged
   over frames; ``"hybrid"`` is ``student + rlvr_weight * rlvr``.
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
6. **Online iterative distillation** (rewards that read the student): every ``distill_every`` (K) updates,
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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Literal

import numpy as np
import torch

from roboalign_env.data.prompts import Prompts, load_prompts
from roboalign_env.data.splits import HELDOUT_SOURCE
from roboalign_env.models.transformer import MODEL_WINDOW, Window
from roboalign_env.models.world_model import WorldModel
from roboalign_env.rubric import aggregate, check_weights
from roboalign_env.training.grpo.objective import group_advantages, grpo_loss, rollout_log_probs
from roboalign_env.training.grpo.plots import plot_grpo
from roboalign_env.training.grpo.rewards import READS_STUDENT, build_reward
from roboalign_env.training.loop import LoopConfig, step_seed, train


@dataclass(frozen=True)
class GRPOConfig:
    """GRPO settings (the loop's settings, learning rate and steps, live in :class:`LoopConfig`)."""

    reward: Literal["student", "rlvr", "hybrid"] = "student"
    """A reward of ``rewards.REWARDS``: 'student' (RoboAlign-R1: the distilled student's weighted six
    scores), 'rlvr' (-(MAE + perceptual) vs the real frames) or 'hybrid' (student + rlvr_weight * rlvr)."""
    group_size: int = 8
    """G: rollouts per prompt; the advantage baseline is the group mean."""
    prompts_per_step: int = 2
    """Prompts per update (G x prompts rollouts, generated in one batch)."""
    horizon: int = 16
    """Frames per rollout."""
    window: Window = MODEL_WINDOW
    """SWR window W in frames (context + W-1 generated); "model": the world model's own (its config's
    ``swr_window``)."""
    temperature: float = 1.0
    """Sampling temperature (the ratio and KL use softmax(logits / T))."""
    top_k: int | None = None
    """Top-k sampling (None: the full softmax, so the sampler is exactly the policy the ratio assumes)."""
    guidance: float | None = None
    """Classifier-free guidance scale of the rollouts (None: the world model's default); the ratio
    and KL use the same guided distribution."""
    clip: float = 0.2
    """Clip range eps of the importance ratio."""
    beta: float = 0.04
    """Weight of the KL (k3 estimator) to the frozen SFT reference."""
    weights: tuple[float, ...] = (1.0, 1.0, 1.0, 1.0, 1.0, 1.0)
    """w_k of the six student dimensions (IF, MS, AOC, TC, CR, PA); reward = sum_k w_k * score_k / 10."""
    rlvr_weight: float = 0.0
    """Weight of the RLVR term of reward='hybrid' (which also pays pixel fidelity against the real frames)."""
    perceptual: Literal["st-lpips", "lpips"] = "st-lpips"
    """Perceptual distance of the RLVR term (see ``eval.metrics``; 'lpips' needs torchvision's AlexNet weights on disk)."""
    distill_every: int = 20
    """K: re-distil the student every this many updates (0 turns online distillation off; rewards that
    do not read the student never distil)."""
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

    def __post_init__(self):
        check_weights(self.weights, "weights")
        if self.rlvr_weight and self.reward != "hybrid":
            raise ValueError(f"rlvr_weight={self.rlvr_weight} applies only to reward='hybrid' (got reward={self.reward!r})")
        for name in ("group_size", "prompts_per_step", "horizon"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name}: expected >= 1, got {getattr(self, name)}")
        if not self.temperature >= 0:
            raise ValueError(f"temperature: expected >= 0, got {self.temperature}")
        if self.guidance is not None and not 0 <= self.guidance < float("inf"):
            raise ValueError(f"guidance: expected None or a finite number >= 0, got {self.guidance}")

    @property
    def distills(self) -> bool:
        """Whether the run re-distils the student online (its reward reads the student, K > 0)."""
        return self.reward in READS_STUDENT and self.distill_every > 0


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
        self.guidance = world_model.transformer.config.resolve_guidance(cfg.guidance)
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
                              temperature=self.cfg.temperature, top_k=self.cfg.top_k, generators=gens,
                              guidance=self.guidance)
        finally:
            wm.transformer.train(was)
        return roll

    def make_batch(self, step: int, rank: int) -> dict:
        cfg = self.cfg
        if self.distiller is not None and cfg.distills:
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
                "actions": prompt["actions"], "codes": roll.codes, "commits": roll.commits,
                "old_log_probs": roll.log_probs,
                "advantages": adv, "metrics": metrics}

    def compute_loss(self, model, batch: dict) -> tuple[torch.Tensor, dict]:
        windows = list(zip(batch["starts"].tolist(), batch["contexts"]))
        lp = rollout_log_probs(model, windows, batch["actions"], batch["codes"], self.cfg.temperature, self.guidance,
                               batch["commits"])
        ref = None
        if self.cfg.beta:
            self.reference.to(lp.device)
            with torch.no_grad():
                ref = rollout_log_probs(self.reference, windows, batch["actions"], batch["codes"], self.cfg.temperature,
                                        self.guidance, batch["commits"])
        loss, metrics = grpo_loss(lp, batch["old_log_probs"], ref, batch["advantages"], self.cfg.clip, self.cfg.beta)
        return loss, {**batch["metrics"], **metrics}

    # online distillation ---------------------------------------------------------------------------
    def _round_dir(self, r: int) -> Path:
        return self.rounds_dir / f"round_{r:03d}"

    def _distill_round(self, step: int, rank: int) -> None:
        """Teacher-label fresh rollouts (and their real clips), log agreement, re-distil (step > 0)."""
        from roboalign_env.data.bench_cache import VideoSet
        from roboalign_env.data.io import atomic_savez, atomic_write
        from roboalign_env.models.batch_scoring import predict

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
        labels = d.label(videos)
        n = len(fake)
        student_pred = predict(d.student, videos, indices=np.arange(n))
        teacher_levels = np.stack([lp[:n].argmax(-1) for lp in labels], -1)
        teacher_agg = aggregate(np.stack([(np.exp(lp[:n]) * np.arange(lp.shape[1])).sum(-1) for lp in labels], -1))
        self.round_metrics = {
            "student_teacher_agreement": float((student_pred["argmax"] == teacher_levels).mean()),
            "student_minus_teacher_aggregate": float((aggregate(student_pred["expected"]) - teacher_agg).mean()),
            "teacher_aggregate_on_rollouts": float(teacher_agg.mean()),
        }
        folder.mkdir(parents=True, exist_ok=True)
        atomic_savez(folder / "videos.npz", video=videos.video, length=videos.length,
                     instructions=np.array(texts), **{f"log_probs_{k}": lp for k, lp in enumerate(labels)})
        held = d.add(videos, labels)
        if step > 0:
            d.train(cfg.distill_steps, round=r, seed=r)
        done = json.dumps({"step": step, "videos": held, **self.round_metrics})
        atomic_write(folder / "done.json", lambda f: f.write(done), mode="w")

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
            d.add(vs, labels)
            if r > 0:
                last = r
        if last is not None:
            d.restore(last)
        self._restored = True

    def train(self) -> torch.nn.Module:
        self.world_model.transformer.requires_grad_(True)
        out = Path(self.loop.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "grpo_config.json").write_text(json.dumps(asdict(self.cfg), indent=1))
        policy = train(self.loop, self.world_model.transformer, self.make_batch, self.compute_loss)
        self.world_model.transformer = policy.eval()
        return policy


def post_train(cfg: GRPOConfig, loop: LoopConfig, world_model: str | Path, episodes: str | Path,
               student: str | Path | None = None, teacher: str | Path | None = None,
               heldout_source: str = HELDOUT_SOURCE, export_to: str | Path | None = None) -> WorldModel:
    """Load everything, run GRPO (resumable), write ``out/world_model`` (and ``export_to``)."""
    from roboalign_env.models.registry import load_scorer
    from roboalign_env.training.distill import OnlineDistiller

    model = WorldModel.load(world_model)
    prompts = load_prompts(episodes, "train", cfg.horizon, heldout_source)
    distiller, current_student = None, None
    if cfg.reward in READS_STUDENT:
        if student is None:
            raise ValueError(f"--student: the student reward checkpoint is needed for reward={cfg.reward!r}")
        scorer = load_scorer(student)
        current_student = lambda: scorer  # noqa: E731
        if cfg.distills:
            if teacher is None:
                raise ValueError("--teacher: online distillation needs the teacher judge (or --distill-every 0)")
            distiller = OnlineDistiller(scorer, load_scorer(teacher), Path(loop.out) / "student", lr=cfg.distill_lr,
                                        batch_size=cfg.distill_batch, mixed_precision=loop.mixed_precision)
            current_student = lambda: distiller.student  # noqa: E731
    trainer = GRPOTrainer(cfg, loop, model, prompts, build_reward(cfg, current_student), distiller)
    trainer.train()
    model = trainer.world_model
    plot_grpo(Path(loop.out) / "metrics.jsonl", Path(loop.out) / "grpo_curves.png")
    model.save(Path(loop.out) / "world_model")
    if export_to is not None:
        model.save(export_to, dtype=torch.bfloat16)
    return model
