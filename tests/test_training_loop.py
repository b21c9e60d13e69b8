"""The shared training loop: it optimizes, logs, saves safetensors, and resumes bit for bit."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import PretrainedConfig, PreTrainedModel

from roboalign_env.training.loop import LoopConfig, lr_at, step_seed, train


class TinyConfig(PretrainedConfig):
    model_type = "roboalign_test_tiny"

    def __init__(self, width: int = 8, **kwargs):
        self.width = width
        super().__init__(**kwargs)


class Tiny(PreTrainedModel):
    config_class = TinyConfig

    def __init__(self, config):
        super().__init__(config)
        self.net = torch.nn.Sequential(torch.nn.Linear(4, config.width), torch.nn.Dropout(0.1),
                                       torch.nn.Linear(config.width, 1))
        self.post_init()

    def forward(self, x):
        return self.net(x)


def make_batch(step, rank):
    g = torch.Generator().manual_seed(step_seed(0, step, rank))
    x = torch.randn(16, 4, generator=g)
    return {"x": x, "y": x.sum(-1, keepdim=True)}


def loss_fn(model, batch):
    loss = torch.nn.functional.mse_loss(model(batch["x"]), batch["y"])
    return loss, {"mse": loss.item()}


def fresh():
    torch.manual_seed(0)
    return Tiny(TinyConfig())


def test_loss_falls_and_files_are_written(tmp_path):
    cfg = LoopConfig(out=tmp_path / "run", steps=60, lr=1e-2, warmup_steps=5, save_every=30, log_every=10,
                     progress=False)
    train(cfg, fresh(), make_batch, loss_fn)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [10, 20, 30, 40, 50, 60]
    assert rows[-1]["loss"] < 0.5 * rows[0]["loss"]
    assert (tmp_path / "run" / "model" / "config.json").is_file()
    assert (tmp_path / "run" / "curves.png").stat().st_size > 1000
    assert not list((tmp_path / "run").glob(".*tmp*"))


def test_resume_is_bit_identical_to_an_uninterrupted_run(tmp_path):
    full = LoopConfig(out=tmp_path / "full", steps=20, lr=1e-2, warmup_steps=3, save_every=10, progress=False)
    train(full, fresh(), make_batch, loss_fn)
    # The "killed" run dies at step 13, after its save at step 10; the re-run picks up from there.
    cut = LoopConfig(out=tmp_path / "cut", steps=20, lr=1e-2, warmup_steps=3, save_every=10, progress=False)

    def dies_at_13(step, rank):
        if step == 13:
            raise KeyboardInterrupt
        return make_batch(step, rank)

    with pytest.raises(KeyboardInterrupt):
        train(cut, fresh(), dies_at_13, loss_fn)
    # Start over from a different init: the loop must load the saved weights, not keep these.
    torch.manual_seed(123)
    train(cut, Tiny(TinyConfig()), make_batch, loss_fn)
    steps = [json.loads(line)["step"] for line in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [10, 20]
    a = load_file(str(tmp_path / "full" / "model" / "model.safetensors"))
    b = load_file(str(tmp_path / "cut" / "model" / "model.safetensors"))
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_resume_into_a_different_model_is_refused(tmp_path):
    cfg = LoopConfig(out=tmp_path / "run", steps=4, warmup_steps=1, save_every=2, progress=False)
    train(cfg, fresh(), make_batch, loss_fn)
    other = Tiny(TinyConfig(width=16))
    with pytest.raises((ValueError, RuntimeError), match="run"):
        train(LoopConfig(out=tmp_path / "run", steps=8, progress=False), other, make_batch, loss_fn)


def test_non_finite_loss_stops_with_the_step():
    def bad_loss(model, batch):
        return model(batch["x"]).sum() * float("nan"), {}

    with pytest.raises(FloatingPointError, match="step 0"):
        train(LoopConfig(out=__import__("pathlib").Path("/nonexistent-never-written"), steps=2, progress=False),
              fresh(), make_batch, bad_loss)


def test_schedule_warms_up_then_decays():
    cfg = LoopConfig(out=None, steps=100, lr=1.0, warmup_steps=10, min_lr_ratio=0.1)
    assert lr_at(cfg, 0) == pytest.approx(0.1)
    assert lr_at(cfg, 9) == pytest.approx(1.0)
    assert lr_at(cfg, 99) == pytest.approx(0.1, abs=1e-3)
    assert lr_at(cfg, 50) < lr_at(cfg, 20)


def test_two_processes_with_torchrun_keep_identical_weights(tmp_path):
    """The same loop under `torchrun --nproc_per_node 2` (gloo on CPU): gradients are synced."""
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "job.py"
    script.write_text(
        "import sys, torch\n"
        f"sys.path.insert(0, {str(Path(__file__).parent)!r})\n"
        "from test_training_loop import Tiny, TinyConfig, make_batch, loss_fn\n"
        "from roboalign_env.training.loop import LoopConfig, train\n"
        "torch.manual_seed(0)\n"
        f"m = train(LoopConfig(out={str(tmp_path / 'run')!r}, steps=6, warmup_steps=1, save_every=6, progress=False),"
        " Tiny(TinyConfig()), make_batch, loss_fn)\n"
        "import torch.distributed as dist\n"
        f"open({str(tmp_path)!r} + f'/rank{{dist.get_rank()}}.txt', 'w').write("
        "f'RANK {dist.get_rank()} {dist.get_world_size()} {m.net[0].weight.sum().item()}')\n"
    )
    out = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(script)],
                         capture_output=True, text=True, timeout=300, env={**__import__("os").environ, "OMP_NUM_THREADS": "1"})
    assert out.returncode == 0, out.stderr[-2000:]
    # each rank writes its own file: two processes printing to one pipe can interleave their lines
    ranks = sorted(p.read_text().split()[1:] for p in tmp_path.glob("rank*.txt"))
    assert [r[:2] for r in ranks] == [["0", "2"], ["1", "2"]]
    assert ranks[0][2] == ranks[1][2]  # identical weights on both ranks
    assert (tmp_path / "run" / "model" / "model.safetensors").is_file()


def test_bf16_falls_back_to_float32_on_a_cpu_without_native_bf16(tmp_path, monkeypatch, capsys):
    """Emulated bf16 autocast is several times slower than float32: on a CPU without native bf16 a run asked
    for bf16 trains in float32 (no autocast) and says so; with native bf16 it keeps bf16."""
    import roboalign_env.training.loop as loop

    if torch.cuda.is_available():
        pytest.skip("the fallback is for CPU training")
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: False)
    autocast = []

    def recording_loss(model, batch):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return loss_fn(model, batch)

    train(LoopConfig(out=tmp_path / "run", steps=2, mixed_precision="bf16", progress=False), fresh(), make_batch,
          recording_loss)
    assert autocast == [False, False] and "training in float32" in capsys.readouterr().out
    monkeypatch.setattr(loop, "cpu_has_native_bf16", lambda: True)
    assert loop.effective_precision("bf16") == "bf16" and loop.effective_precision("no") == "no"
