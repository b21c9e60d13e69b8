"""Data-engine commands: ``collect``, ``build-bench``, ``bench-stats``, ``add-dream-pairs``."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from roboalign_env.assets import DEFAULT_MODEL
from roboalign_env.cli.options import Nested
from roboalign_env.data.splits import HELDOUT_SOURCE
from roboalign_env.eval.adversary import SearchConfig
from roboalign_env.sim.exploration import DEFAULT_EXPLORATION_MODES
from roboalign_env.sim.rendering import CAMERA
from roboalign_env.sim.sources import ALL_SOURCES


@dataclass(frozen=True)
class Collect:
    """Collect scripted and exploration robosuite episodes (resumable: finished episodes are skipped)."""

    out: Path = Path("data/episodes")
    """Collection folder: episodes/<source>/<id>.npz and manifest.jsonl are written here."""
    sources: tuple[str, ...] = ALL_SOURCES
    """Data sources to collect, from: lift_panda, stack_sawyer, pickplace_can_ur5e, door_kinova3, and, for judge
    training only, lift_ur5e, pickplace_milk_panda, pickplace_bread_panda, pickplace_milk_kinova3."""
    episodes_per_source: int = 200
    """Scripted episodes per source (seeds first_seed, first_seed+1, ...)."""
    nominal_fraction: float = 0.5
    """Fraction of nominal episodes; the rest cycle through the source's failure modes."""
    first_seed: int = 0
    """First seed of every source's episode list."""
    exploration_fraction: float = 0.0
    """Fraction of each source's episodes that are exploration episodes, added to the scripted ones
    (0.5: as many as --episodes-per-source; seeds from first_seed + 50000)."""
    exploration_modes: tuple[str, ...] = DEFAULT_EXPLORATION_MODES
    """Exploration modes to cycle, from: explore_waypoints, explore_constant, explore_ou, explore_prefix,
    explore_push (long pushes past the workspace box; not in the default cycle)."""
    workers: int = 2
    """Worker processes (each renders with its own MuJoCo context)."""
    image_size: int = 64
    """Frame size in pixels (64, or 128 for the larger option)."""
    camera: str = CAMERA
    """Recording camera: one of the scene's cameras (agentview, frontview, sideview, birdview), optionally moved
    back along its line of sight in whole centimetres, e.g. agentview+50cm (benchmarks/camera_choice.py compares
    them). Everything trained on the collection then sees that view; eval-control replays its starts through it."""

    def run(self) -> None:
        from roboalign_env.sim.collect import collect, eef_in_view_fraction, plan_episodes

        specs = plan_episodes(
            list(self.sources), self.episodes_per_source, self.nominal_fraction, self.first_seed,
            self.exploration_fraction, self.exploration_modes,
        )
        rows = collect(self.out, specs, self.workers, self.image_size, camera=self.camera)
        print(f"{len(rows)} episodes in {self.out} (manifest: {self.out / 'manifest.jsonl'})")
        print("fraction of frames with the end effector inside the image:")
        for key, fraction in eef_in_view_fraction(self.out, by_mode=True).items():
            print(f"  {key}: {fraction:.3f}")


@dataclass(frozen=True)
class BuildBench:
    """Build RobotWorldBench from a collection (resumable: finished episodes are skipped)."""

    collection: tuple[Path, ...] = (Path("data/episodes"),)
    """Collection folders written by `roboalign collect` (their episode ids must differ)."""
    out: Path = Path("data/bench")
    """Bench folder: pairs.jsonl and videos/ are written here."""
    heldout_source: str = HELDOUT_SOURCE
    """Source whose episodes form the held-out split (never used in training)."""
    workers: int = 2
    """Worker processes."""

    def run(self) -> None:
        from roboalign_env.eval.bench_stats import label_counts
        from roboalign_env.sim.build_bench import build_bench

        rows = build_bench(self.collection, self.out, self.heldout_source, self.workers)
        stats = label_counts(rows)
        print(f"{len(rows)} pairs in {self.out}; splits {stats['splits']}; "
              f"smallest label level holds {100 * stats['min_level_fraction']:.1f}% of pairs")


@dataclass(frozen=True)
class BenchStats:
    """Label counts per source x dimension x level, histograms and a labelled contact sheet."""

    bench: Path = Path("data/bench")
    """Bench folder written by `roboalign build-bench`."""
    out: Path | None = None
    """Output folder (default: <bench>/stats)."""

    def run(self) -> None:
        from roboalign_env.eval.bench_stats import bench_stats

        out = self.out or self.bench / "stats"
        stats = bench_stats(self.bench, out)
        print(f"{stats['pairs']} pairs; wrote {out}/stats.json, label_histograms.png, contact_sheet.png")


@dataclass(frozen=True)
class AddDreamPairs:
    """Add world-model rollouts to the bench as labelled pairs (the paper's generated videos): from bench
    episodes' first frames under their own, random, constant and zero actions, dreamed and replayed in
    robosuite; labelled by the state probe and robosuite, never by a judge (see roboalign_env.eval.dream_pairs)."""

    name: str
    """Name of the new shard (videos/external/<name>.npz), e.g. the model's name."""
    model: Path = DEFAULT_MODEL / "world_model"
    """World-model folder, or a packed model folder holding one in world_model/; the default is the shipped model."""
    probe: Path = Path("checkpoints/probe")
    """State-probe folder that reads the dreamed frames."""
    collection: Path = Path("data/episodes")
    """Collection the bench was built from."""
    bench: Path = Path("data/bench")
    """Bench folder written by `roboalign build-bench`."""
    per_source: int = 30
    """Episodes per source; each gives one rollout per action kind."""
    steps: int = 16
    """Dreamed steps per rollout (the video has one frame more: the real first frame)."""
    temperature: float = 1.0
    """Sampling temperature of the dream (1: the environment's default; 0: greedy)."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    policy: str | None = None
    """A saved policy (folder from save_policy, as PATH or ALGO:PATH, e.g. PPO trained in the dream) that acts on
    the dreamed frames, closed loop; its actions are replayed in robosuite. Adds the 'policy' kind."""
    adversary: Path | None = None
    """A reward (student or teacher folder) to attack: per episode, the actions whose dream it pays most Manipulation
    Success, found by a cross-entropy search in the dream (the search options); they are replayed in robosuite. Adds the
    'adversary' kind."""
    search: Nested[SearchConfig] = SearchConfig()
    kinds: tuple[str, ...] | None = None
    """Rollout kinds per episode, from own, random, constant, zero, policy, adversary (default: the first four, and
    policy / adversary when --policy / --adversary is given)."""
    sources: tuple[str, ...] | None = None
    """Only episodes of these sources (default: every source in the bench)."""
    splits: tuple[str, ...] | None = None
    """Only episodes of these bench splits (e.g. test: an attack on episodes no judge trained on; default: every split)."""
    seed: int = 0
    """Seed of the episodes chosen, the random and constant commands and the dream's sampling (another seed, another
    shard name: more rollouts of the same episodes)."""

    def run(self) -> None:
        import json

        from roboalign_env.device import resolve_device
        from roboalign_env.eval.adversary import manipulation_success
        from roboalign_env.eval.dream_pairs import (
            ACTION_KINDS,
            ADVERSARY_KIND,
            POLICY_KIND,
            check_kinds,
            dream_pairs,
            summarize_rows,
        )
        from roboalign_env.models.registry import load_scorer

        adversary_name = None if self.adversary is None else str(self.adversary)
        kinds = self.kinds or (ACTION_KINDS + ((POLICY_KIND,) if self.policy is not None else ())
                               + ((ADVERSARY_KIND,) if self.adversary is not None else ()))
        check_kinds(kinds, self.policy, adversary_name)  # before loading any model
        policy = None
        if self.policy is not None:
            from roboalign_env.envs.compare import load_model
            from roboalign_env.envs.policies import frame_policy

            if self.policy in ("scripted", "random"):
                raise SystemExit(f"--policy {self.policy}: expected a saved policy folder (PATH or ALGO:PATH); random "
                                 "actions are the 'random' kind, and a scripted policy cannot see the dream")
            policy = frame_policy(load_model(self.policy))
        device = resolve_device(self.device)
        adversary = None if self.adversary is None else manipulation_success(load_scorer(self.adversary).to(device))
        rows = dream_pairs(self.model, self.probe, self.collection, self.bench, self.name, self.per_source, self.steps,
                           self.temperature, device=device, seed=self.seed, kinds=kinds, sources=self.sources, splits=self.splits,
                           policy=policy, policy_name=self.policy, adversary=adversary,
                           adversary_name=adversary_name, search=self.search)
        print(f"added {len(rows)} dream pairs to {self.bench}:")
        print(json.dumps(summarize_rows(rows), indent=1))


COMMANDS = {"collect": Collect, "build-bench": BuildBench, "bench-stats": BenchStats, "add-dream-pairs": AddDreamPairs}
