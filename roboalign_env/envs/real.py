"""``RoboAlignReal-v0``: the dream's spaces and reward, backed by real robosuite.

One policy object runs in both: the observation is the same ``{"image", "task"}`` dict (the
upright 64x64 frame of ``camera``, rendered by MuJoCo's renderer: agentview, or the camera setting a
collection was recorded with, e.g. ``camera="agentview+50cm"``), the action the same normalized
7-D OSC_POSE command, and the reward the same student judge over the frames so far. What differs
is the ground truth: ``terminated`` is robosuite's own success check, not the judge's.

Unlike robosuite's ``GymWrapper``: truncation comes from ``TimeLimit`` (robosuite's horizon is
never reported as termination), every random number (the episode's placement and robot noise,
the instruction) is drawn from ``np_random``, and images are upright. ``info["robosuite_obs"]``
carries robosuite's own observation dict, which scripted policies read::

    env = gym.make("RoboAlignReal-v0", source="stack_sawyer")
    obs, info = env.reset(seed=3)
    policy = SOURCES["stack_sawyer"].policy("nominal")
    obs, reward, terminated, truncated, info = env.step(policy(info["robosuite_obs"]))

``terminate_on_success=False`` keeps an episode going after success (``info["success"]`` still
says so), for fixed-length comparisons. ``options={"episode_seed": s}`` starts robosuite episode ``s`` exactly as collection did (the seed
clips shipped with the dream record theirs), ``options={"instruction": ...}`` sets the instruction.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import torch

from roboalign_env.envs.core import (
    EpisodeClock,
    JudgeSettings,
    action_space,
    check_actions,
    observation_space,
    score_info,
    task_vector,
)
from roboalign_env.envs.reward import is_int
from roboalign_env.sim.rendering import CAMERA, parse_camera
from roboalign_env.sim.sources import ALL_SOURCES


class RoboAlignRealEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 10}

    def __init__(self, source: str = "lift_panda", render_mode: str | None = None, terminate_on_success: bool = True,
                 camera: str = CAMERA, **settings):
        from roboalign_env.device import resolve_device
        from roboalign_env.sim.rendering import env_renderer
        from roboalign_env.sim.robosuite_env import make_env
        from roboalign_env.sim.sources import SOURCES

        if source not in ALL_SOURCES:
            raise ValueError(f"source={source!r}: expected one of {list(ALL_SOURCES)}")
        parse_camera(camera)
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode={render_mode!r}: expected None or 'rgb_array'")
        self.render_mode = render_mode
        self.observation_space = observation_space()
        self.action_space = action_space()
        self.source = SOURCES[source]
        settings = JudgeSettings.from_kwargs(settings, "RoboAlignReal-v0")
        self.device = torch.device(resolve_device(settings.device))
        self.judge = settings.load_judge(1, self.device)
        self.sim = make_env(self.source)
        try:
            self.renderer = env_renderer(self.sim, 64, camera)
        except ValueError:  # a camera this scene does not have
            self.sim.close()
            raise
        self._task = task_vector(source)
        self._frame = np.zeros((64, 64, 3), np.uint8)
        self._autocast = settings.bf16
        self.terminate_on_success = terminate_on_success
        self._clock = EpisodeClock()
        self._episode: dict = {}

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        from roboalign_env.sim.robosuite_env import reset_env

        self._clock.check_open("reset()")
        super().reset(seed=seed)
        options = dict(options or {})
        unknown = set(options) - {"episode_seed", "instruction"}
        if unknown:
            raise ValueError(f"reset options {sorted(unknown)} are unknown; expected episode_seed and/or instruction")
        episode_seed = options.get("episode_seed", int(self.np_random.integers(2**31 - 1)))
        if not (is_int(episode_seed) and 0 <= episode_seed < 2**32):
            raise ValueError(f"options['episode_seed']={episode_seed!r}: expected an int in [0, 2**32)")
        episode_seed = int(episode_seed)
        instruction = options.get("instruction")
        if instruction is not None and (not isinstance(instruction, str) or not instruction.strip()):
            raise ValueError(f"options['instruction']={instruction!r}: expected a non-empty string")
        templates = self.source.instructions
        drawn = templates[int(self.np_random.integers(len(templates)))]
        instruction = instruction or drawn
        self._robosuite_obs = reset_env(self.sim, episode_seed)
        self._frame = self.renderer.render(self.sim.sim.data._data)
        with self._judging():
            scores = self.judge.reset_rows([0], self._frame_tensor(), [instruction])[0].cpu().numpy()
        self._episode = {"instruction": instruction, "source": self.source.name, "episode_seed": episode_seed}
        self._clock.start()
        return self._obs(), self._info(scores, False)

    def step(self, action):
        self._clock.check_open("step()")
        action = check_actions(action, self.action_space.shape)  # before anything changes
        truncating = torch.tensor([self._clock.tick(self.spec.max_episode_steps if self.spec is not None else None)])
        self._robosuite_obs, _, _, _ = self.sim.step(action)
        self._frame = self.renderer.render(self.sim.sim.data._data)
        with self._judging():
            reward, scores, _ = self.judge.step(self._frame_tensor(), torch.as_tensor(action)[None], truncating)
        success = bool(self.sim._check_success())
        terminated = success and self.terminate_on_success
        if terminated:
            self._clock.end()
        return self._obs(), float(reward[0]), terminated, False, self._info(scores[0].cpu().numpy(), success)

    def render(self) -> np.ndarray | None:
        return self._frame.copy() if self.render_mode == "rgb_array" else None

    def close(self) -> None:
        """Release robosuite and the renderer; any later ``reset`` or ``step`` is an error."""
        if self._clock.state != "closed":
            self._clock.close()
            self.renderer.close()
            self.sim.close()

    def _obs(self) -> dict[str, np.ndarray]:
        return {"image": self._frame.transpose(2, 0, 1).copy(), "task": self._task.copy()}

    def _info(self, scores: np.ndarray, success: bool) -> dict:
        return {"scores": score_info(scores), "aggregate": float(self.judge.phi[0]), "success": success,
                **self._episode, "robosuite_obs": self._robosuite_obs}

    def _frame_tensor(self) -> torch.Tensor:
        return torch.from_numpy(self._frame).permute(2, 0, 1)[None].to(self.device).float().div(255)

    def _judging(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self._autocast)
