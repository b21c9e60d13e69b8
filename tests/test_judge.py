"""Teacher judge and student reward: shapes, ranges, input errors, checkpoints, distillation."""

import numpy as np
import pytest
import torch

from roboalign_env.data.bench_cache import VideoSet
from roboalign_env.data.videos import prepare_videos
from roboalign_env.eval.judge_metrics import agreement, confusion_matrices
from roboalign_env.models.batch_scoring import predict
from roboalign_env.models.judge import RoboAlignJudge, RoboAlignJudgeConfig, pad_actions
from roboalign_env.models.registry import load_scorer
from roboalign_env.models.scoring import FrameEncoder, PatchFrameEncoder
from roboalign_env.models.student import StudentReward, StudentRewardConfig, distill_loss
from roboalign_env.rubric import DIMENSIONS, MAX_SCORES
from roboalign_env.training.distill import DistillData, OnlineDistiller, distill
from roboalign_env.training.judge import ActionTwins, fit_judge
from roboalign_env.training.loop import LoopConfig

TINY_TEACHER = dict(widths=(8, 16, 16, 16), dim=32, layers=1, heads=2, ffn=64, text_encoder="trained")
TINY_STUDENT = dict(widths=(8, 16, 16), video_dim=32, text_dim=32, text_layers=1, text_ffn=64)


@pytest.fixture(scope="module")
def teacher():
    torch.manual_seed(0)
    return RoboAlignJudge(RoboAlignJudgeConfig(**TINY_TEACHER)).eval()


@pytest.fixture(scope="module")
def student():
    torch.manual_seed(0)
    return StudentReward(StudentRewardConfig(**TINY_STUDENT)).eval()


def random_videos(n=3, lengths=(12, 9, 16), seed=0):
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (lengths[i % len(lengths)], 64, 64, 3), dtype=np.uint8) for i in range(n)]


@pytest.mark.parametrize("which", ["teacher", "student"])
def test_scores_have_the_paper_ranges(which, request):
    model = request.getfixturevalue(which)
    scores = model.score(random_videos(), ["lift the red cube", "open the door", "put the can in the bin"])
    assert [lg.shape for lg in scores.logits] == [(3, top + 1) for top in MAX_SCORES]
    for p in scores.probs:
        torch.testing.assert_close(p.sum(-1), torch.ones(3))
    expected = scores.expected
    assert expected.shape == (3, 6)
    assert (expected >= 0).all() and (expected <= torch.tensor(MAX_SCORES, dtype=torch.float32)).all()
    assert (scores.argmax <= torch.tensor(MAX_SCORES)).all()
    assert ((scores.aggregate >= 0) & (scores.aggregate <= 1)).all()
    torch.testing.assert_close(scores.aggregate, expected.sum(-1) / 10)
    row = scores.as_dicts()[0]
    assert set(row["scores"]) == set(DIMENSIONS) and 0 <= row["aggregate"] <= 1


def test_uint8_channel_last_and_float_channel_first_score_alike(student):
    video = random_videos(1, (16,))[0]
    as_float = torch.from_numpy(video).permute(0, 3, 1, 2)[None].float() / 255
    a = student.score(video, "lift the red cube").expected
    b = student.score(as_float, ["lift the red cube"]).expected
    torch.testing.assert_close(a, b)


def test_uint8_frames_convert_straight_to_the_scoring_dtype():
    videos = random_videos(2, (10, 16))
    full, mask = prepare_videos(videos)
    half, half_mask = prepare_videos(videos, dtype=torch.bfloat16)
    assert full.dtype == torch.float32 and half.dtype == torch.bfloat16 and torch.equal(mask, half_mask)
    assert mask.sum(1).tolist() == [10, 16]
    torch.testing.assert_close(full[0, :10], torch.from_numpy(videos[0]).permute(0, 3, 1, 2).float() / 255)
    torch.testing.assert_close(half.float(), full.to(torch.bfloat16).float())  # one rounding, as a cast of the float32 frames
    assert full.permute(0, 1, 3, 4, 2).is_contiguous()  # channel-last memory: no transposing copy was made


@pytest.mark.parametrize("patch, widths", [(8, (16, 24)), (4, (8, 16, 16))])
def test_patch_encoder_sequence_tokens_equal_the_plain_way(patch, widths):
    """The patch encoder runs each frame through its first convolution once and adds the previous
    frame's part; values and gradients must equal concatenating [e, 2 (e - e_prev)] per frame."""
    torch.manual_seed(0)
    encoder = PatchFrameEncoder(widths, 32, 64, patch)
    video, initial = torch.rand(2, 5, 3, 64, 64), torch.rand(2, 3, 64, 64)
    embedded = encoder.embed(video.flatten(0, 1)).unflatten(0, (2, 5))
    torch.testing.assert_close(embedded.flatten(0, 1), encoder.patch(video.flatten(0, 1) * 2 - 1), atol=1e-5, rtol=1e-5)
    fast = encoder.sequence_tokens(encoder.embed(initial), embedded)
    plain = FrameEncoder.sequence_tokens(encoder, encoder.embed(initial), embedded)
    assert fast.shape == (2, 6, 32)
    torch.testing.assert_close(fast, plain, atol=1e-5, rtol=1e-4)
    grads = [torch.autograd.grad(out.square().sum(), encoder.cnn[0].weight)[0] for out in (fast, plain)]
    torch.testing.assert_close(*grads, atol=1e-4, rtol=1e-4)


def test_pad_actions_pads_and_masks_each_clip():
    actions, mask = pad_actions([np.ones((3, 7)), np.zeros((0, 7)), np.full((5, 7), 2.0)])
    assert actions.shape == (3, 5, 7) and mask.sum(1).tolist() == [3, 0, 5]
    assert actions[0, :3].eq(1).all() and actions[0, 3:].eq(0).all() and actions[2].eq(2).all()
    nothing, none_given = pad_actions([np.zeros((0, 7))])
    assert nothing.shape == (1, 1, 7) and not none_given.any()


def test_scoring_under_bf16_autocast_stays_close_to_float32(teacher, student):
    videos = random_videos(2, (10, 16))
    for model in (teacher, student):
        exact = model.score(videos, ["lift the red cube", "open the door"]).expected
        with torch.autocast("cpu", dtype=torch.bfloat16):
            fast = model.score(videos, ["lift the red cube", "open the door"]).expected
        torch.testing.assert_close(fast, exact, atol=0.05, rtol=0)


def test_padding_does_not_change_a_video_s_scores(teacher):
    videos = random_videos(2, (10, 16))
    alone = teacher.score(videos[:1], ["lift the red cube"]).expected
    batched = teacher.score(videos, ["lift the red cube", "open the door"]).expected[:1]
    torch.testing.assert_close(alone, batched, atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("which", ["teacher", "student"])
@pytest.mark.parametrize("video, instruction, words", [
    (np.zeros((0, 64, 64, 3), np.uint8), "lift the red cube", "empty"),
    (np.zeros((8, 32, 32, 3), np.uint8), "lift the red cube", "64x64"),
    (np.zeros((8, 64, 64), np.uint8), "lift the red cube", "shape"),
    (np.zeros((8, 64, 64, 3), np.int32), "lift the red cube", "dtype"),
    (np.zeros((8, 64, 64, 3), np.uint8), "", "instruction"),
    (np.zeros((8, 64, 64, 3), np.uint8), None, "instruction"),
    (np.zeros((2, 8, 64, 64, 3), np.uint8), ["only one"], "instruction"),
])
def test_bad_input_gets_a_clear_error(which, video, instruction, words, request):
    model = request.getfixturevalue(which)
    with pytest.raises(ValueError, match=words):
        model.score(video, instruction)


def test_checkpoint_round_trip(teacher, student, tmp_path):
    videos = random_videos()
    texts = ["lift the red cube"] * 3
    for name, model in (("t", teacher), ("s", student)):
        model.save_pretrained(tmp_path / name)
        loaded = load_scorer(tmp_path / name)
        assert type(loaded) is type(model)
        torch.testing.assert_close(loaded.score(videos, texts).expected, model.score(videos, texts).expected)
    with pytest.raises(FileNotFoundError, match="config.json"):
        load_scorer(tmp_path / "missing")


def test_student_stored_in_half_precision_loads_back_in_float32(student, tmp_path):
    import copy

    copy.deepcopy(student).half().save_pretrained(tmp_path / "s16")
    loaded = load_scorer(tmp_path / "s16")
    assert next(loaded.parameters()).dtype == torch.float32
    videos = random_videos()
    diff = (loaded.score(videos, "open the door").expected - student.score(videos, "open the door").expected).abs().max()
    assert diff < 0.02


def _labelled_set(teacher, n=24):
    videos = random_videos(n, (8, 12, 16), seed=1)
    texts = ["lift the red cube", "open the door", "stack the red cube on the green cube"]
    data = DistillData()
    data.label(teacher, VideoSet.from_videos(videos, [texts[i % 3] for i in range(n)]))
    return data


def test_distillation_batches_draw_each_set_by_its_size_and_weight(student):
    from roboalign_env.models.batch_scoring import TextMemo

    data = DistillData()
    for mark, weight in ((0.0, 1.0), (-1.0, 3.0)):  # equal sizes; the second set drawn three times as often
        videos = VideoSet.from_videos(random_videos(6, (8,), seed=int(-mark)), ["lift the red cube"] * 6)
        data.add(videos, [np.full((6, top + 1), mark, np.float32) for top in MAX_SCORES], weight)
    batch = data.batch(np.random.default_rng(0), 2000, TextMemo(student))
    share = (batch["teacher"][0][:, 0] == -1.0).float().mean().item()
    assert batch["video"].shape[0] == 2000 and abs(share - 0.75) < 0.04
    with pytest.raises(ValueError, match="weight"):
        data.add(videos, [np.zeros((6, top + 1), np.float32) for top in MAX_SCORES], 0.0)


@pytest.mark.parametrize("loss", ["kl", "huber"])
def test_distillation_loss_falls(teacher, loss, tmp_path):
    torch.manual_seed(1)
    student = StudentReward(StudentRewardConfig(**TINY_STUDENT))
    data = _labelled_set(teacher)
    distill(student, data, LoopConfig(out=tmp_path, steps=100, lr=3e-3, warmup_steps=5, log_every=5, progress=False),
            loss=loss, batch_size=16)
    import json

    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:2])


def test_augmented_distillation_jitters_the_students_clips_against_the_teachers_outputs_on_the_clips_as_they_are(
        teacher, tmp_path, monkeypatch):
    import json

    import roboalign_env.training.distill as distill_module

    jitter, seen = distill_module.augment_batch, []

    def spy(batch, rng):
        out = jitter(batch, rng)
        seen.append((batch, out))
        return out

    monkeypatch.setattr(distill_module, "augment_batch", spy)
    torch.manual_seed(1)
    student = StudentReward(StudentRewardConfig(**TINY_STUDENT))
    distill(student, _labelled_set(teacher), LoopConfig(out=tmp_path, steps=60, lr=3e-3, warmup_steps=5, log_every=5,
                                                        progress=False), batch_size=16, augment=True)
    assert len(seen) >= 60
    batch, out = seen[0]
    assert out["video"].shape == batch["video"].shape and not torch.equal(out["video"], batch["video"])
    assert all(torch.equal(a, b) for a, b in zip(out["teacher"], batch["teacher"]))
    assert torch.equal(out["text"], batch["text"]) and torch.equal(out["actions"], batch["actions"])
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-3:]) < 0.75 * np.mean(losses[:2])  # noise videos: jitter changes what the teacher saw


def test_distill_losses_are_zero_when_student_matches_teacher(teacher):
    from roboalign_env.models.scoring import Scores

    logits = [torch.randn(5, top + 1) for top in MAX_SCORES]
    log_probs = [torch.log_softmax(lg, -1) for lg in logits]
    for kind in ("kl", "huber"):
        assert distill_loss(Scores(logits), log_probs, kind).abs() < 1e-5
        assert distill_loss(Scores([-lg for lg in logits]), log_probs, kind) > 1e-3
    with pytest.raises(ValueError, match="expected one of"):
        distill_loss(Scores(logits), log_probs, "mse")


def test_online_distiller_adds_teacher_labelled_videos_and_continues(teacher, tmp_path):
    torch.manual_seed(2)
    student = StudentReward(StudentRewardConfig(**TINY_STUDENT))
    student.save_pretrained(tmp_path / "start")
    online = OnlineDistiller(tmp_path / "start", teacher, tmp_path / "online", data=_labelled_set(teacher), batch_size=8)
    before = [p.detach().clone() for p in online.student.parameters()]
    generated = torch.rand(4, 10, 3, 64, 64)  # what a world model decodes: float, channel-first
    assert online.add(VideoSet.from_videos(generated, "lift the red cube")) == 24 + 4
    online.train(steps=5)
    assert (tmp_path / "online" / "round_000" / "model" / "model.safetensors").is_file()
    assert any((a != b).any() for a, b in zip(before, online.student.parameters()))
    online.train(steps=5)
    assert online.round == 2 and (tmp_path / "online" / "round_001" / "model").is_dir()


def test_judge_training_loss_falls(tmp_path):
    import json

    torch.manual_seed(3)
    videos = VideoSet.from_videos(random_videos(16, (8, 12), seed=4), ["lift the red cube", "open the door"] * 8)
    videos.labels = np.random.default_rng(5).integers(0, 2, (16, 6))
    loop = LoopConfig(out=tmp_path, steps=40, lr=3e-3, warmup_steps=5, log_every=5, progress=False)
    fit_judge(RoboAlignJudge(RoboAlignJudgeConfig(**TINY_TEACHER)), videos, loop, batch_size=8)
    losses = [json.loads(line)["loss"] for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2])


def _twin_set():
    """Six clips of two sources with their own actions (clip 3 commands what clip 0 does) and a wrong-action pair."""
    rng = np.random.default_rng(6)
    actions = [rng.normal(0, 1, (9, 7)).astype(np.float32) for _ in range(7)]
    actions[3] = actions[0] + 0.01
    sources = ["lift_panda"] * 4 + ["door_kinova3"] * 2 + ["lift_panda"]
    rows = [{"instruction": "lift the red cube", "source": s, "provenance": {"family": "clean", "kind": "full"}}
            for s in sources]
    rows[6]["provenance"] = {"family": "actions", "kind": "other_episode"}
    videos = VideoSet.from_videos(random_videos(7, (10,), seed=7), [r["instruction"] for r in rows], rows, actions=actions)
    videos.labels = np.zeros((7, 6), int)
    videos.labels[:6, DIMENSIONS.index("action_outcome_consistency")] = 1
    return videos


def test_action_twins_take_another_clip_s_actions_of_the_same_source_and_label_aoc_by_the_oracle_s_rule():
    videos = _twin_set()
    own = np.array([r["provenance"]["family"] != "actions" for r in videos.rows])
    clips, donors, differ = ActionTwins(videos, own).draw(np.random.default_rng(0), 300)
    assert set(clips) == set(donors) == {0, 1, 2, 3, 4, 5} and (clips != donors).all()
    assert all(videos.rows[i]["source"] == videos.rows[j]["source"] for i, j in zip(clips, donors))
    same_command = {frozenset(p) for p in zip(clips, donors)} & {frozenset((0, 3))}
    assert same_command and all(d == (frozenset((i, j)) != frozenset((0, 3))) for i, j, d in zip(clips, donors, differ))
    with pytest.raises(ValueError, match="share a length"):
        ActionTwins(videos, np.arange(7) == 0)


def test_judge_training_shows_each_action_twin_beside_its_clip(tmp_path, monkeypatch):
    import roboalign_env.training.judge as judge_module

    jitter, seen = judge_module.augment_batch, []
    monkeypatch.setattr(judge_module, "augment_batch", lambda batch, rng: seen.append(batch) or jitter(batch, rng))
    videos = _twin_set()
    aoc = DIMENSIONS.index("action_outcome_consistency")
    loop = LoopConfig(out=tmp_path, steps=12, lr=3e-3, warmup_steps=2, log_every=4, progress=False)
    model = fit_judge(RoboAlignJudge(RoboAlignJudgeConfig(**TINY_TEACHER)), videos, loop, batch_size=8, augment=True,
                      swap_actions=0.25)
    assert len(seen) >= 12

    def which(actions):  # the clip whose actions these are
        return next(j for j in range(len(videos)) if np.array_equal(videos.actions[j], actions.numpy()))

    for batch in seen:
        clip, twin = slice(4, 6), slice(6, 8)
        assert torch.equal(batch["video"][clip], batch["video"][twin]) and batch["action_mask"][4:].all()
        assert (batch["labels"][clip, aoc] == 1).all()
        for k in range(2):
            c, g = which(batch["actions"][4 + k]), which(batch["actions"][6 + k])
            assert c != g and 6 not in (c, g) and videos.rows[c]["source"] == videos.rows[g]["source"]
            assert batch["labels"][6 + k, aoc] == ({c, g} == {0, 3})
    with pytest.raises(ValueError, match="below 0.5"):
        fit_judge(model, videos, loop, batch_size=8, swap_actions=0.5)


def test_predict_matches_score(teacher):
    videos = random_videos(4, (12, 9), seed=3)
    texts = ["lift the red cube", "open the door", "open the door", "put the can in the bin"]
    pred = predict(teacher, VideoSet.from_videos(videos, texts), batch_size=3)
    np.testing.assert_allclose(pred["expected"], teacher.score(videos, texts).expected.numpy(), atol=1e-5)


def test_cached_predict_recomputes_when_the_videos_rows_change(teacher, tmp_path, monkeypatch):
    """The cache of a teacher's outputs is reused for the same videos, never for other videos of the same number."""
    from roboalign_env.models import batch_scoring

    videos = random_videos(2, (12, 9), seed=4)
    texts = ["lift the red cube", "open the door"]
    first = batch_scoring.cached_predict(teacher, VideoSet.from_videos(videos, texts), tmp_path / "t.npz", progress=False)
    calls = []
    monkeypatch.setattr(batch_scoring, "predict", lambda *a, **k: calls.append(1) or first)
    again = batch_scoring.cached_predict(teacher, VideoSet.from_videos(videos, texts), tmp_path / "t.npz", progress=False)
    assert not calls
    np.testing.assert_array_equal(again["expected"], first["expected"])
    assert len(again["log_probs"]) == len(first["log_probs"]) == len(DIMENSIONS)
    batch_scoring.cached_predict(teacher, VideoSet.from_videos(videos, texts[::-1]), tmp_path / "t.npz", progress=False)
    assert calls == [1]


def test_agreement_metrics():
    ref = np.array([[3, 2, 1, 1, 1, 2], [0, 0, 0, 0, 0, 0], [2, 1, 1, 0, 1, 1], [1, 0, 1, 1, 0, 2]])
    perfect = agreement(ref, ref.astype(float), ref)
    assert perfect["mean_accuracy"] == 1 and perfect["mean_qwk"] == 1 and perfect["aggregate_spearman"] == pytest.approx(1)
    assert perfect["mean_mae"] == 0
    worse = ref.copy()
    worse[:, 0] = [0, 3, 0, 3]
    out = agreement(worse, worse.astype(float), ref)
    assert out["per_dimension"]["instruction_following"]["accuracy"] == 0
    assert out["per_dimension"]["instruction_following"]["qwk"] < 0
    assert out["per_dimension"]["manipulation_success"]["accuracy"] == 1
    exact_if = {d: v["aggregate_spearman_if_exact"] for d, v in out["per_dimension"].items()}
    assert out["aggregate_spearman"] < 0.99 and exact_if["instruction_following"] == pytest.approx(1)
    assert exact_if["manipulation_success"] == pytest.approx(out["aggregate_spearman"])
    mats = confusion_matrices(worse, ref)
    assert mats[0][3, 0] == 1 and mats[0].sum() == 4 and [m.shape for m in mats] == [(t + 1, t + 1) for t in MAX_SCORES]


def test_step_actions_give_each_frame_the_mean_of_the_actions_that_led_to_it():
    from roboalign_env.models.scoring import StepActions

    torch.manual_seed(0)
    steps = StepActions(16)
    torch.nn.init.normal_(steps.absent)
    frame_mask = torch.tensor([[True] * 5, [True] * 3 + [False] * 2, [True] * 5])
    actions = torch.randn(3, 8, 7)
    action_mask = torch.zeros(3, 8, dtype=torch.bool)
    action_mask[0, :8] = True  # 5 frames at stride 2: two actions per transition
    action_mask[1, :2] = True  # 3 frames at stride 1
    out = steps(actions, action_mask, frame_mask)
    assert out.shape == (3, 6, 16)
    e = steps.mlp(actions)
    for k in range(4):  # row 0: frame k + 1 (token k + 2) follows actions 2k, 2k + 1
        torch.testing.assert_close(out[0, k + 2], e[0, 2 * k : 2 * k + 2].mean(0))
    torch.testing.assert_close(out[1, 2:4], e[1, :2])
    assert out[:2, :2].abs().max() == 0 and out[1, 4:].abs().max() == 0  # no action before frame 0, none on padding
    # row 2 came without actions: the "absent" embedding on every frame after the first
    torch.testing.assert_close(out[2, 2:], steps.absent.expand(4, -1))
    assert out[2, :2].abs().max() == 0
    # what sits in padded action slots is never read
    noisy = actions.clone()
    noisy[~action_mask] = 100.0
    torch.testing.assert_close(steps(noisy, action_mask, frame_mask), out)


@pytest.mark.parametrize("make", [lambda: RoboAlignJudge(RoboAlignJudgeConfig(**TINY_TEACHER)),
                                  lambda: StudentReward(StudentRewardConfig(**TINY_STUDENT, read_actions=True))],
                         ids=["teacher", "student"])
def test_scorers_read_the_actions_and_score_without_them(make):
    torch.manual_seed(0)
    model = make().eval()
    videos = random_videos()
    actions = [np.random.default_rng(i).uniform(-1, 1, (len(v) - 1, 7)) for i, v in enumerate(videos)]
    own = model.score(videos, "lift the red cube", actions=actions).expected
    mirrored = model.score(videos, "lift the red cube", actions=[-a for a in actions]).expected
    without = model.score(videos, "lift the red cube").expected
    assert (own - mirrored).abs().max() > 1e-4 and (own - without).abs().max() > 1e-4
    with pytest.raises(ValueError, match="one \\(A, 7\\) array per video"):
        model.score(videos, "lift the red cube", actions=actions[:2])


def test_score_reads_the_actions_stored_beside_an_npz_video(tmp_path):
    from roboalign_env.eval.score import score_video

    torch.manual_seed(0)
    StudentReward(StudentRewardConfig(**TINY_STUDENT, read_actions=True)).save_pretrained(tmp_path / "student")
    video = random_videos(1, (8,))[0]
    actions = np.random.default_rng(0).uniform(-1, 1, (7, 7)).astype(np.float32)
    np.savez(tmp_path / "with.npz", video=video, actions=actions)
    np.savez(tmp_path / "without.npz", video=video)
    given = score_video(tmp_path / "with.npz", "lift the red cube", tmp_path / "student")
    alone = score_video(tmp_path / "without.npz", "lift the red cube", tmp_path / "student")
    assert given["actions"] == 7 and alone["actions"] is None
    assert given["scores"] != alone["scores"]
