"""The GRPO run's own figure, next to the shared loop's ``curves.png``."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_grpo(metrics: str | Path, png: str | Path) -> Path | None:
    """The three curves a person checks: reward (and its 10-update mean), KL to the reference, and
    the student's agreement with the teacher on the policy's own fresh rollouts (with the teacher's
    aggregate on them); written next to the loop's all-metrics ``curves.png``."""
    from roboalign_env.eval.media import pyplot

    plt = pyplot()

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
