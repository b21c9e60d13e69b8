"""Pieces every six-dimension scorer shares: a frame+time video tower and score heads.

The teacher judge (:mod:`roboalign_env.models.judge`) and the student reward
(:mod:`roboalign_env.models.student`) differ in size and text encoder, not in what goes in or what
comes out, so both take videos through :func:`roboalign_env.data.videos.prepare_videos` and end in
:class:`ScoreHeads`.

Videos in: one video ``(T, H, W, 3)`` uint8, a list of such videos (lengths may differ), a batch
``(N, T, H, W, 3)`` uint8, or a batch ``(N, T, 3, H, W)`` float in [0, 1] (what a world model
decodes). Scores out: per dimension a categorical distribution over the levels ``0..max``, its
expected value and argmax, and the normalized aggregate (sum of expected scores / 10).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from roboalign_env.rubric import DIMENSIONS, MAX_SCORES, aggregate


class FrameEncoder(nn.Module):
    """Frame tokens from each frame and its difference to the previous frame, in two steps so that
    a caller that sees frames one at a time can keep each frame's embedding:

    - :meth:`embed` maps frames to an embedding ``e`` in which differences stay differences;
    - :meth:`tokens` runs a CNN on ``[e, 2 (e - e_prev)]`` down to a 4x4 map, flattened (not
      pooled, so where things are stays in the vector) and projected.

    This full encoder's embedding is the frame itself in [-1, 1] (the CNN sees the frame and 4x
    its pixel difference); stride-2 convolutions take ``image_size`` down to 4x4.
    """

    def __init__(self, widths: Sequence[int], dim: int, image_size: int = 64):
        super().__init__()
        self.cnn, cin = _conv_stack(6, widths, image_size)
        self.proj = nn.Linear(cin * 16, dim)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        """(M, 3, H, W) in [0, 1] -> (M, C, h, w)."""
        return frames * 2 - 1

    def tokens(self, embedded: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
        """(M, C, h, w) embeddings of frames and of their previous frames -> (M, dim)."""
        return self.proj(self.cnn(torch.cat([embedded, (embedded - previous) * 2], dim=1)).flatten(1))

    def sequence_tokens(self, initial: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """Embeddings of initial frames (N, C, h, w) and of videos (N, T, C, h, w) -> tokens (N, T + 1, dim)
        of ``[initial, frame_0, ..., frame_{T-1}]``; the initial frame and frame 0 are their own
        previous frames, frame k's is frame k - 1."""
        n, t = embedded.shape[:2]
        seq = torch.cat([initial[:, None], embedded], dim=1)
        previous = torch.cat([initial[:, None], embedded[:, :1], embedded[:, :-1]], dim=1)
        return self.tokens(seq.flatten(0, 1), previous.flatten(0, 1)).unflatten(0, (n, t + 1))


class PatchFrameEncoder(FrameEncoder):
    """The cheap frame encoder: its embedding is a linear ``patch`` x ``patch`` patch embedding
    (linear, so the embedding of a frame difference is the difference of the embeddings), and
    the CNN starts from that quarter-resolution map. No full-resolution work but the embedding.
    """

    def __init__(self, widths: Sequence[int], dim: int, image_size: int = 64, patch: int = 4):
        nn.Module.__init__(self)
        self.patch = nn.Conv2d(3, widths[0], patch, patch, bias=False)
        self.cnn, cin = _conv_stack(2 * widths[0], widths[1:], image_size // patch)
        self.proj = nn.Linear(cin * 16, dim)

    def embed(self, frames: torch.Tensor) -> torch.Tensor:
        # patch(2 x - 1) in one convolution: weights 2 W, bias -sum(W) (the patch embedding has no bias)
        weight = self.patch.weight
        return F.conv2d(frames, 2 * weight, -weight.sum((1, 2, 3)), self.patch.stride)

    def sequence_tokens(self, initial: torch.Tensor, embedded: torch.Tensor) -> torch.Tensor:
        """As :meth:`FrameEncoder.sequence_tokens`, with each frame through the first convolution once.

        That convolution reads ``[e, 2 (e - e_prev)]``; being linear, it is a convolution of ``e``
        (weights ``W_frame + 2 W_difference``) plus one of ``e_prev`` (``-2 W_difference``). One
        convolution with both weight sets gives each frame's part as the current frame and as the
        previous one, and a frame's output is its own part plus its previous frame's. Behind a patch
        embedding that output (stride 2, no more channels than the convolution reads) is smaller than
        its input, so skipping the inputs' concatenation and difference saves more than the doubled
        output costs; behind the full encoder's full-resolution frames it is the other way round.
        """
        n, t = embedded.shape[:2]
        first = self.cnn[0]
        frame, difference = first.weight.chunk(2, dim=1)
        weight = torch.cat([frame + 2 * difference, -2 * difference])
        bias = torch.cat([first.bias, torch.zeros_like(first.bias)])

        def parts(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            return F.conv2d(x, weight, bias, first.stride, first.padding).chunk(2, dim=1)

        own, back = (x.unflatten(0, (n, t)) for x in parts(embedded.flatten(0, 1)))
        initial_own, initial_back = parts(initial)
        outputs = torch.cat([(initial_own + initial_back)[:, None], own + torch.cat([back[:, :1], back[:, :-1]], dim=1)], dim=1)
        return self.proj(self.cnn[1:](outputs.flatten(0, 1)).flatten(1)).unflatten(0, (n, t + 1))


def _conv_stack(cin: int, widths: Sequence[int], size: int) -> tuple[nn.Sequential, int]:
    """3x3 convolutions (stride 2 while the map is larger than 4x4) + GroupNorm + GELU; ends at 4x4."""
    layers, start = [], size
    for w in widths:
        stride = 2 if size > 4 else 1
        layers += [nn.Conv2d(cin, w, 3, stride, 1), nn.GroupNorm(min(8, w), w), nn.GELU()]
        size //= stride
        cin = w
    if size != 4:
        raise ValueError(f"conv widths {list(widths)} take {start} px to {size}, not 4")
    return nn.Sequential(*layers), cin


class VideoTower(nn.Module):
    """Spatio-temporal video encoder: a frame encoder per frame, then a Transformer over time.

    The sequence is ``[prefix tokens..., initial frame, frame_0, ..., frame_{T-1}]`` with learned
    temporal positions; padded frames are masked out. The initial frame and frame 0 are their own
    "previous" frames (zero difference). Returns the prefix tokens' outputs.
    """

    def __init__(self, frames: nn.Module, dim: int, layers: int, heads: int, ffn: int, dropout: float, max_frames: int):
        super().__init__()
        self.frames = frames
        self.time = nn.Parameter(torch.zeros(1, max_frames + 1, dim))
        nn.init.normal_(self.time, std=0.02)
        layer = nn.TransformerEncoderLayer(dim, heads, ffn, dropout, activation="gelu", batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(dim)

    def frame_tokens(self, video: torch.Tensor, initial: torch.Tensor) -> torch.Tensor:
        """video (N, T, 3, H, W), initial (N, 3, H, W) -> (N, T + 1, dim): the initial frame's token, then the frames'.

        Frames are embedded where they are (no full-resolution copy); the initial frame and frame 0 are
        their own previous frames, frame k's is frame k - 1.
        """
        n, t = video.shape[:2]
        return self.frames.sequence_tokens(self.frames.embed(initial), self.frames.embed(video.flatten(0, 1)).unflatten(0, (n, t)))

    def fuse(self, tokens: torch.Tensor, mask: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """Frame tokens (N, T + 1, dim) from :meth:`frame_tokens`, mask (N, T), prefix (N, P, dim) -> (N, P, dim)."""
        n, p = tokens.shape[0], prefix.shape[1]
        seq = torch.cat([prefix, tokens + self.time[:, : tokens.shape[1]]], dim=1)
        keep = torch.cat([torch.ones(n, p + 1, dtype=torch.bool, device=mask.device), mask], dim=1)
        out = self.encoder(seq, src_key_padding_mask=~keep)
        return self.norm(out[:, :p])

    def forward(self, video: torch.Tensor, mask: torch.Tensor, initial: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """video (N, T, 3, H, W), mask (N, T), initial (N, 3, H, W), prefix (N, P, dim) -> (N, P, dim)."""
        return self.fuse(self.frame_tokens(video, initial), mask, prefix)


ACTION_DIM = 7


class StepActions(nn.Module):
    """Per-frame action embeddings, added to a video tower's frame tokens so that each frame is
    read beside the command that led to it (what Action-Outcome Consistency asks).

    Tokens are ``[initial, frame_0, ..., frame_{T-1}]``; the A actions of a T-frame video span its
    T - 1 transitions (A = (T - 1) x stride for a strided clip), action j belonging to the
    transition into frame ``1 + floor(j (T - 1) / A)``. A frame gets the mean embedding of its
    actions. A video given without actions gets the learned ``absent`` embedding on every frame
    after the first, so the scorer knows it cannot compare.
    """

    def __init__(self, dim: int):
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(ACTION_DIM, dim), nn.GELU(), nn.Linear(dim, dim))
        self.absent = nn.Parameter(torch.zeros(dim))

    def forward(self, actions: torch.Tensor | None, action_mask: torch.Tensor | None, frame_mask: torch.Tensor) -> torch.Tensor:
        """actions (N, A, 7) with mask (N, A) (or None), frame mask (N, T) -> (N, T + 1, dim)."""
        n, t = frame_mask.shape
        frames = frame_mask.sum(1)
        after_first = (torch.arange(t + 1, device=frame_mask.device)[None] >= 2) & \
            (torch.arange(t + 1, device=frame_mask.device)[None] <= frames[:, None])
        out = torch.zeros(n, t + 1, self.absent.shape[0], device=frame_mask.device, dtype=self.absent.dtype)
        count = torch.zeros(n, t + 1, device=frame_mask.device, dtype=self.absent.dtype)
        given = torch.zeros(n, dtype=torch.bool, device=frame_mask.device)
        if actions is not None and actions.shape[1] > 0:
            action_mask = action_mask.bool()
            num = action_mask.sum(1)
            given = num > 0
            j = torch.arange(actions.shape[1], device=actions.device)[None]
            slot = 1 + torch.div(j * (frames[:, None] - 1).clamp(min=1), num[:, None].clamp(min=1), rounding_mode="floor")
            slot = torch.where(action_mask, slot.clamp(max=t) + 1, 0)  # token index; masked actions land on 0, dropped below
            weight = action_mask.to(out.dtype)
            out.scatter_add_(1, slot[..., None].expand(-1, -1, out.shape[-1]), self.mlp(actions.to(out.dtype)) * weight[..., None])
            count.scatter_add_(1, slot, weight)
            out[:, 0] = 0
            out = out / count.clamp(min=1)[..., None]
        absent = (~given)[:, None] & after_first
        return out + absent[..., None].to(out.dtype) * self.absent


class ScoreHeads(nn.Module):
    """Six linear heads: logits over the levels ``0..MAX_SCORES[k]`` of each dimension."""

    def __init__(self, dim: int):
        super().__init__()
        self.heads = nn.ModuleList(nn.Linear(dim, top + 1) for top in MAX_SCORES)

    def forward(self, features: torch.Tensor) -> list[torch.Tensor]:
        """features (N, dim) or (N, 6, dim) (one vector per dimension) -> six (N, levels) logits."""
        if features.ndim == 2:
            return [head(features) for head in self.heads]
        return [head(features[:, k]) for k, head in enumerate(self.heads)]


@dataclass
class Scores:
    """A scorer's output for N videos (tensors; ``as_dicts`` gives plain Python numbers)."""

    logits: list[torch.Tensor]
    """Six (N, levels) tensors of logits."""

    @property
    def probs(self) -> list[torch.Tensor]:
        return [lg.float().softmax(-1) for lg in self.logits]

    @property
    def expected(self) -> torch.Tensor:
        """(N, 6) expected score per dimension."""
        return torch.stack([(p * torch.arange(p.shape[-1], dtype=p.dtype, device=p.device)).sum(-1) for p in self.probs], -1)

    @property
    def argmax(self) -> torch.Tensor:
        """(N, 6) most likely level per dimension."""
        return torch.stack([lg.argmax(-1) for lg in self.logits], -1)

    @property
    def aggregate(self) -> torch.Tensor:
        """(N,) normalized aggregate: sum of the expected scores / 10, in [0, 1]."""
        return aggregate(self.expected)

    def as_dicts(self) -> list[dict]:
        expected, argmax, agg = self.expected.tolist(), self.argmax.tolist(), self.aggregate.tolist()
        probs = [p.tolist() for p in self.probs]
        return [{
            "scores": {d: round(expected[i][k], 4) for k, d in enumerate(DIMENSIONS)},
            "levels": {d: int(argmax[i][k]) for k, d in enumerate(DIMENSIONS)},
            "probs": {d: [round(x, 4) for x in probs[k][i]] for k, d in enumerate(DIMENSIONS)},
            "aggregate": round(agg[i], 4),
        } for i in range(len(agg))]


def normalized_scores(expected: torch.Tensor) -> torch.Tensor:
    """(N, 6) expected scores -> each divided by its dimension's maximum, in [0, 1]."""
    return expected / torch.tensor(MAX_SCORES, dtype=expected.dtype, device=expected.device)
