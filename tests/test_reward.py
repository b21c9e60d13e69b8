"""The environment's judge reward: incremental frame encoding equals scoring each window afresh."""

import pytest
import torch

from roboalign_env.assets import DEFAULT_MODEL
from roboalign_env.envs.reward import JudgeReward, RewardConfig
from roboalign_env.models.registry import load_scorer
from roboalign_env.models.student import StudentReward, StudentRewardConfig


def action_reading_student():
    torch.manual_seed(0)
    return StudentReward(StudentRewardConfig(read_actions=True)).eval()


@pytest.mark.parametrize("make_student", [lambda: load_scorer(DEFAULT_MODEL / "student"), action_reading_student],
                         ids=["shipped", "reads_actions"])
def test_incremental_scores_equal_the_student_on_each_window(make_student):
    """Three rollouts, a 4-frame window that rolls over, and row 1 restarting mid-way: every
    step's scores must equal the student's ``score`` of [initial frame, last <= 4 frames] with
    the actions between those frames."""
    student = make_student()
    judge = JudgeReward(student, 3, RewardConfig(frames=4))
    frames = torch.rand(3, 9, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    actions = torch.rand(3, 9, 7, generator=torch.Generator().manual_seed(1)) * 2 - 1
    sent = [[] for _ in range(3)]
    texts = ["lift the red cube", "open the door", "stack the red cube on the green cube"]
    histories = [[frames[i, 0]] for i in range(3)]
    initial = list(frames[:, 0])
    judge.reset_rows([0, 1, 2], frames[:, 0], texts)
    for t in range(1, 9):
        if t == 5:  # row 1 starts a new episode from frame 5 with another instruction
            texts[1] = "pick up the can and place it in the bin"
            judge.reset_rows([1], frames[1:2, 5], texts[1:2])
            histories[1], initial[1], sent[1] = [frames[1, 5]], frames[1, 5], []
            continue
        _, scores, _ = judge.step(frames[:, t], actions[:, t], torch.zeros(3, dtype=torch.bool))
        for i in range(3):
            histories[i].append(frames[i, t])
            sent[i].append(actions[i, t])
            window = torch.stack(histories[i][-4:])[None]
            between = torch.stack(sent[i][-(len(window[0]) - 1):])
            expected = student.score(window, texts[i], initial_frames=[initial[i]], actions=[between]).expected
            torch.testing.assert_close(scores[i], expected[0], atol=2e-4, rtol=0)
    assert judge.length.tolist() == [8, 4, 8]  # frames seen: rows 0 and 2 never restarted
