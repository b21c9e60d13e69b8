"""State probe: privileged state read off single real frames, and oracle labels for any video.

The probe is a small CNN trained on real robosuite frames (never on bench labels or judge outputs)
to predict, per frame: the source (which scene and robot), the end-effector position, the gripper
opening, the task objects' positions (up to ``MAX_OBJECTS``, metres, world frame), per object
robot-contact / grasp / support-contact flags, task success and task progress.

Applied to a video (:func:`probe_trace`) it builds the *displayed trace* the oracle reads, and
:func:`probe_labels` labels it with the very rules the bench uses
(:func:`roboalign_env.sim.oracle.label_trace`). What a frame cannot give is derived or fixed:

- positions are median-filtered over 3 frames (removes single-frame noise, keeps real jumps), and an
  object's position is then held until it moves by more than ``DEADBAND`` (the oracle's drift and
  stillness rules work at millimetres, below the probe's error: without the hold, estimation noise
  reads as an object drifting by itself; real jumps and carried objects still move);
- ``visible`` is all True and both penetration depths are 0: the probe only sees clean frames in
  training, so vanish, sink and pass-through violations are outside what it can report;
- ``rest_z`` is each object's predicted height in the first frame;
- the instruction kind comes from the instruction's relation to the predicted source's instruction
  lists (exact match, else the nearest known instruction by MiniLM similarity);
- the failure intent is unknown from pixels: ``nominal``;
- temporal consistency is 0 when the end effector jumps, or the mean frame brightness changes,
  by more than the largest step seen in the source's real training episodes times ``JUMP_MARGIN``.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn
from transformers import PretrainedConfig, PreTrainedModel

from roboalign_env.data.videos import prepare_videos
from roboalign_env.models.judge import register
from roboalign_env.models.scoring import FrameEncoder
from roboalign_env.sim.oracle import Labels, label_trace

MAX_OBJECTS = 2
FLAGS = ("robot_contact", "grasp", "support_contact")
JUMP_MARGIN = 3.0
DEADBAND = 0.03  # metres: about twice the probe's median held-out object position error


class StateProbeConfig(PretrainedConfig):
    model_type = "roboalign_state_probe"

    def __init__(self, image_size: int = 64, widths=(32, 64, 128, 128), dim: int = 256, sources=(),
                 objects_per_source=(), position_mean=(0.0, 0.0, 0.0), position_std=(1.0, 1.0, 1.0),
                 gripper_mean: float = 0.0, gripper_std: float = 1.0, eef_step_max=(), brightness_step_max=(),
                 **kwargs):
        super().__init__(**kwargs)
        self.image_size, self.widths, self.dim = image_size, list(widths), dim
        self.sources, self.objects_per_source = list(sources), list(objects_per_source)
        self.position_mean, self.position_std = list(position_mean), list(position_std)
        self.gripper_mean, self.gripper_std = gripper_mean, gripper_std
        self.eef_step_max, self.brightness_step_max = list(eef_step_max), list(brightness_step_max)


class StateProbe(PreTrainedModel):
    config_class = StateProbeConfig
    base_model_prefix = "probe"
    main_input_name = "frames"

    def __init__(self, config: StateProbeConfig):
        super().__init__(config)
        c = config
        self.encoder = FrameEncoder(c.widths, c.dim, c.image_size)
        self.trunk = nn.Sequential(nn.GELU(), nn.Linear(c.dim, c.dim), nn.GELU())
        # outputs: source logits | eef xyz | gripper | objects xyz | flags | success | progress
        self.sizes = [len(c.sources), 3, 1, 3 * MAX_OBJECTS, len(FLAGS) * MAX_OBJECTS, 1, 1]
        self.head = nn.Linear(c.dim, sum(self.sizes))
        self.post_init()

    def _init_weights(self, module):  # keep torch's default initialization
        pass

    def forward(self, frames: torch.Tensor) -> dict[str, torch.Tensor]:
        """frames (M, 3, H, W) in [0, 1] -> raw outputs (positions normalized, flags as logits)."""
        embedded = self.encoder.embed(frames)  # each frame is its own previous frame: a still image
        out = self.head(self.trunk(self.encoder.tokens(embedded, embedded))).float()
        parts = torch.split(out, self.sizes, dim=-1)
        names = ("source", "eef", "gripper", "objects", "flags", "success", "progress")
        raw = dict(zip(names, parts))
        raw["objects"] = raw["objects"].view(-1, MAX_OBJECTS, 3)
        raw["flags"] = raw["flags"].view(-1, MAX_OBJECTS, len(FLAGS))
        return raw

    def _denormalize(self, x: torch.Tensor) -> torch.Tensor:
        c = self.config
        return x * torch.tensor(c.position_std, device=x.device) + torch.tensor(c.position_mean, device=x.device)

    @torch.no_grad()
    def read_frames(self, frames: torch.Tensor) -> dict[str, np.ndarray]:
        """Physical predictions for frames (M, 3, H, W) in [0, 1]: metres, probabilities, source ids."""
        was_training = self.training
        self.eval()
        raw = self(frames.to(next(self.parameters()).device))
        self.train(was_training)
        c = self.config
        return {
            "source": raw["source"].argmax(-1).cpu().numpy(),
            "eef_pos": self._denormalize(raw["eef"]).cpu().numpy(),
            "gripper_opening": (raw["gripper"][:, 0] * c.gripper_std + c.gripper_mean).cpu().numpy(),
            "object_pos": self._denormalize(raw["objects"]).cpu().numpy(),
            "flags": raw["flags"].sigmoid().cpu().numpy(),
            "success": raw["success"][:, 0].sigmoid().cpu().numpy(),
            "progress": raw["progress"][:, 0].clamp(0, 1).cpu().numpy(),
        }


def probe_trace(probe: StateProbe, video) -> tuple[dict[str, np.ndarray], str]:
    """The oracle trace of one video (``(T, H, W, 3)`` uint8 or ``(T, 3, H, W)`` float) and its source."""
    frames, _ = prepare_videos(video, probe.config.image_size, max_frames=10_000)
    if len(frames) != 1:
        raise ValueError(f"video: got a batch of {len(frames)}; the probe labels one video at a time")
    frames = frames[0]
    read = probe.read_frames(frames)
    source_id = int(np.bincount(read["source"]).argmax())
    k = probe.config.objects_per_source[source_id]
    flags = read["flags"][:, :k] >= 0.5
    t = len(frames)
    trace = {
        "eef_pos": _median3(read["eef_pos"]),
        "object_pos": _hold(_median3(read["object_pos"][:, :k]), DEADBAND),
        "gripper_opening": read["gripper_opening"],
        "robot_contact": flags[..., FLAGS.index("robot_contact")],
        "grasp": flags[..., FLAGS.index("grasp")],
        "support_contact": flags[..., FLAGS.index("support_contact")],
        "gripper_contact": flags[..., FLAGS.index("robot_contact")],
        "support_penetration": np.zeros((t, k)),
        "robot_penetration": np.zeros((t, k)),
        "visible": np.ones((t, k), bool),
        "success": read["success"] >= 0.5,
        "progress": read["progress"],
        "brightness": frames.mean(dim=(1, 2, 3)).numpy(),
    }
    return trace, probe.config.sources[source_id]


def _median3(x: np.ndarray) -> np.ndarray:
    """Median over each frame and its two neighbours (ends keep their value)."""
    if len(x) < 3:
        return x
    out = x.copy()
    out[1:-1] = np.median(np.stack([x[:-2], x[1:-1], x[2:]]), axis=0)
    return out


def _hold(pos: np.ndarray, band: float) -> np.ndarray:
    """Per object (axis 1), keep the last kept position until the estimate moves more than ``band`` from it."""
    out = pos.copy()
    for t in range(1, len(pos)):
        moved = np.linalg.norm(pos[t] - out[t - 1], axis=-1) > band
        out[t] = np.where(moved[:, None], pos[t], out[t - 1])
    return out


def instruction_kind(instruction: str, source: str) -> str:
    """``correct`` / ``near_miss`` / ``other_task`` for an instruction given the video's source
    (:func:`~roboalign_env.sim.sources.instruction_relation`); an instruction no source has takes the
    relation of the known one nearest to it in the sentence encoder's space."""
    from roboalign_env.sim.sources import SOURCES, instruction_relation

    relation = instruction_relation(instruction, source)
    if relation is not None:
        return relation
    from roboalign_env.models.text import minilm_embed

    texts = sorted({t.strip().lower() for s in SOURCES.values() for t in s.instructions}
                   | {t.strip().lower() for t in SOURCES[source].near_miss_instructions})
    sims = minilm_embed(texts) @ minilm_embed([instruction.strip().lower()])[0]
    return instruction_relation(texts[int(sims.argmax())], source)


def temporally_consistent(probe: StateProbe, trace: dict, source: str) -> bool:
    """No end-effector jump or brightness change beyond the source's real maximum times the margin."""
    i = probe.config.sources.index(source)
    eef_steps = np.linalg.norm(np.diff(trace["eef_pos"], axis=0), axis=-1)
    light_steps = np.abs(np.diff(trace["brightness"]))
    return bool((eef_steps <= JUMP_MARGIN * probe.config.eef_step_max[i]).all()
                and (light_steps <= JUMP_MARGIN * probe.config.brightness_step_max[i]).all())


def probe_labels(probe: StateProbe, video, instruction: str) -> tuple[Labels, dict]:
    """Oracle-style six-dimension labels of any video through the bench's oracle rules, plus the trace."""
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction: missing (got {instruction!r}); expected a non-empty string")
    trace, source = probe_trace(probe, video)
    rest_z = trace["object_pos"][0, :, 2]
    labels = label_trace(trace, rest_z, instruction_kind(instruction, source), "nominal",
                         temporally_consistent(probe, trace, source))
    return labels, {"source": source, **trace}


def label_videos(probe: StateProbe, videos) -> dict[str, np.ndarray]:
    """Probe labels of every video of a :class:`~roboalign_env.data.bench_cache.VideoSet`, shaped like
    a scorer's prediction (``argmax`` and ``expected`` are both the (N, 6) levels)."""
    from roboalign_env.rubric import DIMENSIONS

    levels = np.zeros((len(videos), len(DIMENSIONS)), np.int64)
    for i in range(len(videos)):
        labels, _ = probe_labels(probe, np.asarray(videos.video[i, : videos.length[i]]), videos.rows[i]["instruction"])
        levels[i] = [getattr(labels, d) for d in DIMENSIONS]
    return {"argmax": levels, "expected": levels.astype(float)}


register(StateProbeConfig, StateProbe)
