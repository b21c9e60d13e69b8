"""The dream: N world-model rollouts and their judge, batched, behind both Gymnasium envs.

:class:`DreamCore` owns the world model (a :class:`~roboalign_env.models.world_model.Dream` with
one row per environment, SWR on by default), the student reward
(:class:`~roboalign_env.envs.reward.JudgeReward`) and the seed clips that episodes start from. The
single env is a core with one row; the vector env steps all rows in one forward pass and resets
rows one by one (autoreset) while the others go on.

Settings shared by every entry point (``gym.make`` / ``gym.make_vec`` keyword arguments) are the
fields of :class:`DreamSettings`.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from gymnasium import spaces

from roboalign_env.envs.monitor import HackMonitor
from roboalign_env.envs.reward import JudgeReward, RewardConfig, expect, is_int, is_real
from roboalign_env.envs.seeds import SeedClips
from roboalign_env.models.transformer import MODEL_WINDOW, Window, check_window
from roboalign_env.rubric import DIMENSIONS
from roboalign_env.sim.sources import ALL_SOURCES

IMAGE_SIZE = 64
ACTION_DIM = 7


def observation_space() -> spaces.Dict:
    """``image``: the current frame, uint8 (3, 64, 64) channel-first (what SB3's CNN policies
    take); ``task``: a one-hot over the four sources (which instruction family the episode
    follows; Gymnasium ``Text`` spaces cannot be fed to SB3, and the task is what a multi-task
    policy needs to know that the first frame does not always show)."""
    return spaces.Dict({
        "image": spaces.Box(0, 255, (3, IMAGE_SIZE, IMAGE_SIZE), np.uint8),
        "task": spaces.Box(0.0, 1.0, (len(ALL_SOURCES),), np.float32),
    })


def action_space() -> spaces.Box:
    """The OSC_POSE controller's normalized action: 3 position, 3 rotation, 1 gripper, in [-1, 1]."""
    return spaces.Box(-1.0, 1.0, (ACTION_DIM,), np.float32)


def check_actions(actions, shape: tuple[int, ...]) -> np.ndarray:
    """Actions of ``shape`` ((7,) for one env, (N, 7) for N) as float32 clipped to [-1, 1] (as
    robosuite and SB3 clip); anything but real numbers (bool, complex, strings, objects), NaN, inf or
    a wrong shape raises ``ValueError``."""
    try:
        array = np.asarray(actions)
    except (TypeError, ValueError) as err:  # ragged nested sequences
        raise ValueError(f"action: expected a real-valued array of shape {shape} in [-1, 1], got {actions!r} ({err})") from None
    if not (np.issubdtype(array.dtype, np.floating) or np.issubdtype(array.dtype, np.integer)):
        raise ValueError(f"action: expected real numbers (float or int) of shape {shape} in [-1, 1], got "
                         f"{type(actions).__name__} of dtype {array.dtype}")
    array = array.astype(np.float32)
    if array.shape != shape:
        raise ValueError(f"action: expected shape {shape} in [-1, 1], got shape {array.shape}")
    if not np.isfinite(array).all():
        raise ValueError(f"action: contains NaN or inf ({array.tolist()}); expected finite values in [-1, 1]")
    return np.clip(array, -1.0, 1.0)


class EpisodeClock:
    """A single env's episode bookkeeping (the dream's and the real one's): ``step()`` before
    ``reset()``, after termination or truncation, and any call after ``close()`` are errors; the env
    learns when a step reaches the registered step limit (``TimeLimit`` reports the truncation; the
    terminal reward needs it too)."""

    WHY = {"new": "reset() was never called", "terminated": "the episode terminated",
           "truncated": "the episode reached max_episode_steps (truncated)"}

    def __init__(self):
        self.state, self.steps = "new", 0

    def start(self) -> None:
        self.check_open("reset()")
        self.state, self.steps = "running", 0

    def tick(self, limit: int | None) -> bool:
        """Count a step; return whether it reaches the step ``limit`` (which ends the episode)."""
        self.check_open("step()")
        if self.state != "running":
            raise RuntimeError(f"step() called but {self.WHY[self.state]}; call reset() to start an episode")
        self.steps += 1
        if limit is not None and self.steps >= limit:
            self.state = "truncated"
            return True
        return False

    def end(self) -> None:
        self.state = "terminated"

    def close(self) -> None:
        self.state = "closed"

    def check_open(self, call: str) -> None:
        if self.state == "closed":
            raise RuntimeError(f"{call} called after close(); make a new environment")


def task_vector(source: str | None) -> np.ndarray:
    vec = np.zeros(len(ALL_SOURCES), np.float32)
    if source is not None:
        vec[ALL_SOURCES.index(source)] = 1.0
    return vec


def score_info(scores: np.ndarray) -> dict[str, float]:
    return {d: float(s) for d, s in zip(DIMENSIONS, scores)}


@dataclass(frozen=True)
class JudgeSettings:
    """Keyword arguments shared by ``RoboAlignWorld-v0`` and ``RoboAlignReal-v0``: the reward."""

    student: str | None = None
    """Student reward folder; None: the model folder's student/ or the default one."""
    device: str = "auto"
    """auto (CUDA when available, else CPU), cpu or cuda[:N]."""
    bf16: bool = False
    """bf16 autocast for the models (CPU or GPU); the dream also decodes with bf16 transformer
    weights and KV cache."""
    reward: RewardConfig = RewardConfig()
    """How the student's scores become rewards, success and termination (see roboalign_env.envs.reward)."""

    def __post_init__(self):
        expect(self.student is None or isinstance(self.student, (str, Path)), "student", self.student,
                "None or a folder path")
        expect(isinstance(self.device, str), "device", self.device, "'auto', 'cpu' or 'cuda[:N]'")
        expect(isinstance(self.bf16, bool), "bf16", self.bf16, "True or False")
        expect(isinstance(self.reward, RewardConfig), "reward", self.reward, "a RewardConfig")

    @classmethod
    def from_kwargs(cls, kwargs: dict[str, Any], env_id: str):
        """The settings from an env's keyword arguments. ``reward`` takes a :class:`RewardConfig` or a
        dict of its fields; each field can also be given alone as ``reward_<field>`` (``reward_mode``,
        ``reward_weights``, ``reward_frames``) or, for ``success_threshold``, by its own name."""
        aliases = {f"reward_{f.name}": f.name for f in fields(RewardConfig)} | {"success_threshold": "success_threshold"}
        flat = {aliases[k]: v for k, v in kwargs.items() if k in aliases}
        own = {k: v for k, v in kwargs.items() if k not in aliases}
        unknown = set(own) - {f.name for f in fields(cls)}
        if unknown:
            expected = sorted({f.name for f in fields(cls)} | set(aliases))
            raise TypeError(f"{env_id} got unknown keyword argument(s) {sorted(unknown)}; expected some of {expected}")
        reward = own.pop("reward", RewardConfig())
        if isinstance(reward, dict):
            reward = RewardConfig(**reward)
        if not isinstance(reward, RewardConfig):
            raise TypeError(f"{env_id}: reward must be a RewardConfig or a dict of its fields, got {type(reward).__name__}")
        if flat:
            reward = replace(reward, **flat)
        return cls(reward=reward, **own)

    def student_folder(self, model_folder: Path | None = None) -> Path:
        from roboalign_env.assets import DEFAULT_MODEL

        if self.student is not None:
            return Path(self.student)
        if model_folder is not None and (model_folder / "student").is_dir():
            return model_folder / "student"
        return DEFAULT_MODEL / "student"

    def load_judge(self, num_envs: int, device: torch.device, model_folder: Path | None = None) -> JudgeReward:
        from roboalign_env.models.registry import load_scorer

        return JudgeReward(load_scorer(self.student_folder(model_folder)).to(device), num_envs, self.reward, self.bf16)


@dataclass(frozen=True)
class DreamSettings(JudgeSettings):
    """Keyword arguments of ``RoboAlignWorld-v0`` (single and vector)."""

    checkpoint: str | None = None
    """A model folder like the shipped default (world_model/, student/, seeds/) or a bare
    world-model folder (tokenizer/, transformer/); None: the default shipped in the package."""
    window: Window = MODEL_WINDOW
    """Sliding Window Re-encoding window W in frames; "model": the model's own (its config's ``swr_window``);
    None turns SWR off (episodes then need a cache sized for ``horizon``)."""
    temperature: float = 1.0
    """Sampling temperature of the dynamics codes: 1 samples the model's own distribution (the one
    GRPO aligned; seeded from np_random), 0 is greedy (the same frames for the same actions)."""
    top_k: int | None = None
    """Sample among the top-k codes only (with temperature > 0)."""
    guidance: float | None = None
    """Classifier-free guidance scale on the actions (None: the model's own default; 1: none; above 1
    needs a model trained with action dropout and decodes each rollout twice)."""
    passes: int | None = None
    """Refinement passes per frame (None: the model's own default; 1: one pass; above 1 needs a model
    trained with refine_passes > 1, and each pass is one more forward pass per frame)."""
    horizon: int = 64
    """Longest episode the dream is sized for when SWR is off."""
    source: str | None = None
    """Start every episode from this source's seed clips (default: any source's); reset options override it."""
    monitor: bool = True
    """Reward-hacking monitor: check every success the student calls against the state probe (the model
    folder's probe/ or the default's); info then has probe_success and success_contradicted
    (see roboalign_env.envs.monitor)."""
    monitor_teacher: str | Path | None = None
    """A teacher judge folder (e.g. checkpoints/judge) the monitor also checks success calls with
    (info then has teacher_success); None: the probe only."""
    int8: bool = False
    """Decode with int8 transformer weights (CPU only; the attention and gate/up products in int8, about half the
    weight bytes each decoded token reads; see roboalign_env.models.decoding). Takes precedence over bf16 for
    the transformer."""

    def __post_init__(self):
        super().__post_init__()
        expect(self.checkpoint is None or isinstance(self.checkpoint, (str, Path)), "checkpoint", self.checkpoint,
                "None or a folder path")
        check_window(self.window)
        expect(is_real(self.temperature) and 0 <= self.temperature < float("inf"), "temperature", self.temperature,
                "a finite number >= 0 (0: greedy)")
        expect(self.top_k is None or (is_int(self.top_k) and self.top_k >= 1), "top_k", self.top_k,
                "None or an int >= 1")
        expect(self.guidance is None or (is_real(self.guidance) and 0 <= self.guidance < float("inf")), "guidance",
               self.guidance, "None (the model's default) or a finite number >= 0 (1: no guidance)")
        expect(self.passes is None or (is_int(self.passes) and self.passes >= 1), "passes", self.passes,
               "None (the model's default) or an int >= 1")
        expect(is_int(self.horizon) and self.horizon >= 1, "horizon", self.horizon, "an int >= 1")
        expect(self.source is None or self.source in ALL_SOURCES, "source", self.source,
                f"None or one of {list(ALL_SOURCES)}")
        expect(isinstance(self.int8, bool), "int8", self.int8, "True or False")
        expect(isinstance(self.monitor, bool), "monitor", self.monitor, "True or False")
        expect(self.monitor_teacher is None or (isinstance(self.monitor_teacher, (str, Path)) and self.monitor),
               "monitor_teacher", self.monitor_teacher, "None or a teacher folder, with monitor=True")

    @property
    def precision(self) -> str:
        """The transformer's precision while decoding."""
        return "int8" if self.int8 else "bfloat16" if self.bf16 else "float32"

    def probe_folder(self) -> Path:
        """The monitor's state probe: the model folder's probe/, else the default model's."""
        from roboalign_env.assets import DEFAULT_MODEL

        base = self.folders()[0]
        return base / "probe" if (base / "probe").is_dir() else DEFAULT_MODEL / "probe"

    def folders(self) -> tuple[Path, Path, Path]:
        """(model folder, world model, seeds) folders."""
        from roboalign_env.assets import DEFAULT_MODEL

        base = Path(self.checkpoint) if self.checkpoint is not None else DEFAULT_MODEL
        if not base.is_dir():
            raise FileNotFoundError(f"checkpoint {base}: not a folder; expected a model folder (world_model/, "
                                    "student/, seeds/) or a world-model folder (tokenizer/, transformer/)")
        world_model = base / "world_model" if (base / "world_model").is_dir() else base
        seeds = base / "seeds" if (base / "seeds").is_dir() else DEFAULT_MODEL / "seeds"
        return base, world_model, seeds


class DreamCore:
    """N rows of dream: world-model frames, student scores, and per-row episode bookkeeping."""

    def __init__(self, num_envs: int, settings: DreamSettings):
        from roboalign_env.device import resolve_device
        from roboalign_env.models.world_model import WorldModel

        if num_envs < 1:
            raise ValueError(f"num_envs: expected >= 1, got {num_envs}")
        self.num_envs, self.settings = num_envs, settings
        self.device = torch.device(resolve_device(settings.device))
        base, model_dir, seeds_dir = settings.folders()
        self.model = WorldModel.load(model_dir, self.device)
        self.model.tokenizer.to(memory_format=torch.channels_last)  # the CPU's faster convolution layout (same results)
        codebook = self.model.transformer.config.codebook_size
        if settings.top_k is not None and settings.top_k > codebook:
            raise ValueError(f"top_k={settings.top_k}: expected None or 1..{codebook} (this model's codebook size)")
        try:  # checked now, before the first reset makes the dream
            self.model.transformer.config.resolve_guidance(settings.guidance)
            self.model.transformer.config.resolve_passes(settings.passes)
            window = self.model.transformer.config.resolve_window(settings.window)
            self.model.transformer.config.check_window_reach(window, settings.horizon, f"window {settings.window}")
        except ValueError as err:
            raise ValueError(f"{model_dir}: {err}") from None
        if self.model.image_size != IMAGE_SIZE:
            raise ValueError(f"{model_dir}: image size {self.model.image_size}; the environment uses {IMAGE_SIZE}")
        self.judge = settings.load_judge(num_envs, self.device, base)
        self.monitor = HackMonitor(settings.probe_folder(), num_envs, settings.reward.frames, self.device,
                                   settings.monitor_teacher, settings.reward.success_threshold) \
            if settings.monitor else None
        self.seeds = SeedClips.load(seeds_dir)
        self.dream = None
        self.frames = np.zeros((num_envs, 3, IMAGE_SIZE, IMAGE_SIZE), np.uint8)
        self.tasks = np.zeros((num_envs, len(ALL_SOURCES)), np.float32)
        self.episode: list[dict] = [{} for _ in range(num_envs)]

    def observation(self, row: int) -> dict[str, np.ndarray]:
        return {"image": self.frames[row].copy(), "task": self.tasks[row].copy()}

    def observations(self) -> dict[str, np.ndarray]:
        return {"image": self.frames.copy(), "task": self.tasks.copy()}

    def reset_rows(self, rows: Sequence[int], rngs: Sequence[np.random.Generator],
                   options: Sequence[dict | None]) -> list[dict]:
        """Start new episodes in ``rows`` (each drawing from its own ``np_random``); return their infos."""
        starts = [self._pick_start(rng, opts or {}) for rng, opts in zip(rngs, options)]
        first = torch.stack([torch.from_numpy(s["frame"]).permute(2, 0, 1) for s in starts]).to(self.device).float().div(255)
        generators = [torch.Generator().manual_seed(int(rng.integers(2**63 - 1))) for rng in rngs]
        rows = list(rows)
        if self.dream is None:  # made once: later resets restart rows (its decoder's weights are prepared once)
            s = self.settings
            self.dream = self.model.dream(first, s.horizon, s.window, s.temperature, s.top_k,
                                          generators if s.temperature > 0 else None, record=False,
                                          precision=s.precision, guidance=s.guidance, passes=s.passes)
        else:
            if self.settings.temperature > 0:
                for r, g in zip(rows, generators):
                    self.dream.generators[r] = g
            self.dream.reset_rows(rows, first)
        with self._autocast():
            scores = self.judge.reset_rows(rows, first, [s["instruction"] for s in starts]).cpu().numpy()
        infos = []
        for r, start, score in zip(rows, starts, scores):
            self.frames[r] = start["frame"].transpose(2, 0, 1)
            self.tasks[r] = task_vector(start["source"])
            self.episode[r] = {k: start[k] for k in ("instruction", "source", "seed_index")}
            infos.append(self._info(r, score, False))
        if self.monitor is not None:
            self.monitor.reset_rows(rows, self.frames[rows], [s["instruction"] for s in starts])
            for info in infos:
                info.update(self.monitor.empty_verdict)
        return infos

    def step(self, actions: np.ndarray, truncating: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[dict]]:
        """Advance every row under checked actions (N, 7) (see :func:`check_actions`); return
        (rewards (N,), judged success (N,), infos)."""
        with self._autocast():
            commands = torch.from_numpy(actions).to(self.device)
            frames = self.dream.step(commands)
            reward, scores, success = self.judge.step(frames.float(), commands, torch.as_tensor(truncating))
        self.frames = frames.float().mul(255).round().clamp(0, 255).to(torch.uint8).cpu().numpy()
        success = success.cpu().numpy()
        scores = scores.cpu().numpy()
        infos = [self._info(r, scores[r], bool(success[r])) for r in range(self.num_envs)]
        if self.monitor is not None:
            for info, verdict in zip(infos, self.monitor.step(self.frames, actions, success)):
                info.update(verdict)
        return reward.cpu().numpy().astype(np.float32), success, infos

    def state_bytes(self) -> int:
        """Bytes of per-environment state (KV cache, context frames and features, judge tokens);
        the models' weights are shared by every environment and not counted."""
        d = self.dream
        tensors = [d._cache.keys, d._cache.values, d._context, d._last_frame, d._pending, *d._skips,
                   *self.judge.state_tensors()]
        return sum(t.numel() * t.element_size() for t in tensors) + self.frames.nbytes + self.tasks.nbytes

    def _info(self, row: int, scores: np.ndarray, success: bool) -> dict:
        return {"scores": score_info(scores), "aggregate": float(self.judge.phi[row]), "success": success,
                **self.episode[row]}

    def _autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.settings.bf16)

    def _pick_start(self, rng: np.random.Generator, options: dict) -> dict:
        """The first frame, instruction and source of a new episode, from ``options`` or the seeds.

        Options: ``source`` (one of the four; a seed clip of it), ``seed_index`` (that seed clip),
        ``frame`` (your own first frame, uint8 (64, 64, 3) or (3, 64, 64); needs ``instruction``
        unless ``source`` is given), ``instruction`` (overrides the clip's).
        """
        known = {"source", "seed_index", "frame", "instruction"}
        if set(options) - known:
            raise ValueError(f"reset options {sorted(set(options) - known)} are unknown; expected some of {sorted(known)}")
        source = options.get("source", self.settings.source)
        if source is not None and source not in ALL_SOURCES:
            raise ValueError(f"source={source!r}: expected one of {list(ALL_SOURCES)}")
        instruction = options.get("instruction")
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ValueError(f"options['instruction']={instruction!r}: expected a non-empty string")
        if "frame" in options:
            frame = _check_frame(options["frame"])
            if instruction is None:
                if source is None:
                    raise ValueError("options['frame'] needs options['instruction'] (or options['source'] to draw one)")
                from roboalign_env.sim.sources import SOURCES

                templates = SOURCES[source].instructions
                instruction = templates[int(rng.integers(len(templates)))]
            return {"frame": frame, "instruction": instruction, "source": source, "seed_index": -1}
        if "seed_index" in options:
            index = options["seed_index"]
            expect(is_int(index) and 0 <= index < len(self.seeds), "options['seed_index']", index,
                    f"an int in 0..{len(self.seeds) - 1}")
            index = int(index)
        else:
            candidates = self.seeds.of_source(source)
            index = int(candidates[rng.integers(len(candidates))])
        meta = self.seeds.meta[index]
        templates = meta["instructions"]
        drawn = templates[int(rng.integers(len(templates)))]
        return {"frame": self.seeds.frames[index, 0], "instruction": instruction or drawn,
                "source": meta["source"], "seed_index": index}


def _check_frame(frame) -> np.ndarray:
    """A user's first frame as uint8 (64, 64, 3)."""
    array = np.asarray(frame)
    if array.dtype != np.uint8 or array.ndim != 3:
        raise ValueError(f"options['frame']: expected uint8 (64, 64, 3) or (3, 64, 64), got {array.dtype} {array.shape}")
    if array.shape == (3, IMAGE_SIZE, IMAGE_SIZE):
        array = array.transpose(1, 2, 0)
    if array.shape != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(f"options['frame']: expected uint8 (64, 64, 3) or (3, 64, 64), got {array.dtype} {array.shape}")
    return np.ascontiguousarray(array)
