"""Environment commands: ``compare`` (real robosuite vs the dream), ``demo`` (the main job) and
``pack-default`` (a model folder like the shipped one)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from roboalign_env.assets import DEFAULT_MODEL
from roboalign_env.cli.options import Nested, command_line
from roboalign_env.envs.core import DreamSettings
from roboalign_env.sim.sources import ALL_SOURCES


@dataclass(frozen=True)
class Compare:
    """Real robosuite vs the dream from the same held-out starts under the same actions: per-step
    PSNR / SSIM / LPIPS, student scores of both, a side-by-side mp4 and a plot."""

    out: Path = Path("outputs/compare")
    """Output folder (results.json, compare.png, side_by_side.mp4)."""
    policy: str = "scripted"
    """scripted (each source's nominal scripted policy), random, or an SB3 policy saved as weights (a folder with policy.json + policy.safetensors) as PATH or ALGO:PATH (e.g. ppo:agents/runs/ppo_dream/policy); an SB3 model ALGO:PATH.zip only with --trust-sb3-zip."""
    sources: tuple[str, ...] = ALL_SOURCES
    """Sources to compare."""
    episodes_per_source: int = 2
    """Held-out seed clips per source (the shipped seeds hold 8 per source)."""
    steps: int = 16
    """Steps per episode."""
    seed: int = 0
    """Seed of the policies' and environments' random numbers."""
    perceptual: Literal["st-lpips", "lpips"] = "st-lpips"
    """Perceptual distance ('lpips' needs torchvision's AlexNet weights on disk)."""
    dream: Nested[DreamSettings] = DreamSettings()
    """How the dream runs and is rewarded: the keyword arguments of RoboAlignWorld-v0."""
    trust_sb3_zip: bool = False
    """Allow --policy ALGO:PATH.zip: loading an SB3 zip unpickles it, which can execute arbitrary code; only for files you trust."""

    def run(self) -> None:
        from roboalign_env.envs.compare import compare

        results = compare(self.out, self.sources, self.episodes_per_source, self.steps, self.policy, self.dream,
                          self.seed, command=command_line(), perceptual=self.perceptual,
                          trust_pickle=self.trust_sb3_zip)
        mean = results["mean"]
        print(f"{results['episodes']} episodes x {self.steps} steps, {self.policy} policy: dream vs real "
              f"PSNR {mean['psnr']:.2f} dB, SSIM {mean['ssim']:.3f}, {results['perceptual_metric']} {mean['lpips']:.3f}")
        student = results["student"]
        print(f"student aggregate at the last step: real {student['real_aggregate_per_step'][-1]:.3f}, "
              f"dream {student['dream_aggregate_per_step'][-1]:.3f}")
        print(f"wrote {self.out / 'results.json'}, {self.out / 'compare.png'}, {self.out / 'side_by_side.mp4'}")


@dataclass(frozen=True)
class Demo(Compare):
    """The main job: the default dream next to real robosuite under each source's scripted policy
    (results.json, compare.png, side_by_side.mp4)."""

    out: Path = Path("outputs/demo")
    """Output folder."""


@dataclass(frozen=True)
class PackDefault:
    """Assemble a model folder like the one shipped in the package: world_model/ (bf16),
    student/ (float16), seeds/ (held-out seed clips of every source) and probe/ (the reward-hacking
    monitor's state probe)."""

    world_model: Path
    """Trained world-model folder (tokenizer/, transformer/)."""
    student: Path
    """Trained student reward folder."""
    collection: Path = Path("data/episodes")
    """Episode collection the seed clips come from ("test" split episodes)."""
    out: Path = DEFAULT_MODEL
    """Destination (the package's default model by default)."""
    seeds_per_source: int = 8
    """Seed clips per source."""
    seed_steps: int = 16
    """Steps kept per seed clip (frames: one more)."""
    split: Literal["train", "val", "test", "all"] = "test"
    """Episode split the seed clips come from (held-out "test" episodes for the shipped model)."""
    probe: Path | None = Path("checkpoints/probe")
    """State probe for the environment's reward-hacking monitor (`roboalign train-probe`); None: the
    folder gets none and the environment uses the default model's."""

    def run(self) -> None:
        from roboalign_env.envs.default_model import pack_default

        size = pack_default(self.world_model, self.student, self.collection, self.out, self.seeds_per_source,
                            self.seed_steps, self.split, self.probe)
        print(f"wrote {self.out} ({size:.1f} MB)")


COMMANDS = {"demo": Demo, "compare": Compare, "pack-default": PackDefault}
