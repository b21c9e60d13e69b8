"""Streaming T=8 clips from a real collection."""

import numpy as np
import pytest
import torch
from conftest import renamed_copy

from roboalign_env.data.clips import ClipStream, augment_clip
from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.splits import split_episode_ids

pytestmark = pytest.mark.sim


def test_clips_follow_the_sampling_protocol(collection):
    stream = ClipStream(collection, clip_len=8, seed=0)
    rng = np.random.default_rng(0)
    episodes = {r["episode_id"]: load_episode(collection / r["path"]) for r in read_manifest(collection)}
    for _ in range(10):
        clip = stream.sample(rng)
        assert clip["frames"].shape == (8, 3, 64, 64) and clip["actions"].shape == (8, 7)
        assert 0.0 <= clip["frames"].min() and clip["frames"].max() <= 1.0
        first = (clip["frames"][0].permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()
        # The clip is a real stride-1 window: its frames and actions line up with some episode.
        matches = [(ep, s) for ep in episodes.values() for s in range(ep.num_steps - 7)
                   if np.array_equal(ep.frames[s], first) and np.allclose(ep.actions[s : s + 8], clip["actions"].numpy())]
        assert matches


def test_stream_filters_episodes_and_rejects_bad_requests(collection):
    rows = read_manifest(collection)
    stream = ClipStream(collection, episode_ids=[rows[0]["episode_id"]])
    assert len(stream.rows) == 1
    with pytest.raises(ValueError, match="no episodes"):
        ClipStream(collection, episode_ids=["nope"])
    with pytest.raises(ValueError, match="shorter than clip_len"):
        ClipStream(collection, clip_len=1000)


def test_stream_pools_collections_and_rejects_repeated_ids(collection, tmp_path):
    rows = read_manifest(collection)
    other = renamed_copy(collection, tmp_path / "other")
    pooled = ClipStream([collection, other], clip_len=8)
    assert len(pooled.rows) == 2 * len(rows)
    only_other = ClipStream([collection, other], episode_ids=[rows[0]["episode_id"] + "-copy"])
    clip = only_other.sample(np.random.default_rng(0))  # read from the second folder
    first = load_episode(collection / rows[0]["path"])
    assert any(np.allclose(first.actions[s : s + 8], clip["actions"].numpy()) for s in range(first.num_steps - 7))
    with pytest.raises(ValueError, match="expected collections with distinct episodes"):
        ClipStream([collection, collection])
    for split in ("train", "val", "test"):  # the splits of pooled collections are each one's split
        pooled_ids = split_episode_ids([collection, other], split)
        assert pooled_ids == split_episode_ids(collection, split) + split_episode_ids(other, split)
    assert len(split_episode_ids([collection, other], "train")) > len(split_episode_ids(collection, "train"))


def test_augmentation_shares_parameters_across_the_clip():
    frame = torch.rand(1, 3, 64, 64)
    clip = frame.repeat(8, 1, 1, 1)
    out = augment_clip(clip, torch.Generator().manual_seed(3))
    assert not torch.allclose(out[0], frame[0])  # it did change the pixels
    assert torch.allclose(out, out[:1].expand_as(out))  # identically for every frame
    assert out.min() >= 0 and out.max() <= 1
