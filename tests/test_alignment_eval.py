"""eval-alignment's statistics and outputs on synthetic scores (no models)."""

import numpy as np
import pytest
import torch

from roboalign_env.eval.alignment import paired_bootstrap, plot_bars, summarize, write_videos
from roboalign_env.rubric import DIMENSIONS


def test_paired_bootstrap_on_known_differences():
    rng = np.random.default_rng(0)
    b = rng.uniform(0.5, 0.7, 40)
    shifted = paired_bootstrap(b + 0.1, b, resamples=2000)
    assert shifted["diff"] == pytest.approx(0.1)
    assert shifted["diff_ci95"] == pytest.approx([0.1, 0.1])  # a constant paired shift has no spread
    assert shifted["rel"] == pytest.approx(0.1 / b.mean()) and shifted["p_value"] == 0.0
    same = paired_bootstrap(b, b, resamples=2000)
    assert same["diff"] == 0.0 and same["p_value"] == 1.0
    noise = paired_bootstrap(b + rng.normal(0, 0.05, 40), b, resamples=2000)
    lo, hi = noise["diff_ci95"]
    assert lo < noise["diff"] < hi and lo < 0 < hi and noise["p_value"] > 0.05


def test_bootstrap_resamples_whole_episodes():
    # two episodes, each with 3 prompts that move together: only 2 independent units
    a = np.array([1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    b = np.zeros(6)
    per_prompt = paired_bootstrap(a, b, resamples=4000)
    per_episode = paired_bootstrap(a, b, clusters=np.array([0, 0, 0, 1, 1, 1]), resamples=4000)
    assert per_episode["clusters"] == 2 and per_prompt["clusters"] == 6
    width = lambda r: r["diff_ci95"][1] - r["diff_ci95"][0]  # noqa: E731
    assert width(per_episode) > width(per_prompt)
    assert per_episode["diff_ci95"] == pytest.approx([0.0, 1.0])  # both episodes drawn twice happens
    with pytest.raises(ValueError, match="equal-length"):
        paired_bootstrap(a, b[:3])


def test_summary_bars_and_video_are_written(tmp_path):
    rng = np.random.default_rng(1)
    n = 8
    def fake(shift):
        return {"teacher": np.clip(rng.uniform(0, 1, (n, 6)) + shift, 0, 1), "probe": rng.integers(0, 2, (n, 6)).astype(float),
                "psnr": rng.uniform(18, 20, n), "ssim": rng.uniform(0.7, 0.8, n), "lpips": rng.uniform(0.1, 0.2, n)}
    scores = {"sft": fake(0.0), "rlvr": fake(0.0), "r1": fake(0.3)}
    clusters = np.repeat(np.arange(4), 2)
    summary = summarize(scores, clusters, [("rlvr", "sft"), ("r1", "sft"), ("r1", "rlvr")], resamples=500)
    assert set(summary["comparisons"]) == {"rlvr_vs_sft", "r1_vs_sft", "r1_vs_rlvr"}
    r1 = summary["comparisons"]["r1_vs_sft"]
    assert r1["teacher_aggregate"]["diff"] > 0 and {f"teacher_{d}" for d in DIMENSIONS} <= r1.keys()
    assert summary["means"]["r1"]["teacher_aggregate"] == pytest.approx(scores["r1"]["teacher"].sum(1).mean() / 10)
    png = plot_bars(summary["per_model"], tmp_path / "bars.png", "ST-LPIPS (alex, shift-tolerant)")
    assert png.stat().st_size > 10_000
    prompts = {"real": torch.rand(2, 3, 3, 64, 64)}
    frames = {name: torch.rand(2, 3, 3, 64, 64) for name in scores}
    mp4 = write_videos(frames, prompts, tmp_path / "side.mp4", [0, 1])
    import imageio.v3 as iio

    video = iio.imread(mp4, index=None)
    assert video.shape[0] == 6 and video.shape[2] > 4 * 64 * 3  # 2 prompts x 3 frames; real + 3 models wide
    assert video.shape[1] >= 16 + 66 * 3  # a name strip over the frames
