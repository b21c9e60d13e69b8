"""The package's structure: layers import one way, importing has no side effects, optional
dependencies stay optional, and every rubric definition has one home."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          env={"PYTHONPATH": str(cwd), "PATH": "/usr/bin:/bin"})


def test_layer_contracts_hold():
    out = _lint(ROOT)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
    assert "1 kept, 0 broken" in out.stdout


def test_an_upward_import_breaks_the_contract(tmp_path):
    # the same contracts over a copy of the package whose data layer imports the CLI
    for src in (ROOT / "roboalign_env").rglob("*.py"):
        dest = tmp_path / src.relative_to(ROOT)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    io = tmp_path / "roboalign_env" / "data" / "io.py"
    io.write_text(io.read_text() + "\nfrom roboalign_env.cli import COMMANDS  # noqa\n")
    out = _lint(tmp_path)
    assert out.returncode != 0 and "roboalign_env.data.io -> roboalign_env.cli" in out.stdout


def _imports_after(code: str) -> set[str]:
    """The modules a fresh process has imported after ``code`` (and ``MUJOCO_GL=...`` if it was set)."""
    probe = f"{code}\nimport json, os, sys\nprint(json.dumps([sorted(sys.modules), os.environ.get('MUJOCO_GL', '')]))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "HOME": str(Path.home())})
    assert out.returncode == 0, out.stderr[-3000:]
    modules, gl = json.loads(out.stdout.strip().splitlines()[-1])
    return set(modules) | ({"MUJOCO_GL=" + gl} if gl else set())


OPTIONAL = ("robosuite", "mujoco", "accelerate", "stable_baselines3", "matplotlib", "sentence_transformers",
            "torchmetrics", "lpips", "stlpips_pytorch", "imageio", "sklearn", "scipy", "torchvision")
"""What the extras install: none of it may be needed to make and step the dream env."""


def test_importing_models_has_no_rendering_side_effects():
    seen = _imports_after("import roboalign_env.models.world_model, roboalign_env.models.student, roboalign_env.sim.sources")
    assert not any(m.split(".")[0] in {"robosuite", "mujoco"} for m in seen)
    assert not any(m.startswith("MUJOCO_GL=") for m in seen)


def test_the_dream_env_needs_only_the_base_install():
    blocked = "".join(f"sys.modules[{m!r}] = None\n" for m in OPTIONAL)  # importing any of them fails
    seen = _imports_after(f"import sys\n{blocked}import gymnasium as gym, numpy as np, roboalign_env\n"
                          "env = gym.make('RoboAlignWorld-v0', device='cpu')\n"
                          "env.reset(seed=0)\nassert np.isfinite(env.step(np.zeros(7, np.float32))[1])")
    assert "roboalign_env.models.world_model" in seen


def test_a_missing_optional_dependency_names_its_extra():
    code = ("import sys; sys.modules['stable_baselines3'] = None\n"
            "try:\n    import roboalign_env.envs.sb3\nexcept ImportError as err:\n    print(err)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert "pip install 'roboalign_env[sb3]'" in out.stdout and "Stable-Baselines3 adapter" in out.stdout


def test_aggregate_is_the_weighted_sum_over_ten():
    from roboalign_env.rubric import DIMENSIONS, MAX_SCORES, TOTAL, aggregate

    assert len(DIMENSIONS) == len(MAX_SCORES) == 6 and TOTAL == 10
    top = np.array(MAX_SCORES, float)
    assert aggregate(top) == pytest.approx(1.0)
    assert aggregate(torch.tensor([[3, 2, 1, 1, 1, 2], [0, 0, 0, 0, 0, 0]])).tolist() == [1.0, 0.0]
    weights = (0, 2, 0, 0, 0, 0)
    assert aggregate(top, weights) == pytest.approx(0.4)
    assert aggregate(torch.tensor(top), torch.tensor(weights, dtype=torch.float64)).item() == pytest.approx(0.4)
    with pytest.raises(ValueError, match="one per dimension"):
        aggregate(top, (1, 1))
    with pytest.raises(ValueError, match="last axis of 6"):
        aggregate(np.ones(5))


def test_every_subcommand_has_help_and_documents_every_field(capsys):
    import dataclasses

    from roboalign_env.cli import COMMANDS, main

    for name, command in COMMANDS.items():
        with pytest.raises(SystemExit) as done:
            main([name, "--help"])
        assert done.value.code == 0, name
        out = capsys.readouterr()
        pending = [(command, "")]
        while pending:  # every field, nested configs included, is an option (nested ones: a group)
            cls, group = pending.pop()
            for field in dataclasses.fields(cls):
                if dataclasses.is_dataclass(field.default):
                    path = f"{group}.{field.name}" if group else field.name
                    assert f"{path} options" in out.out, (name, path)
                    pending.append((type(field.default), path))
                else:
                    assert "--" + field.name.replace("_", "-") in out.out, (name, field.name)


def test_nested_settings_reach_their_library_calls(monkeypatch):
    import roboalign_env.envs.compare
    import roboalign_env.training.grpo.trainer
    from roboalign_env.cli import main

    seen = {}
    monkeypatch.setattr(roboalign_env.training.grpo.trainer, "post_train",
                        lambda cfg, loop, *rest: seen.update(grpo=cfg, loop=loop, rest=rest))
    main(["post-train", "--clip", "0.3", "--top-k", "5", "--distill-batch", "4", "--adv-eps", "0.01", "--steps", "7",
          "--lr", "2e-4", "--out", "x/run", "--reward", "hybrid", "--rlvr-weight", "2"])
    g, loop = seen["grpo"], seen["loop"]
    assert (g.clip, g.top_k, g.distill_batch, g.adv_eps, g.reward, g.rlvr_weight) == (0.3, 5, 4, 0.01, "hybrid", 2.0)
    assert (loop.steps, loop.lr, str(loop.out), loop.warmup_steps) == (7, 2e-4, "x/run", 5)

    monkeypatch.setattr(roboalign_env.envs.compare, "compare", lambda out, sources, n, steps, policy, settings, *a, **k:
                        seen.update(dream=settings) or {"mean": {}, "student": {}})
    with pytest.raises(KeyError):  # the stub returns no metrics to print; the settings were already passed
        main(["compare", "--temperature", "0", "--int8", "--mode", "absolute", "--weights", "0", "1", "0", "0", "0", "0"])
    d = seen["dream"]
    assert (d.temperature, d.int8, d.reward.mode, d.reward.weights) == (0.0, True, "absolute", (0.0, 1.0, 0.0, 0.0, 0.0, 0.0))


def test_env_keyword_arguments_nest_the_reward_config():
    from roboalign_env.envs.core import DreamSettings
    from roboalign_env.envs.reward import RewardConfig

    flat = DreamSettings.from_kwargs({"reward_mode": "absolute", "success_threshold": 0.5, "temperature": 0.0}, "env")
    nested = DreamSettings.from_kwargs({"reward": {"mode": "absolute", "success_threshold": 0.5}, "temperature": 0.0}, "env")
    assert flat == nested and flat.reward == RewardConfig(mode="absolute", success_threshold=0.5)
    with pytest.raises(TypeError, match="reward_frames"):
        DreamSettings.from_kwargs({"reward_frame": 3}, "env")
