"""RobotWorldBench built from a tiny real collection: labels, splits, provenance, resume, ingest."""

import json

import numpy as np
import pytest

from roboalign_env.data.bench import (
    add_external,
    episodes_by_split,
    load_pair,
    read_index,
    view_split,
)
from roboalign_env.data.episodes import read_manifest
from roboalign_env.data.splits import split_of
from roboalign_env.eval.bench_stats import bench_stats
from roboalign_env.rubric import DIMENSIONS, MAX_SCORES
from roboalign_env.sim.build_bench import RECIPE, build_bench

pytestmark = pytest.mark.sim


@pytest.fixture(scope="module")
def bench(collection, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    build_bench(collection, out, heldout_source="pickplace_can_ur5e", progress=False)
    return out


def test_pairs_have_valid_labels_and_videos(bench):
    rows = read_index(bench)
    assert len(rows) >= 8 * 8  # most of the recipe applies to every episode
    for row in rows[::7]:
        for dim, top in zip(DIMENSIONS, MAX_SCORES):
            assert 0 <= row["labels"][dim] <= top
        pair = load_pair(bench, row)
        assert 8 <= len(pair["video"]) <= 32 and pair["video"].dtype == np.uint8
        assert pair["video"].shape[1:] == (64, 64, 3) and pair["initial_frame"].shape == (64, 64, 3)
        assert row["provenance"]["family"] in {f for f, _ in RECIPE}


def test_every_successful_episode_gives_a_clip_that_ends_as_the_success_happens(bench, collection):
    """The env's reward scores a success the step it happens; the bench holds one clean stride-1 clip per
    successful episode ending 0 to ONSET_LAG steps after robosuite first reports it, labelled as the success
    it shows, and none for an episode that never succeeds."""
    from roboalign_env.sim.build_bench import ONSET_LAG

    onset = {r["episode_id"]: r for r in read_index(bench) if r["provenance"]["kind"] == "onset"}
    succeeded = 0
    for entry in read_manifest(collection):
        first = entry["first_success_step"]
        if first is None:
            assert entry["episode_id"] not in onset
            continue
        succeeded += 1
        row = onset[entry["episode_id"]]
        window = row["provenance"]["window"]
        end = window["start"] + window["length"] - 1
        assert window["stride"] == 1 and first <= end <= first + ONSET_LAG and 8 <= window["length"] <= 32
        if entry["failure"] == "nominal":
            assert row["labels"]["manipulation_success"] == 2
    assert succeeded >= 4  # the nominal episodes of the env's sources


def test_degradations_have_their_known_effect(bench):
    rows = read_index(bench)
    for row in rows:
        p, lab = row["provenance"], row["labels"]
        if p["family"] == "temporal" or (p["family"] == "pixel" and p["params"]["strength"] == "strong"):
            assert lab["temporal_consistency"] == 0
        if p["family"] == "clean":
            assert lab["temporal_consistency"] == 1
        if p["kind"] == "other_task":
            assert lab["instruction_following"] == 0 and lab["manipulation_success"] == 0
        if p["kind"] == "near_miss":
            assert lab["instruction_following"] == 1
        if p["family"] == "physics":
            assert lab["physics_adherence"] < 2
        if p["family"] == "contact":
            assert lab["contact_realism"] == 0
        if p["family"] == "aoc":
            assert lab["action_outcome_consistency"] == 0
        if p["family"] == "dream":  # a ghost arm over a scene that never changes
            assert lab["manipulation_success"] == 0 and lab["temporal_consistency"] == 0
            assert lab["physics_adherence"] <= 1
    families = {r["provenance"]["family"] for r in rows}
    assert {"clean", "swap", "temporal", "pixel", "physics", "contact", "aoc", "dream", "actions"} <= families


def test_videos_paired_with_actions_that_did_not_make_them(bench):
    rows = read_index(bench)
    by_episode = {}
    for row in rows:
        by_episode.setdefault(row["episode_id"], []).append(row)
    paired = [r for r in rows if r["provenance"]["family"] == "actions"]
    assert {r["provenance"]["kind"] for r in paired} == {"other_episode", "mirrored"}
    for row in paired:
        own = next(r for r in by_episode[row["episode_id"]] if r["provenance"]["kind"] == "full")
        given, real = load_pair(bench, row), load_pair(bench, own)
        assert np.array_equal(given["video"], real["video"])  # the real video...
        assert given["actions"].shape == real["actions"].shape and not np.allclose(given["actions"], real["actions"])
        if row["provenance"]["kind"] == "mirrored":
            assert np.allclose(given["actions"], -real["actions"])
        # ...with other actions is inconsistent in AOC only (these scripted episodes always move the arm)
        assert row["labels"]["action_outcome_consistency"] == 0
        assert {d: v for d, v in row["labels"].items() if d != "action_outcome_consistency"} == \
            {d: v for d, v in own["labels"].items() if d != "action_outcome_consistency"}


def test_state_edits_change_the_rendered_pixels(bench):
    rows = read_index(bench)
    edited = next(r for r in rows if r["provenance"]["kind"] == "teleport")
    video = load_pair(bench, edited)["video"]
    at = edited["provenance"]["params"]["frame"]
    assert np.abs(video[at].astype(int) - video[at - 1]).sum() > np.abs(video[at - 1].astype(int) - video[at - 2]).sum()


def test_splits_do_not_leak_and_heldout_is_one_source(bench):
    rows = read_index(bench)
    by_split = episodes_by_split(rows)
    splits = list(by_split)
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            assert not by_split[a] & by_split[b], f"episodes in both {a} and {b}"
    assert {r["source"] for r in rows if r["split"] == "heldout"} == {"pickplace_can_ur5e"}
    assert all(r["split"] != "heldout" for r in rows if r["source"] != "pickplace_can_ur5e")
    assert split_of("x", "lift_panda", "pickplace_can_ur5e") == split_of("x", "lift_panda", "pickplace_can_ur5e")


def test_the_bench_seen_with_another_source_held_out_or_none(bench):
    """A judge for every source trains on the held-out source's episodes split by their hash; holding
    out another source moves all of its pairs to "heldout"; an unknown source is refused."""
    rows = read_index(bench)
    for held, moved in (("", "pickplace_can_ur5e"), ("lift_panda", "pickplace_can_ur5e")):
        view = read_index(bench, heldout_source=held)
        assert [r["pair_id"] for r in view] == [r["pair_id"] for r in rows]
        for before, after in zip(rows, view):
            if before["source"] == held:
                assert after["split"] == "heldout"
            elif before["source"] == moved:
                assert after["split"] == split_of(before["episode_id"], moved, "") != "heldout"
            else:
                assert after["split"] == before["split"]
        assert not set().union(*(ids for s, ids in episodes_by_split(view).items() if s != "heldout")) & \
            episodes_by_split(view).get("heldout", set())
    rollout = {"source": "pickplace_can_ur5e", "split": "heldout", "episode_id": "external-x-00000",
               "provenance": {"kind": "rollout_own", "params": {"episode_id": "pickplace_can_ur5e-nominal-00001"}}}
    assert view_split(rollout, "") == split_of("pickplace_can_ur5e-nominal-00001", "pickplace_can_ur5e", "")
    with pytest.raises(ValueError, match="expected one of .*'' to hold none out"):
        read_index(bench, heldout_source="lift_ur5e")


def test_training_splits_never_show_the_heldout_sources_instructions(bench, tmp_path):
    """The held-out source's instructions, swapped into other videos as mismatches, stay out of train and val
    (a judge would learn them only as wrong); test keeps its pairs, and a view with nothing held out keeps all."""
    from roboalign_env.data.bench import heldout_instructions

    rows = read_index(bench)
    held = heldout_instructions(rows)
    assert held and all(r["source"] == "pickplace_can_ur5e" for r in rows if r["instruction_kind"] == "correct"
                        and r["instruction"].strip().lower() in held)
    for split in ("train", "val", "test"):
        all_rows = [r for r in rows if r["split"] == split]
        kept = read_index(bench, split)
        dropped = [r for r in all_rows if r["instruction"].strip().lower() in held]
        if split == "test":
            assert kept == all_rows
        else:
            assert kept == [r for r in all_rows if r not in dropped]
            assert all(r["labels"]["instruction_following"] == 0 for r in dropped)
    assert len(read_index(bench, "train", heldout_source="")) == \
        len([r for r in rows if view_split(r, "") == "train"])
    # A training pair given a held-out instruction is always left out, whatever the tiny bench happened to draw.
    leaked = {**next(r for r in rows if r["split"] == "train"), "pair_id": "zz-leaked", "instruction": sorted(held)[0]}
    copy = tmp_path / "bench"
    copy.mkdir()
    (copy / "pairs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows + [leaked]))
    assert leaked in read_index(copy) and "zz-leaked" not in {r["pair_id"] for r in read_index(copy, "train")}


def test_distillations_extra_clips_never_carry_the_heldout_sources_instructions(bench, collection):
    """The unlabelled clips a student distils on swap in mismatched instructions as the bench does, and like the
    bench's training splits never the held-out source's (the student would learn them only as wrong)."""
    from roboalign_env.data.bench import heldout_instructions
    from roboalign_env.sim.build_bench import instruction_for
    from roboalign_env.sim.sources import SOURCES
    from roboalign_env.training.distill import episode_clips

    held = heldout_instructions(read_index(bench))
    lift = {r["episode_id"] for r in read_manifest(collection) if r["source"] == "lift_panda"}
    given = lambda clips: {r["instruction"].strip().lower() for r in clips.rows}  # noqa: E731
    assert given(episode_clips(collection, lift, 40, swap=1.0)) & held  # what the exclusion has to remove
    clips = episode_clips(collection, lift, 40, swap=1.0, exclude_instructions=held)
    assert not given(clips) & held and {r["relation"] for r in clips.rows} == {"near_miss", "other_task"}
    lift_instructions = {t.lower() for t in SOURCES["lift_panda"].instructions}
    with pytest.raises(ValueError, match="no correct instruction"):
        instruction_for("correct", "lift_panda", np.random.default_rng(0), lift_instructions)


def test_distillations_extra_clips_come_with_another_episodes_actions_or_their_own_mirrored(collection):
    """``other``: the same span of the episode of the same source drawn before; the first drawn has none, so negated."""
    from roboalign_env.data.episodes import load_episode
    from roboalign_env.sim.build_bench import Window
    from roboalign_env.training.distill import episode_clips

    entries = [r for r in read_manifest(collection) if r["source"] == "lift_panda"]
    episodes = {r["episode_id"]: load_episode(collection / r["path"]) for r in entries}
    clips = episode_clips(collection, set(episodes), 30, mirror=0.0, other=1.0, no_actions=0.0)
    kinds = {r["actions"] for r in clips.rows}
    assert kinds == {"mirrored", "other_episode"}
    for k, row in enumerate(clips.rows):
        ep = episodes[row["episode_id"]]
        given = clips.actions[k, : clips.num_actions[k]]
        span = Window(**row["window"]).actions
        donor = next(e for i, e in episodes.items() if i != row["episode_id"])
        expected = -ep.actions[span] if row["actions"] == "mirrored" else donor.actions[span]
        np.testing.assert_array_equal(given, expected)


def test_distillations_extra_clips_are_cut_from_every_collection_the_bench_was_built_from(collection, tmp_path):
    """A bench pooled from several collections gives the student extra clips of all of them; a collection
    that repeats another's episodes is refused, as build-bench refuses it."""
    from conftest import renamed_copy

    from roboalign_env.training.distill import episode_clips

    second = renamed_copy(collection, tmp_path / "second")
    only_second = {r["episode_id"] for r in read_manifest(second) if r["source"] == "lift_panda"}
    with pytest.raises(ValueError, match="none of the requested episodes"):
        episode_clips(collection, only_second, 8)
    clips = episode_clips([collection, second], only_second, 8)
    assert len(clips.rows) == len(clips) == 8
    with pytest.raises(ValueError, match="expected collections with distinct episodes"):
        episode_clips([collection, collection], only_second, 8)


def test_eval_judge_scores_a_judge_on_the_splits_it_was_trained_on(bench, tmp_path):
    """A judge trained on every source has no held-out split: the report says so instead of scoring
    the source it trained on as if held out, and its other splits include that source."""
    from roboalign_env.eval.judge_report import evaluate_judge
    from roboalign_env.models.judge import RoboAlignJudge, RoboAlignJudgeConfig

    model = RoboAlignJudge(RoboAlignJudgeConfig(widths=(8, 16, 16, 16), dim=32, layers=1, heads=2, ffn=64,
                                                text_encoder="trained"))
    model.config.heldout_source = ""
    model.save_pretrained(tmp_path / "judge")
    report = evaluate_judge(tmp_path / "judge", bench, tmp_path / "eval", splits=("train", "heldout"))
    assert report["heldout_source"] == "" and "skipped" in report["splits"]["heldout"]
    train = read_index(bench, "train", heldout_source="")
    assert report["splits"]["train"]["vs_oracle"]["n"] == len(train) > len(read_index(bench, "train"))
    per_source = report["splits"]["train"]["vs_oracle_per_source"]
    assert set(per_source) == {r["source"] for r in train} and "pickplace_can_ur5e" in per_source
    assert sum(v["n"] for v in per_source.values()) == len(train)


def test_a_teacher_is_fine_tuned_from_a_trained_one_on_the_view_it_was_trained_on(bench, tmp_path):
    """train_judge(init_from=...) starts from the judge's weights and config (a new run would not), and refuses
    a view that holds out a source the judge has seen, a model that is not a teacher, or a config beside it; a
    judge that held a source out may be fine-tuned on every source."""
    import torch

    from roboalign_env.models.judge import RoboAlignJudge, RoboAlignJudgeConfig
    from roboalign_env.training.judge import train_judge
    from roboalign_env.training.loop import LoopConfig

    tiny = dict(widths=(8, 16, 16, 16), dim=32, layers=1, heads=2, ffn=64, text_encoder="trained")
    torch.manual_seed(7)
    RoboAlignJudge(RoboAlignJudgeConfig(**tiny)).save_pretrained(tmp_path / "judge")
    loop = lambda name: LoopConfig(out=tmp_path / name, steps=2, lr=1e-9, warmup_steps=1, eval_every=100,  # noqa: E731
                                   progress=False)
    tuned = train_judge(bench, loop("tuned"), batch_size=4, eval_pairs=8, init_from=tmp_path / "judge")
    start = RoboAlignJudge.from_pretrained(tmp_path / "judge").state_dict()
    fresh = train_judge(bench, loop("fresh"), RoboAlignJudgeConfig(**tiny), batch_size=4, eval_pairs=8).state_dict()
    for name, weight in tuned.state_dict().items():
        if weight.is_floating_point() and weight.numel() > 1 and start[name].std() > 1e-3:  # not zero-initialized
            assert torch.allclose(weight, start[name], atol=1e-5) and not torch.allclose(weight, fresh[name], atol=1e-3)
    with pytest.raises(ValueError, match="pass no config"):
        train_judge(bench, loop("x"), RoboAlignJudgeConfig(**tiny), init_from=tmp_path / "judge")
    with pytest.raises(ValueError, match="not a teacher judge"):
        train_judge(bench, loop("x"), init_from="checkpoints/probe")
    everywhere = train_judge(bench, loop("every"), batch_size=4, eval_pairs=8, heldout_source="",
                             init_from=tmp_path / "tuned" / "model")
    assert everywhere.config.heldout_source == ""
    for view in (None, "lift_panda"):  # it has now seen the bench's held-out source, and every other
        with pytest.raises(ValueError, match="asks for another view"):
            train_judge(bench, loop("x"), heldout_source=view, init_from=tmp_path / "every" / "model")
    assert not (tmp_path / "x").exists()


def test_rebuild_skips_finished_shards_and_restores_lost_ones(collection, bench):
    rows = read_index(bench)
    shard = bench / rows[0]["file"]
    before = load_pair(bench, rows[0])["video"]
    shard.unlink()
    again = build_bench(collection, bench, heldout_source="pickplace_can_ur5e", progress=False)
    assert [r["pair_id"] for r in again] == [r["pair_id"] for r in rows]
    assert np.array_equal(load_pair(bench, rows[0])["video"], before)  # deterministic


def test_rebuild_redraws_a_shard_built_with_another_recipe(collection, bench):
    """A shard drawn with an older recipe (or before a source's instructions joined the swap pools) is not
    reused by a resumed build: it is drawn again and stamped with the current recipe."""
    from roboalign_env.data.io import atomic_savez
    from roboalign_env.sim.build_bench import recipe_id

    rows = read_index(bench)
    shard = bench / rows[0]["file"]
    with np.load(shard, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    assert str(arrays["recipe"]) == recipe_id(rows[0]["source"])
    stale = [{**r, "instruction": "stale"} for r in json.loads(str(arrays["rows"]))]
    atomic_savez(shard, **{**arrays, "rows": np.array(json.dumps(stale)), "recipe": np.array("1-00000000")})
    again = build_bench(collection, bench, heldout_source="pickplace_can_ur5e", progress=False)
    assert "stale" not in {r["instruction"] for r in again} and again == rows
    with np.load(shard, allow_pickle=False) as data:
        assert str(data["recipe"]) == recipe_id(rows[0]["source"])


def test_a_change_to_one_sources_instructions_redraws_only_the_shards_it_reaches(monkeypatch):
    """A shard's recipe digests its own source's instruction pools: a new near miss for Lift stales Lift's
    shards and no Door shard, while a new Door instruction also stales Lift's (Lift's other-task swaps draw it)."""
    import dataclasses

    from roboalign_env.sim.build_bench import recipe_id
    from roboalign_env.sim.sources import SOURCES

    before = {name: recipe_id(name) for name in ("lift_panda", "door_kinova3")}
    lift, door = SOURCES["lift_panda"], SOURCES["door_kinova3"]
    monkeypatch.setitem(SOURCES, "lift_panda", dataclasses.replace(lift, near_miss_instructions=("lift the blue cube",)))
    assert recipe_id("lift_panda") != before["lift_panda"] and recipe_id("door_kinova3") == before["door_kinova3"]
    monkeypatch.setitem(SOURCES, "lift_panda", lift)
    monkeypatch.setitem(SOURCES, "door_kinova3", dataclasses.replace(door, instructions=(*door.instructions, "open it")))
    assert recipe_id("lift_panda") != before["lift_panda"] and recipe_id("door_kinova3") != before["door_kinova3"]


def test_an_instruction_for_the_same_task_on_another_object_is_a_near_miss_never_another_task():
    """The milk carton's instruction on a bread video names the task it shows with the wrong object, as the written
    near misses do (IF 1, not 0): the bench's other-task swaps draw only other task families, and the relation the
    state probe labels dreams with agrees."""
    from roboalign_env.models.state_probe import instruction_kind
    from roboalign_env.sim.build_bench import instruction_for
    from roboalign_env.sim.sources import SOURCES, instruction_pool, instruction_relation

    rng = np.random.default_rng(0)
    for name, source in SOURCES.items():
        drawn = {instruction_for("other_task", name, rng) for _ in range(200)}
        families = {s.family for s in SOURCES.values() for t in s.instructions if t in drawn}
        assert source.family not in families and len(families) == len({s.family for s in SOURCES.values()}) - 1
        assert all(instruction_relation(t, name) == "other_task" for t in drawn)
    bread_on_milk = SOURCES["pickplace_milk_panda"].instructions[0]
    assert instruction_relation(bread_on_milk.upper() + " ", "pickplace_bread_panda") == "near_miss"
    assert instruction_kind(bread_on_milk, "pickplace_bread_panda") == "near_miss"
    assert instruction_kind(bread_on_milk, "pickplace_milk_kinova3") == "correct"  # the same task, another robot
    assert instruction_kind(SOURCES["lift_panda"].instructions[0], "lift_ur5e") == "correct"
    assert instruction_relation(SOURCES["door_kinova3"].instructions[0], "pickplace_bread_panda") == "other_task"
    assert instruction_relation("fold the towel", "lift_panda") is None
    assert set(instruction_pool("near_miss", "lift_panda")) == set(SOURCES["lift_panda"].near_miss_instructions)
    with pytest.raises(ValueError, match="relation='wrong'"):
        instruction_pool("wrong", "lift_panda")


def test_bench_pools_collections_and_keeps_pairs_added_from_outside(collection, bench, tmp_path):
    """A second collection (the judge-only sources) joins a built bench: its episodes get pairs labelled by
    their own source's rules, the pairs already there are untouched, and externally added pairs survive."""
    import shutil

    from roboalign_env.sim.collect import collect, plan_episodes
    from roboalign_env.sim.sources import JUDGE_SOURCES

    extra = tmp_path / "extra"
    collect(extra, plan_episodes(list(JUDGE_SOURCES), 1), workers=1, progress=False)
    pooled = shutil.copytree(bench, tmp_path / "bench")
    labels = dict(zip(DIMENSIONS, [0, 1, 1, 1, 1, 0]))
    added = add_external(pooled, "kept", [{"video": np.zeros((10, 64, 64, 3), np.uint8), "instruction": "lift the red cube",
                                           "labels": labels, "source": "lift_panda", "split": "train"}])
    before = read_index(pooled)
    with pytest.raises(ValueError, match="distinct episodes"):
        build_bench([collection, collection], pooled, heldout_source="pickplace_can_ur5e", progress=False)
    with pytest.raises(ValueError, match="no folder given"):
        build_bench([], pooled, heldout_source="pickplace_can_ur5e", progress=False)
    assert read_index(pooled) == before
    rows = build_bench([collection, extra], pooled, heldout_source="pickplace_can_ur5e", progress=False)
    by_id = {r["pair_id"]: r for r in rows}
    assert all(by_id[r["pair_id"]] == r for r in before) and added[0]["pair_id"] in by_id
    new = [r for r in rows if r["source"] in JUDGE_SOURCES]
    assert {r["source"] for r in new} == set(JUDGE_SOURCES) and {r["split"] for r in new} <= {"train", "val", "test"}
    for row in read_manifest(extra):  # one nominal episode per source: its full clip is labelled by its outcome
        full = next(r for r in new if r["episode_id"] == row["episode_id"] and r["provenance"]["kind"] == "full")
        assert (full["labels"]["manipulation_success"] == 2) == row["success"]
    assert read_index(pooled) == rows


def test_bench_stats_writes_counts_and_pictures(bench, tmp_path):
    stats = bench_stats(bench, tmp_path)
    assert stats["pairs"] == len(read_index(bench))
    assert sum(stats["total"]["physics_adherence"]) == stats["pairs"]
    for name in ("stats.json", "label_histograms.png", "contact_sheet.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert json.loads((tmp_path / "stats.json").read_text())["pairs"] == stats["pairs"]


def test_external_videos_are_ingested_and_validated(bench):
    labels = dict(zip(DIMENSIONS, [2, 1, 1, 1, 1, 2]))
    video = np.zeros((10, 64, 64, 3), np.uint8)
    item = {"video": video, "instruction": "lift the red cube", "labels": labels, "source": "lift_panda", "split": "train"}
    n = len(read_index(bench))
    new = add_external(bench, "rollouts_a", [item])
    assert len(read_index(bench)) == n + 1
    assert np.array_equal(load_pair(bench, new[0])["video"], video)
    with pytest.raises(ValueError, match="physics_adherence"):
        add_external(bench, "bad_label", [{**item, "labels": {**labels, "physics_adherence": 3}}])
    with pytest.raises(ValueError, match="uint8"):
        add_external(bench, "bad_video", [{**item, "video": video.astype(np.float32)}])
    with pytest.raises(ValueError, match="instruction"):
        add_external(bench, "no_text", [{**item, "instruction": " "}])
    assert len(read_index(bench)) == n + 1  # rejected batches leave the bench untouched


def test_dream_rollouts_join_the_bench_labelled_from_their_frames(bench, collection, tmp_path):
    """World-model rollouts (an untrained tiny model) go into the bench under each action kind, in
    their episode's split, with labels from the probe and robosuite."""
    import shutil

    from conftest import tiny_world_model

    from roboalign_env.eval.dream_pairs import ACTION_KINDS, dream_pairs

    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    new = dream_pairs(tiny_world_model(tmp_path / "wm"), "checkpoints/probe", collection, copy, "tiny", per_source=1,
                      steps=7, progress=False)
    split = {r["episode_id"]: r["split"] for r in read_index(bench)}
    assert len(new) == 4 * len(ACTION_KINDS)  # one episode of each of the four sources
    assert {r["provenance"]["kind"] for r in new} == {f"rollout_{k}" for k in ACTION_KINDS}
    for row in new:
        params = row["provenance"]["params"]
        assert row["split"] == split[params["episode_id"]] and row["num_frames"] == 8
        pair = load_pair(copy, row)
        assert pair["actions"].shape == (7, 7) and pair["video"].shape == (8, 64, 64, 3)
        if params["labelled_by"].endswith("strays from robosuite"):
            assert params["eef_error_cm"] >= 8.0 and row["labels"]["action_outcome_consistency"] == 0
    assert len(read_index(copy)) == len(read_index(bench)) + len(new)


def test_a_policy_acting_on_the_dream_is_rolled_out_closed_loop_and_replayed(bench, collection, tmp_path):
    """The policy kind: the policy sees the real first frame, then each frame the dream drew from its own
    last action; the pair keeps those actions, and robosuite's replay of them labels it."""
    import shutil

    from conftest import tiny_world_model

    from roboalign_env.eval.dream_pairs import dream_pairs

    shown, chosen = [], []

    def policy(frames, sources):  # acts on what it sees: the brightness sets the x command
        assert frames.dtype == np.uint8 and frames.shape[1:] == (3, 64, 64) and sources == ["lift_panda"] * len(frames)
        shown.append(frames.copy())
        action = np.zeros((len(frames), 7), np.float32)
        action[:, 0] = frames.reshape(len(frames), -1).mean(1) % 8 / 4 - 1
        action[:, 1] = 2.0  # out of range: clipped, as the env clips
        action[:, 6] = -1
        chosen.append(np.clip(action, -1, 1))
        return action

    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    model = tiny_world_model(tmp_path / "wm", moving=True)
    for bad, match in [(dict(kinds=("policy",)), "needs a policy"), (dict(kinds=("own",), policy=policy), "needs the"),
                       (dict(kinds=("sideways",)), "kinds"), (dict(sources=("door_panda",)), "bench's sources")]:
        with pytest.raises(ValueError, match=match):
            dream_pairs(model, "checkpoints/probe", collection, copy, "bad", per_source=1, steps=7, progress=False, **bad)
    assert len(read_index(copy)) == len(read_index(bench))  # refused before anything was written
    new = dream_pairs(model, "checkpoints/probe", collection, copy, "closed_loop", per_source=1, steps=7, progress=False,
                      kinds=("policy",), sources=("lift_panda",), policy=policy, policy_name="brightness")
    assert len(new) == 1 and new[0]["provenance"]["kind"] == "rollout_policy"
    params = new[0]["provenance"]["params"]
    assert params["policy"] == "brightness" and params["labelled_by"] and isinstance(params["real_success"], bool)
    pair = load_pair(copy, new[0])
    assert len(shown) == 7
    for t, frames in enumerate(shown):  # frame t of the video is what the policy saw before action t
        assert np.array_equal(frames[0].transpose(1, 2, 0), pair["video"][t])
    assert not np.array_equal(pair["video"][1], pair["video"][0])  # the dream drew new frames
    np.testing.assert_array_equal(pair["actions"], np.concatenate(chosen))
    assert len({float(a) for a in pair["actions"][:, 0]}) > 1 and (pair["actions"][:, 1] == 1).all()


def test_the_adversary_keeps_the_searched_actions_and_the_dream_they_were_scored_on(bench, collection, tmp_path):
    """The adversary kind: the stored video and actions are the search's best candidate (the objective gives
    them the recorded score), commands held ``hold`` steps, replayed in robosuite and labelled like any rollout."""
    import shutil

    from conftest import tiny_world_model

    from roboalign_env.eval.adversary import SearchConfig
    from roboalign_env.eval.dream_pairs import dream_pairs

    def brightness(videos, instruction, actions):  # pays for a bright last frame
        assert videos.shape[1:] == (8, 64, 64, 3) and actions.shape == (len(videos), 7, 7) and instruction
        return videos[:, -1].reshape(len(videos), -1).mean(1) / 100

    copy = tmp_path / "bench"
    shutil.copytree(bench, copy)
    model = tiny_world_model(tmp_path / "wm", moving=True)
    search = SearchConfig(population=6, iterations=2, elites=2, hold=3)
    with pytest.raises(ValueError, match="needs an adversary"):
        dream_pairs(model, "checkpoints/probe", collection, copy, "bad", per_source=1, steps=7, progress=False,
                    kinds=("adversary",))
    assert len(read_index(copy)) == len(read_index(bench))
    new = dream_pairs(model, "checkpoints/probe", collection, copy, "attack", per_source=1, steps=7, progress=False,
                      kinds=("adversary",), sources=("lift_panda",), adversary=brightness, adversary_name="bright",
                      search=search)
    assert len(new) == 1 and new[0]["provenance"]["kind"] == "rollout_adversary"
    params = new[0]["provenance"]["params"]
    assert params["adversary"] == "bright" and params["search"]["population"] == 6 and len(params["search_trace"]) == 2
    assert params["adversary_score"] == max(params["search_trace"]) and params["labelled_by"]
    pair = load_pair(copy, new[0])
    assert brightness(pair["video"][None], "x", pair["actions"][None])[0] == pytest.approx(params["adversary_score"], abs=1e-4)
    actions = pair["actions"]
    assert (actions[:, 3:6] == 0).all() and set(np.unique(actions[:, 6])) <= {-1.0, 1.0} and np.abs(actions).max() <= 1
    assert (actions[0] == actions[2]).all() and (actions[3] == actions[5]).all()  # each command held 3 steps


def test_the_cross_entropy_search_climbs_its_objective(tmp_path):
    from conftest import tiny_world_model

    from roboalign_env.eval.adversary import SearchConfig, search_actions
    from roboalign_env.models.transformer import MODEL_WINDOW
    from roboalign_env.models.world_model import WorldModel

    model = WorldModel.load(tiny_world_model(tmp_path / "wm", moving=True), "cpu")
    window = model.transformer.config.resolve_window(MODEL_WINDOW)
    first = np.full((64, 64, 3), 120, np.uint8)
    target = np.array([0.5, -0.3, 0.2])

    def near(videos, instruction, actions):  # pays for translation commands close to a target
        return -np.abs(actions[..., :3] - target).mean((1, 2))

    frames, actions, score, trace = search_actions(model, first, "lift the red cube", near, 8, window, 1.0, seed=0,
                                                   config=SearchConfig(population=12, iterations=4, elites=3))
    assert frames.shape == (8, 64, 64, 3) and frames.dtype == np.uint8 and actions.shape == (8, 7)
    assert trace[-1] > trace[0] + 0.1 and score == max(trace)  # a random draw of 12 is far from the target
    assert near(None, "", actions[None])[0] == pytest.approx(score, abs=1e-6)
    for bad in (dict(elites=32), dict(population=1), dict(iterations=0), dict(min_std=0.0)):
        with pytest.raises(ValueError):
            SearchConfig(**bad)


def test_the_adversary_attacks_a_rewards_manipulation_success(collection):
    """What --adversary REWARD maximizes: the reward's expected Manipulation Success of each clip, read with
    its actions (the env's reward window: the first frame and the dreamed frames)."""
    from roboalign_env.assets import DEFAULT_MODEL
    from roboalign_env.data.episodes import load_episode, read_manifest
    from roboalign_env.eval.adversary import manipulation_success
    from roboalign_env.models.registry import load_scorer

    student = load_scorer(DEFAULT_MODEL / "student")
    ep = load_episode(collection / read_manifest(collection)[0]["path"])
    videos, actions = np.stack([ep.frames[:9], ep.frames[:1].repeat(9, 0)]), np.stack([ep.actions[:8], ep.actions[:8] * 0])
    paid = manipulation_success(student)(videos, ep.meta["instruction"], actions)
    scores = student.score(list(videos), [ep.meta["instruction"]] * 2, actions=list(actions))
    expected = scores.expected[:, DIMENSIONS.index("manipulation_success")]
    assert paid.shape == (2,) and np.allclose(paid, expected.numpy(), atol=1e-6) and (0 <= paid).all() and (paid <= 2).all()


def test_a_dream_equal_to_robosuite_takes_robosuites_labels_and_a_frozen_one_strays(collection):
    from roboalign_env.data.episodes import load_episode, read_manifest
    from roboalign_env.eval.dream_pairs import label_rollout
    from roboalign_env.models.registry import load_scorer
    from roboalign_env.sim.oracle import label_trace
    from roboalign_env.sim.replay import replay

    probe = load_scorer("checkpoints/probe")
    entry = next(e for e in read_manifest(collection) if e["source"] == "lift_panda" and e["failure"] == "nominal")
    ep = load_episode(collection / entry["path"])
    frames, trace = replay("lift_panda", int(ep.meta["seed"]), ep.actions[:24], 64)
    assert np.abs(frames.astype(int) - ep.frames[:25]).max() <= 2  # the replay is the episode
    labels, why = label_rollout(probe, frames, ep.meta["instruction"], trace, "nominal")
    assert why["labelled_by"] == "robosuite" and why["eef_error_cm"] < 4.0
    real = label_trace(trace, trace["object_pos"][0, :, 2]).as_dict()
    assert {d: v for d, v in labels.items() if d != "temporal_consistency"} == \
        {d: v for d, v in real.items() if d != "temporal_consistency"}
    frozen = np.repeat(frames[:1], len(frames), 0)  # a dream that ignores the approach the actions command
    labels, why = label_rollout(probe, frozen, ep.meta["instruction"], trace, "nominal")
    assert why["eef_error_cm"] >= 8.0 and labels["action_outcome_consistency"] == 0
    assert labels["manipulation_success"] == 0


def test_which_pairs_keep_their_actions_in_training():
    from roboalign_env.data.bench import is_rollout, labels_need_actions

    def row(family, kind):
        return {"provenance": {"family": family, "kind": kind}}

    assert labels_need_actions(row("actions", "mirrored")) and labels_need_actions(row("dream", "rollout_own"))
    assert is_rollout(row("dream", "rollout_zero")) and not is_rollout(row("dream", "ghost_arm"))
    assert not labels_need_actions(row("dream", "ghost_arm")) and not labels_need_actions(row("clean", "full"))


def test_hardening_attacks_the_current_student_and_distils_the_teachers_labels(bench, collection, tmp_path):
    """harden_student: each round attacks the student the previous round left, from training episodes only;
    every candidate the search dreamed is kept with the teacher's labels and distilled on; a rerun with more
    rounds reuses the finished ones; a run with a new teacher can start from an earlier run's attacks."""
    import dataclasses

    import torch
    from conftest import tiny_world_model
    from test_judge import TINY_STUDENT, TINY_TEACHER

    from roboalign_env.data.bench_cache import VideoSet
    from roboalign_env.eval.adversary import SearchConfig, manipulation_success
    from roboalign_env.models.batch_scoring import predict
    from roboalign_env.models.judge import RoboAlignJudge, RoboAlignJudgeConfig
    from roboalign_env.models.student import StudentReward, StudentRewardConfig
    from roboalign_env.training.adversarial import HardenConfig, harden_student

    torch.manual_seed(0)
    RoboAlignJudge(RoboAlignJudgeConfig(**TINY_TEACHER)).save_pretrained(tmp_path / "teacher")
    StudentReward(StudentRewardConfig(**TINY_STUDENT, read_actions=True)).save_pretrained(tmp_path / "student")
    model = tiny_world_model(tmp_path / "wm", moving=True)
    config = HardenConfig(rounds=2, per_source=1, steps=7, distill_steps=3, batch_size=4,
                          search=SearchConfig(population=3, iterations=2, elites=1))
    out = tmp_path / "harden"
    args = (tmp_path / "student", tmp_path / "teacher", model, bench, collection, out)
    harden_student(*args, config, extra_clips=0, targets=tmp_path / "targets", progress=False)

    train = {r["episode_id"] for r in read_index(bench, "train")}
    teacher = RoboAlignJudge.from_pretrained(tmp_path / "teacher").eval()
    sources = len({r["source"] for r in read_index(bench, "train")})
    for r in range(2):
        with np.load(out / f"attack_{r:03d}.npz") as f:
            found = {k: f[k] for k in f.files}
        assert found["video"].shape == (sources * 6, 8, 64, 64, 3) and found["actions"].shape == (sources * 6, 7, 7)
        assert set(found["episode_id"]) <= train and found["best"].sum() == sources
        videos = VideoSet.from_videos(list(found["video"]), [str(t) for t in found["instruction"]],
                                      actions=list(found["actions"]))
        labels = predict(teacher, videos)["log_probs"]
        for k in range(len(DIMENSIONS)):  # the teacher's labels, not the attacked student's
            np.testing.assert_allclose(found[f"teacher_{k}"], labels[k], atol=1e-5)
        attacked = tmp_path / "student" if r == 0 else out / "round_000" / "model"
        paid = manipulation_success(StudentReward.from_pretrained(attacked).float().eval())
        np.testing.assert_allclose(found["score"][:3], paid(found["video"][:3], str(found["instruction"][0]),
                                                            found["actions"][:3]), atol=1e-4)
    rows = [json.loads(line) for line in (out / "rounds.jsonl").read_text().splitlines()]
    assert [r["round"] for r in rows] == [0, 1] and rows[1]["held"] == rows[0]["held"] + sources * 6
    first = (out / "attack_000.npz").stat().st_mtime_ns, (out / "round_001" / "model" / "model.safetensors").stat().st_mtime_ns
    harden_student(*args, dataclasses.replace(config, rounds=3), extra_clips=0, targets=tmp_path / "targets",
                   progress=False)
    assert ((out / "attack_000.npz").stat().st_mtime_ns, (out / "round_001" / "model" / "model.safetensors").stat().st_mtime_ns) == first
    assert len((out / "rounds.jsonl").read_text().splitlines()) == 3 and (out / "model" / "model.safetensors").is_file()
    with pytest.raises(ValueError, match="rounds"):
        HardenConfig(rounds=0)

    # A retrained teacher hardens again on the earlier run's attacks, relabelled by it, before its own round.
    torch.manual_seed(1)
    RoboAlignJudge(RoboAlignJudgeConfig(**TINY_TEACHER)).save_pretrained(tmp_path / "teacher2")
    again = tmp_path / "harden2"
    for bad, match in ((tmp_path / "teacher", "no attack_XXX"), (again, "own folder")):
        with pytest.raises(ValueError, match=match):
            harden_student(tmp_path / "student", tmp_path / "teacher2", model, bench, collection, again,
                           dataclasses.replace(config, rounds=1), extra_clips=0, targets=tmp_path / "targets2",
                           progress=False, reuse_attacks=bad)
    assert not again.exists()
    harden_student(tmp_path / "student", tmp_path / "teacher2", model, bench, collection, again,
                   dataclasses.replace(config, rounds=1), extra_clips=0, targets=tmp_path / "targets2", progress=False,
                   reuse_attacks=out)
    teacher2 = RoboAlignJudge.from_pretrained(tmp_path / "teacher2").eval()
    for r in range(3):
        with np.load(out / f"attack_{r:03d}.npz") as f, np.load(again / f"reused_{r:03d}.npz") as g:
            videos = VideoSet.from_videos(list(f["video"]), [str(t) for t in f["instruction"]], actions=list(f["actions"]))
            np.testing.assert_allclose(g["log_probs_0"], predict(teacher2, videos)["log_probs"][0], atol=1e-5)
    (row,) = [json.loads(line) for line in (again / "rounds.jsonl").read_text().splitlines()]
    assert row["held"] == rows[0]["held"] + 3 * sources * 6 and len(row["reused_attacks"]) == 3
