"""RobotWorldBench built from a tiny real collection: labels, splits, provenance, resume, ingest."""

import json

import numpy as np
import pytest

from roboalign_env.data.bench import add_external, episodes_by_split, load_pair, read_index
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
    assert {"clean", "swap", "temporal", "pixel", "physics", "contact", "aoc", "dream"} <= families


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


def test_rebuild_skips_finished_shards_and_restores_lost_ones(collection, bench):
    rows = read_index(bench)
    shard = bench / rows[0]["file"]
    before = load_pair(bench, rows[0])["video"]
    shard.unlink()
    again = build_bench(collection, bench, heldout_source="pickplace_can_ur5e", progress=False)
    assert [r["pair_id"] for r in again] == [r["pair_id"] for r in rows]
    assert np.array_equal(load_pair(bench, rows[0])["video"], before)  # deterministic


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
