"""Crash-safe saving: a training checkpoint or a model folder can be killed at any instant and picked up
again; files are fsynced before they are renamed into place and get the umask's default mode."""

import dataclasses
import json
import os
import shutil
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from test_training_loop import Tiny, TinyConfig, fresh, loss_fn, make_batch

from roboalign_env.data import io
from roboalign_env.training import loop
from roboalign_env.training.loop import LoopConfig, train

# Every call that changes the file system or makes it durable; fsync counts, as a kill just before
# it is a kill with the file's data possibly still unwritten. ``_exchange`` is save_checkpoint's swap.
OPS = ("mkdir", "rename", "replace", "symlink", "unlink", "rmdir", "fchmod", "fsync")


class Killed(BaseException):
    """A simulated kill (a BaseException, like the KeyboardInterrupt or SystemExit of a real one)."""


class Killer:
    """While ``active``, counts the calls of ``OPS``; the ``at``-th raises ``Killed``, and so does every
    later one: a killed process changes nothing more, its clean-up handlers included."""

    def __init__(self, monkeypatch, at: int | None = None):
        self.at, self.calls, self.dead, self.active = at, [], False, False
        for name in OPS:
            monkeypatch.setattr(os, name, self._wrap(name, getattr(os, name)))
        monkeypatch.setattr(io, "_exchange", self._wrap("exchange", io._exchange))

    def _wrap(self, name, real):
        def op(*args, **kwargs):
            if self.active:
                self.calls.append((name, args[0] if args else None))
                if self.dead or len(self.calls) == self.at:
                    self.dead = True
                    raise Killed(f"killed at call {len(self.calls)}: {name}")
            return real(*args, **kwargs)

        return op

    def during(self, fn):
        """``fn`` with the counting on while it runs."""

        def wrapped(*args, **kwargs):
            self.active = True
            try:
                return fn(*args, **kwargs)
            finally:
                self.active = False

        return wrapped


def _equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _cfg(out):
    return LoopConfig(out=out, steps=4, lr=1e-2, warmup_steps=1, save_every=2, eval_every=2, progress=False)


@pytest.fixture
def reference(tmp_path, monkeypatch):
    """An uninterrupted run (saves at steps 2 and 4): its weights after every save."""
    monkeypatch.setattr(loop, "plot_metrics", lambda *args: None)  # not part of a checkpoint; saves time
    weights = {}

    def keep(model, step):
        weights[step] = {k: v.detach().clone() for k, v in model.state_dict().items()}
        return {}

    train(_cfg(tmp_path / "reference"), fresh(), make_batch, loss_fn, keep)
    return weights


def test_a_save_killed_at_any_call_resumes_to_the_same_weights(tmp_path, monkeypatch, reference):
    counter = Killer(monkeypatch)
    monkeypatch.setattr(loop, "_save", counter.during(loop._save))
    train(_cfg(tmp_path / "count"), fresh(), make_batch, loss_fn)
    kinds = {name for name, _ in counter.calls}
    assert kinds >= {"mkdir", "rename", "replace", "symlink", "unlink", "rmdir", "fchmod", "fsync"}, kinds
    points = len(counter.calls)  # both saves: the first one, and the one replacing it
    assert points > 40
    monkeypatch.undo()
    monkeypatch.setattr(loop, "plot_metrics", lambda *args: None)

    for at in range(1, points + 1):
        out = tmp_path / f"kill_{at:03d}"
        killer = Killer(monkeypatch, at)
        monkeypatch.setattr(loop, "_save", killer.during(loop._save))
        with pytest.raises(Killed):
            train(_cfg(out), fresh(), make_batch, loss_fn)
        committed = [a for name, a in killer.calls[:at - 1]
                     if name == "replace" and os.path.basename(a) == ".checkpoint.tmp"]
        monkeypatch.undo()
        monkeypatch.setattr(loop, "plot_metrics", lambda *args: None)

        # What a reader sees right after the kill: the last committed save, whole, or nothing.
        if committed:
            step = json.loads((out / "checkpoint" / "resume" / "state.json").read_text())["step"]
            assert step == 2 * len(committed), at
            weights = load_file(str(out / "model" / "model.safetensors"))
            assert _equal(weights, reference[step]), f"kill {at}: the weights are not those of step {step}"
            assert _equal(load_file(str(out / "checkpoint" / "model" / "model.safetensors")), weights)
        else:
            assert not (out / "model" / "model.safetensors").exists(), at

        # A fresh process on the same folder finishes the run exactly; from another init where a
        # save was committed (it must load it), from the same one where it starts over.
        torch.manual_seed(123 if committed else 0)
        train(_cfg(out), Tiny(TinyConfig()), make_batch, loss_fn)
        assert _equal(load_file(str(out / "model" / "model.safetensors")), reference[4]), f"kill {at}"
        assert sorted(p.name for p in out.iterdir()) == ["checkpoint", "checkpoints", "loop_config.json",
                                                         "metrics.jsonl", "model"], at
        assert [p.name for p in (out / "checkpoints").iterdir()] == ["step_00000004"], at
        assert os.readlink(out / "model") == os.path.join("checkpoint", "model")
        shutil.rmtree(out)


def test_an_older_run_folder_resumes_and_switches_to_the_new_layout(tmp_path, monkeypatch, reference):
    out = tmp_path / "run"

    def dies_at_2(step, rank):
        if step == 2:
            raise KeyboardInterrupt
        return make_batch(step, rank)

    with pytest.raises(KeyboardInterrupt):
        train(_cfg(out), fresh(), dies_at_2, loss_fn)
    # Rewrite it as the older layout left it: plain model/ and resume/ folders in the run folder.
    current = out / os.readlink(out / "checkpoint")
    (out / "model").unlink()
    (out / "checkpoint").unlink()
    for part in ("model", "resume"):
        shutil.move(current / part, out / part)
    shutil.rmtree(out / "checkpoints")
    train(_cfg(out), fresh(), make_batch, loss_fn)
    assert _equal(load_file(str(out / "model" / "model.safetensors")), reference[4])
    assert (out / "model").is_symlink() and not (out / "resume").exists()


def test_batches_made_ahead_by_worker_processes_train_to_the_same_weights(tmp_path, monkeypatch, reference):
    monkeypatch.setattr(loop, "plot_metrics", lambda *args: None)
    made = []

    def logged(step, rank):  # runs in the workers: this process never calls it
        made.append(step)
        return make_batch(step, rank)

    out = tmp_path / "run"
    cfg = dataclasses.replace(_cfg(out), loader_workers=2, steps=2)
    train(cfg, fresh(), logged, loss_fn)
    train(dataclasses.replace(cfg, steps=4), fresh(), logged, loss_fn)  # resumed: workers start at step 2
    assert made == []
    assert _equal(load_file(str(out / "model" / "model.safetensors")), reference[4])
    with pytest.raises(ValueError, match="loader_workers must be an integer"):
        train(dataclasses.replace(cfg, out=tmp_path / "bad", loader_workers=-1), fresh(), make_batch, loss_fn)
    assert not (tmp_path / "bad").exists()


def test_resuming_with_another_seed_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(loop, "plot_metrics", lambda *args: None)
    train(LoopConfig(out=tmp_path / "run", steps=2, warmup_steps=1, save_every=2, progress=False), fresh(),
          make_batch, loss_fn)
    with pytest.raises(ValueError, match="seed 0, not 1"):
        train(LoopConfig(out=tmp_path / "run", steps=4, warmup_steps=1, seed=1, progress=False), fresh(),
              make_batch, loss_fn)


def _folder_holds(folder, models) -> int:
    """Which of ``models`` the checkpoint folder holds, whole (config and weights agree)."""
    loaded = Tiny.from_pretrained(folder)
    matches = [i for i, m in enumerate(models)
               if loaded.config.width == m.config.width and _equal(loaded.state_dict(), m.state_dict())]
    assert len(matches) == 1, folder
    return matches[0]


@pytest.mark.parametrize("exchange", [True, False], ids=["renameat2", "fallback"])
def test_replacing_a_model_folder_killed_at_any_call(tmp_path, monkeypatch, exchange):
    """save_checkpoint over an existing folder: at every kill point the folder holds the old or the new
    model whole; only the fallback (no atomic exchange) has a moment without it, which the next save
    rolls back; the next save always leaves the new model and no leftovers."""
    if not exchange:
        monkeypatch.setattr(io, "_exchange", lambda a, b: False)
    torch.manual_seed(1)
    old, new = Tiny(TinyConfig(width=8)), Tiny(TinyConfig(width=16))
    io.save_checkpoint(old, tmp_path / "count" / "model")
    counter = Killer(monkeypatch)
    counter.during(io.save_checkpoint)(new, tmp_path / "count" / "model")
    points = len(counter.calls)
    swaps = [name for name, _ in counter.calls if name in ("exchange", "rename")]
    assert points > 10 and swaps == (["exchange"] if exchange else ["exchange", "rename", "rename"])
    monkeypatch.undo()
    missing = 0
    for at in range(1, points + 1):
        if not exchange:
            monkeypatch.setattr(io, "_exchange", lambda a, b: False)
        folder = tmp_path / f"kill_{at:03d}" / "model"
        io.save_checkpoint(old, folder)
        killer = Killer(monkeypatch, at)
        with pytest.raises(Killed):
            killer.during(io.save_checkpoint)(new, folder)
        monkeypatch.undo()
        if folder.exists():
            _folder_holds(folder, [old, new])
        else:
            missing += 1
            assert not exchange and _folder_holds(folder.with_name(".model.old"), [old, new]) == 0, at
        if not exchange:
            monkeypatch.setattr(io, "_exchange", lambda a, b: False)
        io.save_checkpoint(new, folder)
        assert _folder_holds(folder, [old, new]) == 1
        assert sorted(p.name for p in folder.parent.iterdir()) == ["model"], at
    assert missing == (0 if exchange else 1)


@pytest.fixture
def umask_022():
    old = os.umask(0o022)
    yield 0o022
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_atomic_write_fsyncs_before_the_rename_and_keeps_the_umask_mode(tmp_path, monkeypatch, umask_022):
    calls = []
    for name in ("fsync", "replace"):
        real = getattr(os, name)
        monkeypatch.setattr(os, name, lambda *a, _real=real, _name=name: (calls.append(_name), _real(*a))[1])
    io.atomic_write(tmp_path / "a.txt", lambda f: f.write("hello"), mode="w")
    assert calls == ["fsync", "replace", "fsync"]  # the file, the rename, then its folder
    assert (tmp_path / "a.txt").read_text() == "hello"
    assert _mode(tmp_path / "a.txt") == 0o644
    os.umask(0o027)
    io.atomic_write(tmp_path / "a.txt", lambda f: f.write(b"again"))
    assert _mode(tmp_path / "a.txt") == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"]


def test_episodes_manifests_and_checkpoints_get_the_umask_mode(tmp_path, monkeypatch, umask_022):
    io.atomic_savez(tmp_path / "episode.npz", frames=np.zeros((2, 3), np.uint8))
    io.write_jsonl(tmp_path / "manifest.jsonl", [{"episode": 0}])
    io.save_checkpoint(fresh(), tmp_path / "exported")
    io.save_checkpoint(fresh(), tmp_path / "exported")
    monkeypatch.setattr(loop, "plot_metrics", lambda *args: None)
    train(LoopConfig(out=tmp_path / "run", steps=2, warmup_steps=1, save_every=1, progress=False), fresh(),
          make_batch, loss_fn)
    files = [p for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) >= 10
    assert {str(p.relative_to(tmp_path)): _mode(p) for p in files} == {str(p.relative_to(tmp_path)): 0o644
                                                                       for p in files}
    folders = [p for p in tmp_path.rglob("*") if p.is_dir() and not p.is_symlink()]
    assert {_mode(p) for p in folders} == {0o755}
