"""GRPO post-training: advantages, the clipped objective, KL, one real step, online distillation, resume."""

import json
import math

import numpy as np
import pytest
import torch
from conftest import TINY_TOKENIZER, TINY_TRANSFORMER
from safetensors.torch import load_file

from roboalign_env.data.prompts import Prompts, allowed_starts
from roboalign_env.models.student import StudentReward, StudentRewardConfig
from roboalign_env.models.tokenizer import TokenizerConfig, VideoTokenizer
from roboalign_env.models.transformer import DynamicsTransformer, DynamicsTransformerConfig
from roboalign_env.models.world_model import WorldModel
from roboalign_env.training.distill import OnlineDistiller
from roboalign_env.training.grpo.objective import group_advantages, grpo_loss, rollout_log_probs
from roboalign_env.training.grpo.rewards import student_reward
from roboalign_env.training.grpo.trainer import GRPOConfig, GRPOTrainer
from roboalign_env.training.loop import LoopConfig

TINY_STUDENT = dict(widths=(8, 16, 16), video_dim=32, text_dim=32, text_layers=1, text_ffn=64)


def tiny_world_model(seed: int = 0, **options) -> WorldModel:
    torch.manual_seed(seed)
    tok = VideoTokenizer(TokenizerConfig(**TINY_TOKENIZER))
    tf = DynamicsTransformer(DynamicsTransformerConfig(**TINY_TRANSFORMER, **options))
    if options:  # give the zero-initialized action parts an effect
        with torch.no_grad():
            tf.code_action_proj.weight.normal_(std=0.5)
            tf.null_codes.normal_(std=0.5)
            if tf.config.parallel_frames:
                tf.start_codes.normal_(std=0.5)
            if tf.config.anchor_frames:
                tf.anchor_action_proj.weight.normal_(std=0.5)
                tf.anchor_steps.normal_(std=0.5)
            if tf.config.refinable:  # code embeddings are small (std 0.02): scale their projection up
                tf.reveal_proj.weight.normal_(std=20.0)
                tf.reveal_proj.bias.normal_(std=0.5)
    return WorldModel(tok, tf).eval()


def tiny_prompts(horizon: int = 5, episodes: int = 2, steps: int = 8) -> Prompts:
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (episodes, steps + 1, 64, 64, 3), dtype=np.uint8)
    actions = rng.uniform(-1, 1, (episodes, steps, 7)).astype(np.float32)
    starts = [allowed_starts(steps, horizon, None) for _ in range(episodes)]
    texts = [["lift the red cube", "pick up the red cube"], ["open the door"]][:episodes]
    return Prompts(frames, actions, starts, texts, [f"ep{i}" for i in range(episodes)], horizon)


def prefers_code_zero(frames, codes, prompt):
    """Toy reward: the share of sampled dynamics codes equal to 0."""
    return (codes == 0).float().mean(dim=(1, 2))


def loop_cfg(out, steps, **kw):
    return LoopConfig(out=out, steps=steps, lr=kw.pop("lr", 1e-3), warmup_steps=1, min_lr_ratio=1.0, log_every=1,
                      save_every=kw.pop("save_every", steps), progress=False, **kw)


# --- objective on hand-computed numbers ---------------------------------------------------------------

def test_group_advantages_are_normalized_within_each_group():
    adv = group_advantages(torch.tensor([1.0, 2.0, 3.0, 5.0, 5.0, 5.0]), group_size=3, eps=0.0)
    # group 1: mean 2, unbiased std 1 -> (-1, 0, 1); group 2: all equal -> 0 (no signal, no NaN)
    assert torch.allclose(adv[:3], torch.tensor([-1.0, 0.0, 1.0]))
    assert torch.isfinite(adv).all() and torch.equal(adv[3:], torch.zeros(3))
    adv = group_advantages(torch.tensor([0.0, 4.0]), group_size=2, eps=1e-4)  # std = 2*sqrt(2)
    assert torch.allclose(adv, torch.tensor([-2.0, 2.0]) / (2 * math.sqrt(2) + 1e-4))
    with pytest.raises(ValueError, match="prompts"):
        group_advantages(torch.ones(5), group_size=2)


def test_clipped_objective_and_its_gradient_on_hand_computed_numbers():
    old = torch.zeros(2, 2)
    lp = torch.log(torch.tensor([[1.5, 0.5], [1.5, 0.5]])).requires_grad_(True)
    adv = torch.tensor([1.0, -1.0])
    loss, m = grpo_loss(lp, old, None, adv, clip=0.2, beta=0.0)
    # row 0 (A=+1): min(1.5, 1.2)=1.2, min(0.5, 0.8)=0.5 -> 0.85; row 1 (A=-1): min(-1.5, -1.2)=-1.5,
    # min(-0.5, -0.8)=-0.8 -> -1.15; loss = -(0.85 - 1.15) / 2 = 0.15
    assert loss.item() == pytest.approx(0.15, abs=1e-6)
    assert m["clip_fraction"] == 1.0
    loss.backward()
    # clipped terms carry no gradient; the others d/dlp (rho * A) = rho * A, times -1/(2 rows * 2 tokens)
    assert torch.allclose(lp.grad, torch.tensor([[0.0, -0.125], [0.375, 0.0]]), atol=1e-6)
    # inside the clip range the objective is the plain ratio-weighted advantage
    loss, m = grpo_loss(torch.log(torch.tensor([[1.1]])), torch.zeros(1, 1), None, torch.tensor([2.0]), 0.2, 0.0)
    assert loss.item() == pytest.approx(-2.2, abs=1e-6) and m["clip_fraction"] == 0.0


def test_kl_term_is_k3_on_hand_computed_numbers():
    lp = torch.zeros(1, 1)
    ref = torch.log(torch.tensor([[2.0]]))
    _, m = grpo_loss(lp, lp, ref, torch.zeros(1), clip=0.2, beta=0.5)
    assert m["kl"] == pytest.approx(2.0 - math.log(2.0) - 1.0, abs=1e-6)
    loss, _ = grpo_loss(lp, lp, ref, torch.zeros(1), clip=0.2, beta=0.5)
    assert loss.item() == pytest.approx(0.5 * (1.0 - math.log(2.0)), abs=1e-6)


# --- the model side -----------------------------------------------------------------------------------

@pytest.mark.parametrize("temperature, guidance, frames",
                         [(1.0, 1.0, "one by one"), (0.7, 1.0, "one by one"), (1.0, 2.5, "one by one"),
                          (1.0, 2.5, "parallel"), (1.0, 2.5, "markov"), (1.0, 2.5, "refined"),
                          (1.0, 2.5, "anchor")])
def test_recomputed_log_probs_equal_the_samplers_across_swr_windows(temperature, guidance, frames):
    """Codes one by one, a frame's codes together predicted by their FSQ digits (digit_head),
    together from the previous frame alone (markov_frames), or in refinement passes (each code's
    log-probability that of the pass that committed it), or from the window's first frame and the actions
    since (anchor_frames: the sums of actions restart with each window)."""
    options = dict(action_to_codes=True, action_dropout=0.1, parallel_frames=frames != "one by one",
                   digit_head=frames == "parallel", code_levels=[5, 5, 3],
                   markov_frames=frames in ("markov", "refined", "anchor"), anchor_frames=frames == "anchor",
                   refine_passes=3 if frames == "refined" else 1) if guidance != 1 else {}
    wm = tiny_world_model(**options)
    prompt = tiny_prompts(horizon=7).take(np.array([0, 1]))
    gens = [torch.Generator().manual_seed(i) for i in range(2)]
    roll = wm.rollout(prompt["first"], prompt["actions"], window=3, temperature=temperature, generators=gens,
                      guidance=guidance)
    assert len(roll.windows) == 4  # 7 frames, 2 generated per window
    with torch.no_grad():
        lp = rollout_log_probs(wm.transformer, roll.windows, prompt["actions"], roll.codes, temperature, guidance,
                               roll.commits)
    assert lp.shape == roll.log_probs.shape
    torch.testing.assert_close(lp, roll.log_probs, atol=1e-4, rtol=0)
    if frames == "refined":  # codes were committed over all three passes; read in one pass they differ
        assert set(roll.commits.unique().tolist()) == {0, 1, 2}
        with torch.no_grad():
            one_pass = rollout_log_probs(wm.transformer, roll.windows, prompt["actions"], roll.codes, temperature,
                                         guidance)
        assert (one_pass - roll.log_probs).abs().max() > 1e-3
    # with the first window's context for every frame, frames past the first window differ
    with torch.no_grad():
        wrong = rollout_log_probs(wm.transformer, roll.windows[:1], prompt["actions"], roll.codes, temperature, guidance)
    assert (wrong[:, 2:] - roll.log_probs[:, 2:]).abs().max() > 1e-3
    if guidance != 1:  # the guided distribution is not the plain conditional one
        with torch.no_grad():
            plain = rollout_log_probs(wm.transformer, roll.windows, prompt["actions"], roll.codes, temperature)
        assert (plain - roll.log_probs).abs().max() > 1e-3


def test_kl_is_zero_when_the_policy_equals_the_reference_and_grows_after_a_change(tmp_path):
    wm = tiny_world_model()
    cfg = GRPOConfig(group_size=2, prompts_per_step=2, horizon=5, window=3, distill_every=0)
    trainer = GRPOTrainer(cfg, loop_cfg(tmp_path, 1), wm, tiny_prompts(), prefers_code_zero)
    batch = trainer.make_batch(0, 0)
    _, m = trainer.compute_loss(wm.transformer, batch)
    assert m["kl"] == 0.0
    with torch.no_grad():
        for p in wm.transformer.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    _, m = trainer.compute_loss(wm.transformer, batch)
    assert m["kl"] > 1e-4


def _code_zero_probability(wm: WorldModel, batch) -> float:
    with torch.no_grad():
        windows = list(zip(batch["starts"].tolist(), batch["contexts"]))
        probs = []
        for (s, ctx), e in zip(windows, [w[0] for w in windows[1:]] + [batch["codes"].shape[1]]):
            logits = wm.transformer(ctx, batch["actions"][:, s:e], batch["codes"][:, s:e])
            probs.append(logits.softmax(-1)[..., 0].flatten())
    return torch.cat(probs).mean().item()


def test_one_grpo_step_changes_the_weights_and_raises_a_toy_reward(tmp_path):
    wm = tiny_world_model()
    cfg = GRPOConfig(group_size=16, prompts_per_step=4, horizon=4, window=3, distill_every=0, beta=0.0)
    trainer = GRPOTrainer(cfg, loop_cfg(tmp_path, 1, lr=1e-2), wm, tiny_prompts(horizon=4), prefers_code_zero)
    probe_batch = trainer.make_batch(99, 0)  # rollouts the step never trains on
    before_p = _code_zero_probability(wm, probe_batch)
    before = {k: v.clone() for k, v in wm.transformer.state_dict().items()}
    trainer.train()
    changed = [k for k, v in wm.transformer.state_dict().items() if not torch.equal(v, before[k])]
    assert changed
    # the expected toy reward is the mean probability of code 0 at every sampled position
    after_p = _code_zero_probability(wm, probe_batch)
    assert after_p > 1.1 * before_p
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert {"reward", "kl", "clip_fraction"} <= rows[0].keys()


# --- online distillation and resume ----------------------------------------------------------------------

def _trainer(out, steps, distill_every=2, save_every=None):
    wm = tiny_world_model()
    torch.manual_seed(5)
    student = StudentReward(StudentRewardConfig(**TINY_STUDENT)).eval()
    torch.manual_seed(6)
    teacher = StudentReward(StudentRewardConfig(**TINY_STUDENT)).eval()
    distiller = OnlineDistiller(student, teacher, out / "student", batch_size=8)
    cfg = GRPOConfig(group_size=2, prompts_per_step=2, horizon=4, window=3, distill_every=distill_every,
                     distill_prompts=3, distill_steps=2)
    loop = loop_cfg(out, steps, save_every=save_every or steps)
    return GRPOTrainer(cfg, loop, wm, tiny_prompts(horizon=4), student_reward(lambda: distiller.student, cfg.weights),
                       distiller)


def test_online_redistillation_runs_every_k_updates(tmp_path):
    trainer = _trainer(tmp_path, steps=5, distill_every=2)
    start = {k: v.clone() for k, v in trainer.distiller.student.state_dict().items()}
    trainer.train()
    # rounds at updates 0 (label only), 2 and 4 (label + re-distil)
    assert sorted(p.name for p in (tmp_path / "distill").iterdir()) == ["round_000", "round_001", "round_002"]
    assert sorted(p.name for p in (tmp_path / "student").iterdir()) == ["round_001", "round_002"]
    assert len(trainer.distiller.data) == 3 * 2 * 3  # three rounds of 3 rollouts + 3 real clips
    rows = [json.loads(r) for r in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows if "student_teacher_agreement" in r] == [1, 3, 5]
    assert any(not torch.equal(v, start[k]) for k, v in trainer.distiller.student.state_dict().items())


def test_resume_after_a_kill_equals_an_uninterrupted_run_bit_for_bit(tmp_path):
    # K=2, saves at updates 4 and 6, killed during update 6 (index 5): the re-run restores the
    # student re-distilled at update 2 and its labelled videos, and redoes nothing else but 5 and 6.
    full = _trainer(tmp_path / "full", steps=6, save_every=4)
    full.train()
    cut = _trainer(tmp_path / "cut", steps=6, save_every=4)
    make = cut.make_batch

    def dies_at_5(step, rank):
        if step == 5:
            raise KeyboardInterrupt
        return make(step, rank)

    cut.make_batch = dies_at_5
    with pytest.raises(KeyboardInterrupt):
        cut.train()
    again = _trainer(tmp_path / "cut", steps=6, save_every=4)  # a fresh process: new objects, same folder
    again.train()
    assert len(again.distiller.data) == len(full.distiller.data) == 3 * 6
    for name in ("model/model.safetensors", "student/round_002/model/model.safetensors"):
        a, b = load_file(str(tmp_path / "full" / name)), load_file(str(tmp_path / "cut" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), name
    strip = lambda rows: [{k: v for k, v in r.items() if k != "sec"} for r in rows]  # noqa: E731
    rows = [strip(json.loads(r) for r in (tmp_path / d / "metrics.jsonl").read_text().splitlines()) for d in ("full", "cut")]
    assert rows[0] == rows[1]
    sa, sb = full.distiller.student.state_dict(), again.distiller.student.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_allowed_starts_contain_the_moment_of_success():
    starts = allowed_starts(64, 16, 30)
    assert starts.min() == 16 and starts.max() == 28
    assert all(s + 2 <= 30 <= s + 14 for s in starts)
    assert list(allowed_starts(64, 16, None)) == list(range(49))
    assert len(allowed_starts(10, 16, None)) == 0


def test_hybrid_reward_adds_the_weighted_rlvr_term():
    """reward 'hybrid': the student reward plus lambda * -(MAE + LPIPS) of the rollout vs the real frames;
    a rollout equal to the real frames gets exactly the student's reward."""
    from roboalign_env.training.grpo.rewards import rlvr_reward as make_rlvr
    from roboalign_env.training.grpo.rewards import weighted_sum

    rlvr_reward = make_rlvr()

    g = torch.Generator().manual_seed(0)
    prompt = {"real": torch.rand(2, 3, 3, 64, 64, generator=g)}
    frames = torch.rand(2, 3, 3, 64, 64, generator=g)
    student = prefers_code_zero
    codes = torch.tensor([[[0, 1]], [[0, 0]]])
    hybrid = weighted_sum(student, rlvr_reward, 0.5)
    expected = student(frames, codes, prompt) + 0.5 * rlvr_reward(frames, codes, prompt)
    torch.testing.assert_close(hybrid(frames, codes, prompt), expected)
    assert (rlvr_reward(frames, codes, prompt) < -0.1).all()  # random frames are far from the real ones
    torch.testing.assert_close(hybrid(prompt["real"], codes, prompt), student(prompt["real"], codes, prompt), atol=1e-6, rtol=0)
