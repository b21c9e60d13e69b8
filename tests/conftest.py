import os

os.environ.setdefault("MUJOCO_GL", "egl")

import numpy as np
import pytest


@pytest.fixture(scope="session", autouse=True)
def sb3_log_folder(tmp_path_factory):
    """Stable-Baselines3 makes a log folder for every model it builds, in the system's temp folder unless
    SB3_LOGDIR names one: keep the test suite's inside pytest's own temporary folder."""
    os.environ.setdefault("SB3_LOGDIR", str(tmp_path_factory.mktemp("sb3")))


@pytest.fixture(scope="session")
def collection(tmp_path_factory):
    """A tiny real collection: two episodes (nominal + one failure mode) of every env source, 64x64."""
    from roboalign_env.sim.collect import collect, plan_episodes
    from roboalign_env.sim.sources import ALL_SOURCES

    root = tmp_path_factory.mktemp("collection")
    specs = plan_episodes(sorted(ALL_SOURCES), 2)
    collect(root, specs, workers=1, progress=False)
    return root


def renamed_copy(collection, folder):
    """A second collection in ``folder``: every episode of ``collection`` under a new id (``<id>-copy``), as
    pooled collections must not repeat an id. Returns ``folder``."""
    import json

    from roboalign_env.data.episodes import read_manifest

    (folder / "episodes").mkdir(parents=True)
    rows = []
    for row in read_manifest(collection):
        path = f"episodes/{row['episode_id']}-copy.npz"
        (folder / path).write_bytes((collection / row["path"]).read_bytes())
        rows.append({**row, "episode_id": row["episode_id"] + "-copy", "path": path})
    (folder / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return folder


def lift_trace(n: int = 24, grasp_at: int = 8, lift_per_frame: float = 0.02, rest_z: float = 0.82) -> dict:
    """A hand-built trace of a clean lift: approach, grasp at ``grasp_at``, lift, success at the end."""
    obj = np.zeros((n, 1, 3))
    obj[:, 0] = [0.0, 0.0, rest_z]
    eef = np.zeros((n, 3))
    grasp_at = min(grasp_at, n)
    approach = np.linspace(0.2, 0.0, grasp_at)
    eef[:grasp_at] = np.stack([np.zeros(grasp_at), np.zeros(grasp_at), rest_z + approach], -1)
    if grasp_at < n:
        eef[grasp_at:, 2] = rest_z + lift_per_frame * np.arange(n - grasp_at)
        obj[grasp_at:, 0, 2] = eef[grasp_at:, 2]
    held = np.arange(n) >= grasp_at
    height = obj[:, 0, 2] - rest_z
    return {
        "eef_pos": eef,
        "object_pos": obj,
        "gripper_opening": np.where(held, 0.05, 0.08),
        "grasp": held[:, None].copy(),
        "gripper_contact": held[:, None].copy(),
        "robot_contact": held[:, None].copy(),
        "support_contact": (height < 0.005)[:, None],
        "support_penetration": np.full((n, 1), 0.001),
        "robot_penetration": np.where(held, 0.001, 0.0)[:, None],
        "visible": np.ones((n, 1), bool),
        "success": height > 0.04,
        "progress": np.clip(height / 0.04, 0, 1),
    }


@pytest.fixture
def clean_lift():
    return lift_trace()


TINY_TOKENIZER = dict(channels=(8, 16, 32), dynamics_channels=32, levels=(5, 5, 3))
"""A tokenizer config small enough for tests (64x64 frames, 75 codes)."""
TINY_TRANSFORMER = dict(codebook_size=75, hidden_size=32, num_layers=2, num_heads=2, intermediate_size=64)
"""A transformer config for :data:`TINY_TOKENIZER`'s codes."""


def tiny_world_model(folder, moving: bool = False):
    """An untrained 64x64 world model saved in ``folder`` (returns the folder). Untrained, its frames equal
    their context frame; ``moving`` gives the tokenizer's change head random weights, so that they do not."""
    import torch

    from roboalign_env.models.tokenizer import TokenizerConfig, VideoTokenizer
    from roboalign_env.models.transformer import DynamicsTransformer, DynamicsTransformerConfig
    from roboalign_env.models.world_model import WorldModel

    torch.manual_seed(0)
    tok = VideoTokenizer(TokenizerConfig(**TINY_TOKENIZER))
    tf = DynamicsTransformer(DynamicsTransformerConfig(**TINY_TRANSFORMER))
    if moving:
        torch.nn.init.normal_(tok.dynamics_decoder.out[-2].weight, std=0.5)
    return WorldModel(tok, tf).eval().save(folder)
