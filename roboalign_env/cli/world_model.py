"""World-model commands: ``train-tokenizer``, ``train-world-model``, ``eval-world-model``, ``eval-control``."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from roboalign_env.assets import DEFAULT_MODEL
from roboalign_env.cli.options import Nested, loop_defaults
from roboalign_env.models.transformer import MODEL_WINDOW, SWR_WINDOW, Window
from roboalign_env.training.loop import LoopConfig
from roboalign_env.training.tokenizer import MIN_DYNAMICS_GAIN


@dataclass(frozen=True)
class TrainTokenizer:
    """Stage 1: train the context/dynamics video tokenizer on T=8 clips (resumable)."""

    episodes: Path = Path("data/episodes")
    """Collection folder written by `roboalign collect` (its "train" episodes are used)."""
    batch_size: int = 8
    """Clips per step (each 8 frames)."""
    dynamics_grid: int = 4
    """Side of each later frame's dynamics-code grid (4: 16 codes per frame; 8: 64, one per 8x8 pixels at 64x64)."""
    min_dynamics_gain: float | None = MIN_DYNAMICS_GAIN
    """After training, refuse (exit 2; the model stays saved) a tokenizer whose validation SSIM on its dynamics
    frames is not this much above copying the context frame: it ignores its dynamics codes. None: no check."""
    loop: Nested[LoopConfig] = loop_defaults("runs/tokenizer", steps=3000, lr=1e-3, every=250, warmup_steps=200)
    """The training loop (run folder: model/, metrics.jsonl, curves.png)."""

    def run(self) -> None:
        from roboalign_env.models.tokenizer import TokenizerConfig
        from roboalign_env.training.tokenizer import train_tokenizer

        train_tokenizer(self.episodes, self.loop, self.batch_size, TokenizerConfig(dynamics_grid=self.dynamics_grid),
                        min_dynamics_gain=self.min_dynamics_gain)
        print(f"tokenizer in {self.loop.out / 'model'}; metrics in {self.loop.out / 'metrics.jsonl'}")


@dataclass(frozen=True)
class TrainWorldModel:
    """Stage 2: train the action-conditioned transformer on tokenized clips (--clip-frames; resumable)."""

    episodes: tuple[Path, ...] = (Path("data/episodes"),)
    """Collection folders written by `roboalign collect`: their "train" episodes are pooled for training
    and their "val" episodes for validation (one folder, or several such as a scripted collection and an
    `explore_push` one)."""
    tokenizer: Path = Path("runs/tokenizer/model")
    """Trained tokenizer folder (config.json + model.safetensors), kept frozen."""
    action_mode: Literal["embed", "bins"] = "bins"
    """Actions as 7 tokens of 256 bins ('bins', lower validation loss in our comparison) or one
    zero-initialized projected slot ('embed')."""
    layers: int = 4
    """Transformer layers."""
    hidden_size: int = 256
    """Transformer width (the MLP is 3x as wide)."""
    action_to_codes: bool = False
    """Also add the action (zero-initialized linear layer) to the input of every dynamics code of the
    frame it leads to, so that each code sees the command."""
    action_dropout: float = 0.0
    """Probability of training a clip with the "no action" input instead of its actions (> 0 makes
    classifier-free guidance possible)."""
    guidance: float = 1.0
    """The model's default classifier-free guidance scale at decoding (1: none; > 1 needs --action-dropout > 0)."""
    swr_window: int | None = SWR_WINDOW
    """The model's own SWR window at decoding, what the environment and eval-control use unless told otherwise
    (None: no re-encoding). An anchor-frames model trained on longer --clip-frames decodes longer windows."""
    parallel_frames: bool = False
    """Predict all of a frame's dynamics codes in one forward pass, each from the previous frame's code at
    its position, the action and everything before (block-causal attention), instead of one code per pass."""
    markov_frames: bool = False
    """With --parallel-frames: predict each frame from the previous frame's codes and the action alone (its block
    sees the context and itself, not the frames before), so the motion has to come from the action instead of
    being extrapolated from the clip's history."""
    anchor_frames: bool = False
    """With --markov-frames: predict every frame of an SWR window from the window's first frame and the sum of the
    actions since (never from a predicted frame), so that motions too small to change a code in one step still add
    up, and a window's frames do not compound each other's errors (fine-tunes a --markov-frames checkpoint)."""
    digit_head: bool = False
    """Predict each dynamics code as its FSQ digits, one softmax per digit (7 + 5 + 5 + 5 + 5 outputs), instead
    of one softmax over all 4375 codes, so that neighbouring codes (similar pixels) share what is learned."""
    refine_passes: int = 1
    """With --parallel-frames: decode each frame in this many passes (MaskGIT-style: each pass commits the codes
    it is surest of and the next fills in the rest knowing them); > 1 trains the model to read a random part of
    each frame's true codes and predict the others."""
    change_weight: float = 1.0
    """Loss weight on the dynamics codes that change from the previous frame (1: plain cross-entropy)."""
    hold_still_codes: bool = False
    """Train on dynamics codes held at their previous value in every cell where no pixel moved (by more than
    10/255), so the codes to predict change only where the pixels do (the tokenizer's rounding flicker removed)."""
    rollout_depth: int = 0
    """Train each clip from the model's own greedy predictions of its previous frames, up to this many steps
    deep (drawn per clip from 0, the true frames, to this), so that it learns to correct its own drift
    (--parallel-frames models; each extra step costs one forward pass without gradients)."""
    init_from: Path | None = None
    """Fine-tune: start from this world model's transformer (a world-model folder such as the package's
    default world_model/, or a transformer folder) instead of a new one; its sizes replace --layers,
    --hidden-size and --action-mode, while --action-to-codes, --action-dropout, --guidance, --swr-window,
    --refine-passes and --anchor-frames apply (new parts start at zero). Use the tokenizer it was trained with
    (--tokenizer)."""
    clip_frames: int = 8
    """Frames per training and validation clip (the first is the context). An anchor-frames model learns each
    step since a window's first frame up to this minus 1, so it decodes SWR windows of up to this many frames
    with every step trained."""
    batch_size: int = 16
    """Clips per step (each --clip-frames frames)."""
    loop: Nested[LoopConfig] = loop_defaults("runs/world_model", steps=3000, lr=1e-3, every=250, warmup_steps=200)
    """The training loop (run folder: model/ (the transformer), world_model/ (tokenizer + transformer), metrics, curves)."""

    def run(self) -> None:
        from roboalign_env.models.transformer import DynamicsTransformerConfig
        from roboalign_env.training.world_model import train_world_model

        config = DynamicsTransformerConfig(action_mode=self.action_mode, num_layers=self.layers,
                                           hidden_size=self.hidden_size, intermediate_size=3 * self.hidden_size,
                                           action_to_codes=self.action_to_codes, action_dropout=self.action_dropout,
                                           guidance=self.guidance, parallel_frames=self.parallel_frames,
                                           digit_head=self.digit_head, markov_frames=self.markov_frames,
                                           refine_passes=self.refine_passes, anchor_frames=self.anchor_frames,
                                           swr_window=self.swr_window)
        train_world_model(self.episodes, self.tokenizer, self.loop, self.batch_size, config, init_from=self.init_from,
                          change_weight=self.change_weight, hold_still=self.hold_still_codes,
                          rollout_depth=self.rollout_depth, clip_frames=self.clip_frames)
        print(f"world model in {self.loop.out / 'world_model'}; metrics in {self.loop.out / 'metrics.jsonl'}")


@dataclass(frozen=True)
class EvalWorldModel:
    """Roll out a world model on held-out episodes (real first frame, real actions) without re-encoding
    (an anchor-frames model: its longest window) and with SWR, and compare with the real frames:
    PSNR/SSIM/LPIPS against horizon, time, sequence length."""

    model: Path = Path("runs/world_model/world_model")
    """World-model folder (tokenizer/ + transformer/ + manifest.json)."""
    episodes: Path = Path("data/episodes")
    """Collection folder; its held-out ("test") episodes are used."""
    out: Path = Path("runs/world_model/eval")
    """Output folder: results.json, metrics_vs_horizon.png, side_by_side.mp4."""
    horizon: int = 64
    """Frames to predict (training clips are 8 frames; 64 is 8x that)."""
    window: int = SWR_WINDOW
    """SWR window W in frames (context + W-1 generated; the paper's), compared with the model's longest."""
    limit: int | None = None
    """Evaluate only the first this-many held-out episodes."""
    batch_size: int = 16
    """Rollouts per forward pass."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    perceptual: Literal["st-lpips", "lpips"] = "st-lpips"
    """Perceptual distance ('lpips' needs torchvision's AlexNet weights on disk)."""

    def run(self) -> None:
        from roboalign_env.device import resolve_device
        from roboalign_env.eval.world_model_eval import run_evaluation

        res = run_evaluation(self.model, self.episodes, self.out, self.horizon, self.limit, self.window,
                             batch_size=self.batch_size, device=resolve_device(self.device), perceptual=self.perceptual)
        print(f"tokenizer reconstruction of held-out clips: {res['tokenizer_reconstruction']}")
        for name, run in res["runs"].items():
            for h, m in run["at_horizon"].items():
                print(f"{name:>8} h={h:>2}: PSNR {m['psnr']:.2f}  SSIM {m['ssim']:.4f}  {res['perceptual_metric']} {m['lpips']:.4f}")
            print(f"{name:>8} {run['ms_per_frame']:.1f} ms/frame, total {run['total_seconds']:.1f} s, "
                  f"peak sequence {run['peak_sequence_length']}")
        print(f"SWR vs baseline (window {res['baseline_window']}): {res['swr_vs_baseline']}\nwrote {self.out}")


@dataclass(frozen=True)
class EvalControl:
    """Does the dream follow the actions? From held-out starts restarted exactly in robosuite, drive
    robosuite and the world model (greedy, the model's own SWR window, as the environment uses, unless --window) with
    constant commands per axis and for the gripper, the episode's own actions and another episode's; report direction
    accuracy, separation ratios, the action swap, probe tracking error and frame metrics (control.json,
    control_per_step.png, contact_sheet.png)."""

    model: Path = DEFAULT_MODEL / "world_model"
    """World-model folder (tokenizer/ + transformer/ + manifest.json), or a packed model folder holding one in
    world_model/; the default is the shipped model."""
    episodes: Path = Path("data/episodes")
    """Collection folder written by `roboalign collect`; its held-out ("test") episodes are the starts."""
    probe: Path | None = Path("checkpoints/probe")
    """State-probe folder for the end-effector/object numbers; None skips them."""
    out: Path = Path("runs/eval_control")
    """Output folder: control.json, control_per_step.png, contact_sheet.png."""
    starts_per_source: int = 8
    """Held-out starts per source."""
    steps: int = 16
    """Steps of every rollout."""
    magnitude: float = 0.8
    """Size of the constant counterfactual commands, in the controller's [-1, 1] action units."""
    sources: tuple[str, ...] = ()
    """Sources to evaluate; empty: every source with held-out episodes in the collection."""
    device: str = "auto"
    """'auto' (CUDA when available), 'cpu' or 'cuda'."""
    perceptual: Literal["st-lpips", "lpips"] = "st-lpips"
    """Perceptual distance ('lpips' needs torchvision's AlexNet weights on disk)."""
    guidance: float | None = None
    """Classifier-free guidance scale on the actions (None: the model's default, as the environment uses)."""
    passes: int | None = None
    """Refinement passes per frame of a model trained with --refine-passes (None: the model's default)."""
    temperature: float = 0.0
    """0: greedy (the report's standard); above 0: sample the dream at this temperature (the environment's
    default is 1), each rollout from its own seed."""
    window: Window = MODEL_WINDOW
    """SWR window W in frames (context + W-1 generated); "model": the model's own (what the environment uses);
    None: no re-encoding."""
    real_cache: Path | None = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "roboalign_env", "control")
    """Folder keeping robosuite's rollouts of each start (keyed by the start, its actions, the image size and the
    robosuite and MuJoCo versions), so a later report on the same collection, for another model or decoding,
    does not simulate them again; None: simulate every time."""
    tokenizer_only: bool = False
    """Replace the dream by the model's tokenizer encoding and decoding the real frames (each later SWR window
    against its own reconstruction of the window's first frame, as a dream re-encodes its own frames): the ceiling
    the tokenizer sets, what a perfect transformer would reach."""

    def run(self) -> None:
        from roboalign_env.cli.options import command_line
        from roboalign_env.device import resolve_device
        from roboalign_env.eval.control import evaluate_control
        from roboalign_env.eval.control_targets import control_shortfall

        res = evaluate_control(self.model, self.episodes, self.out, self.probe, self.starts_per_source, self.steps,
                               self.magnitude, self.sources, device=resolve_device(self.device),
                               perceptual=self.perceptual, command=command_line(), guidance=self.guidance,
                               window=self.window, tokenizer_only=self.tokenizer_only, passes=self.passes,
                               temperature=self.temperature, real_cache=self.real_cache)
        h = res["headline"]
        fmt = lambda x: "n/a" if x is None else f"{x:.3f}"  # noqa: E731
        print(f"direction accuracy {fmt(h['direction_accuracy'])} (chance {1 / 6:.3f}; by direction of change "
              f"{fmt(h['direction_accuracy_by_change'])}); per source: "
              + ", ".join(f"{k} {fmt(v)}" for k, v in h["direction_accuracy_per_source"].items()))
        print(f"separation ratio (median) {fmt(h['separation_ratio_median'])}, gripper closed vs open "
              f"{fmt(h['gripper_separation_ratio_median'])}; action swap own/other pixel error "
              f"{fmt(h['swap_pixel_ratio_own_over_other'])}")
        if "tracking_eef_cm" in h:
            t = h["tracking_eef_cm"]
            print(f"end effector over {self.steps} steps: dream {fmt(t['dream'])} cm, nothing moves "
                  f"{fmt(t['nothing_moves'])} cm, probe on real {fmt(t['probe_on_real'])} cm; "
                  f"action swap own/other {fmt(h['swap_eef_ratio_own_over_other'])}")
            print(f"control shortfall {fmt(control_shortfall(h)['total'])} of 6 (0: every control target met; "
                  "roboalign_env/eval/control_targets.py)")
        for name in ("psnr", "ssim", "moving_psnr"):
            print(f"{name}: dream {fmt(h[name]['dream'])}, nothing moves {fmt(h[name]['nothing_moves'])}")
        print(f"wrote {self.out / 'control.json'}, control_per_step.png, contact_sheet.png")


COMMANDS = {"train-tokenizer": TrainTokenizer, "train-world-model": TrainWorldModel, "eval-world-model": EvalWorldModel,
            "eval-control": EvalControl}
