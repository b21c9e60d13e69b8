"""The student reward model: a compact, fast six-dimension scorer distilled from the teacher judge.

Following the paper: a text encoder that is a 4-layer pre-norm Transformer with learnable [CLS] and
positional embeddings (256-d, GELU, dropout 0.2; :class:`~roboalign_env.models.text.TextEncoder`), a
compact video encoder (a linear ``patch`` x ``patch`` patch embedding per frame, a small CNN on the embedding and its
difference to the previous frame's, one Transformer layer over time), fusion by joint attention (the instruction
enters the temporal Transformer as a token next to a [CLS] token) followed by an MLP over the
[CLS] output and the instruction vector, and six heads (categoricals over each dimension's levels,
like the teacher's, so it can be distilled from the teacher's soft outputs).

With ``read_actions`` (what ``roboalign distill`` trains) each frame's token also gets the
embedding of the actions that led to it (:class:`~roboalign_env.models.scoring.StepActions`, as in
the teacher), so a video that does not follow its commands can score low Action-Outcome
Consistency; videos without actions still score. Without it (students distilled before) actions are
accepted and not read.

Distillation losses (:func:`distill_loss`):

- ``kl``: temperature-scaled KL from the teacher's level distributions to the student's,
  ``T^2 * sum_k KL(softmax(log p_teacher_k / T) || softmax(z_student_k / T))``;
- ``huber``: the paper's dimension-weighted Huber loss on normalized scores (expected score / max),
  weights ``w_k = max_k / 10`` (each dimension's share of the aggregate), delta 0.1.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from roboalign_env.models.judge import register, score_with
from roboalign_env.models.scoring import (
    PatchFrameEncoder,
    ScoreHeads,
    Scores,
    StepActions,
    VideoTower,
    normalized_scores,
)
from roboalign_env.models.text import TextEncoder
from roboalign_env.rubric import MAX_SCORES, TOTAL

LOSSES = ("kl", "huber")


class StudentRewardConfig(PretrainedConfig):
    model_type = "roboalign_student"

    def __init__(self, image_size: int = 64, max_frames: int = 48, widths=(24, 32, 64), video_dim: int = 128,
                 video_layers: int = 1, text_dim: int = 256, text_layers: int = 4, text_ffn: int = 512,
                 text_vocab: int = 1024, dropout: float = 0.2, read_actions: bool = False, patch: int = 4, **kwargs):
        super().__init__(**kwargs)
        self.read_actions, self.patch = read_actions, patch
        self.image_size, self.max_frames, self.widths = image_size, max_frames, list(widths)
        self.video_dim, self.video_layers = video_dim, video_layers
        self.text_dim, self.text_layers, self.text_ffn, self.text_vocab = text_dim, text_layers, text_ffn, text_vocab
        self.dropout = dropout


class StudentReward(PreTrainedModel):
    config_class = StudentRewardConfig
    base_model_prefix = "student"
    main_input_name = "video"

    def __init__(self, config: StudentRewardConfig):
        super().__init__(config)
        c = config
        self.text = TextEncoder(c.text_vocab, c.text_dim, c.text_layers, 4, c.text_ffn, c.dropout)
        self.tower = VideoTower(PatchFrameEncoder(c.widths, c.video_dim, c.image_size, c.patch), c.video_dim, c.video_layers,
                                4, 2 * c.video_dim, 0.1, c.max_frames)
        self.text_token = nn.Linear(c.text_dim, c.video_dim)
        self.actions = StepActions(c.video_dim) if c.read_actions else None
        self.cls = nn.Parameter(torch.zeros(1, 1, c.video_dim))
        nn.init.normal_(self.cls, std=0.02)
        self.fuse = nn.Sequential(nn.Linear(c.video_dim + c.text_dim, c.text_dim), nn.GELU(), nn.Dropout(c.dropout))
        self.heads = ScoreHeads(c.text_dim)
        self.post_init()

    def _init_weights(self, module):  # keep torch's default initialization
        pass

    def encode_text(self, instructions: list[str]) -> torch.Tensor:
        """Hashed word ids (N, L), what ``forward`` takes as ``text``."""
        return self.text.tokenize(instructions)

    def forward(self, video: torch.Tensor, mask: torch.Tensor, initial: torch.Tensor, text: torch.Tensor,
                actions=None, action_mask=None) -> Scores:
        """Same inputs as the teacher's ``forward``."""
        return self.score_tokens(self.tower.frame_tokens(video, initial), mask, self.text_features(text), actions, action_mask)

    def text_features(self, text: torch.Tensor) -> torch.Tensor:
        """(N, text_dim) instruction vectors from :meth:`encode_text`'s word ids."""
        distinct, inverse = torch.unique(text, dim=0, return_inverse=True)  # each instruction encoded once
        return self.text(distinct)[inverse]

    def score_tokens(self, tokens: torch.Tensor, mask: torch.Tensor, words: torch.Tensor,
                     actions=None, action_mask=None) -> Scores:
        """Scores from frame tokens (N, T + 1, dim) (``tower.frame_tokens``; a caller that sees
        frames one at a time can build them incrementally) and :meth:`text_features`."""
        n = tokens.shape[0]
        prefix = torch.cat([self.cls.expand(n, -1, -1), self.text_token(words)[:, None]], dim=1)
        if self.actions is not None:
            tokens = tokens + self.actions(actions, action_mask, mask)
        out = self.tower.fuse(tokens, mask, prefix)
        return Scores(self.heads(self.fuse(torch.cat([out[:, 0], words], dim=-1))))

    @torch.no_grad()
    def score(self, videos, instructions, initial_frames=None, actions=None) -> Scores:
        """Score videos (uint8 (T, H, W, 3) / (N, T, H, W, 3), or float (N, T, 3, H, W)) against
        instructions; ``actions`` as for the teacher's :meth:`~roboalign_env.models.judge.RoboAlignJudge.score`."""
        return score_with(self, videos, instructions, initial_frames, actions)


def distill_loss(student: Scores, teacher_log_probs: list[torch.Tensor], kind: str = "kl",
                 temperature: float = 2.0, delta: float = 0.1) -> torch.Tensor:
    """Distillation loss of the student's scores against the teacher's level log-probabilities."""
    if kind == "kl":
        loss = 0.0
        for z, lp in zip(student.logits, teacher_log_probs):
            target = F.log_softmax(lp.float() / temperature, dim=-1)
            pred = F.log_softmax(z.float() / temperature, dim=-1)
            loss = loss + temperature**2 * F.kl_div(pred, target, log_target=True, reduction="batchmean")
        return loss
    if kind == "huber":
        levels = [torch.arange(lp.shape[-1], dtype=torch.float32, device=lp.device) for lp in teacher_log_probs]
        t_expected = torch.stack([(lp.float().exp() * lv).sum(-1) for lp, lv in zip(teacher_log_probs, levels)], -1)
        top = torch.tensor(MAX_SCORES, dtype=torch.float32, device=t_expected.device)
        per = F.huber_loss(normalized_scores(student.expected), t_expected / top, delta=delta, reduction="none")
        return (per * (top / TOTAL)).sum(-1).mean() / delta  # / delta: gradients on the same scale as KL's
    raise ValueError(f"distillation loss {kind!r}; expected one of {LOSSES}")


register(StudentRewardConfig, StudentReward)
