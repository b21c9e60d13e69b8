"""Train an SB3 policy (PPO or SAC) inside the dream, then check it in real robosuite.

    python agents/train_in_dream.py --algo ppo --steps 20000 --out agents/runs/ppo_dream
    roboalign compare --policy ppo:agents/runs/ppo_dream/policy --sources lift_panda

The dream is the native vector ``RoboAlignWorld-v0`` behind the SB3 adapter (all envs in one
world-model forward pass); the reward is the student judge's (see ``--reward-mode``). Checkpoints are
saved every ``--save-every`` steps, and a re-run resumes from the latest one. The trained policy is
saved twice: ``model.zip`` (SB3's own, to resume or fine-tune this run) and ``policy/`` (weights +
JSON, which ``roboalign compare`` loads without unpickling anything).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import tyro
from stable_baselines3 import PPO, SAC
from stable_baselines3.common.callbacks import CheckpointCallback
from stable_baselines3.common.vec_env import VecMonitor

from roboalign_env.envs.policies import save_policy
from roboalign_env.envs.sb3 import make_sb3_env


@dataclass(frozen=True)
class Args:
    algo: Literal["ppo", "sac"] = "ppo"
    """PPO (on-policy) or SAC (off-policy, replay buffer of --buffer-size transitions)."""
    steps: int = 20_000
    """Environment steps in total."""
    num_envs: int = 16
    """Dream envs stepped in one batch."""
    max_episode_steps: int = 32
    """Dream episode length."""
    reward_mode: Literal["potential", "absolute", "terminal"] = "potential"
    """How the student's scores become rewards."""
    source: str | None = None
    """Train on one source's starts only (e.g. lift_panda); default: all four."""
    bf16: bool = True
    """bf16 autocast for the world model and the judge."""
    int8: bool = False
    """int8 transformer weights while decoding (CPU only; measured with bf16 at N=16: 1.25x the steps/s)."""
    buffer_size: int = 20_000
    """SAC replay buffer (each transition holds two 64x64 images)."""
    save_every: int = 4096
    """Checkpoint period in environment steps."""
    seed: int = 0
    out: Path = Path("agents/runs/ppo_dream")
    """Run folder (model.zip, policy/, checkpoints/, monitor logs)."""


def main(args: Args) -> None:
    args.out.mkdir(parents=True, exist_ok=True)
    dream = make_sb3_env(args.num_envs, args.max_episode_steps, bf16=args.bf16, int8=args.int8, reward_mode=args.reward_mode,
                         source=args.source)
    venv = VecMonitor(dream, str(args.out / "monitor"))
    checkpoints = sorted((args.out / "checkpoints").glob("*_steps.zip"), key=lambda p: int(p.stem.split("_")[-2]))
    algorithm = PPO if args.algo == "ppo" else SAC
    if checkpoints:
        model = algorithm.load(checkpoints[-1], env=venv)
        print(f"resuming from {checkpoints[-1]} ({model.num_timesteps} steps done)")
    elif args.algo == "ppo":
        model = PPO("MultiInputPolicy", venv, n_steps=128, batch_size=256, n_epochs=4, seed=args.seed, verbose=1)
    else:
        model = SAC("MultiInputPolicy", venv, buffer_size=args.buffer_size, learning_starts=1000, batch_size=128,
                    seed=args.seed, verbose=1)
    callback = CheckpointCallback(max(1, args.save_every // args.num_envs), str(args.out / "checkpoints"), "model")
    model.learn(args.steps - model.num_timesteps, callback=callback, reset_num_timesteps=not checkpoints, progress_bar=True)
    model.save(args.out / "model")
    policy = save_policy(model, args.out / "policy")
    print(f"wrote {args.out / 'model.zip'} and {policy}; compare in robosuite with:\n"
          f"  roboalign compare --policy {args.algo}:{policy}")


if __name__ == "__main__":
    main(tyro.cli(Args))
