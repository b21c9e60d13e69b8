"""Which fixed camera would show each source's arm motion best? Geometry only, before anything is re-collected.

Every collection, model and report so far sees the scene through robosuite's `agentview`. `eval-control`
sends the arm 14-52 cm with 16 constant commands, and in two sources the dream stays at chance: in
PickPlaceCan the UR5e's end effector sits at the top edge of the 64x64 frame, and in Stack the Sawyer's
arm leaves the view. For each source and each fixed camera of its scene, from the robosuite rollouts of
`eval-control`'s held-out starts (the same cache) and from the training collections' recorded end-effector
positions, this reports:

- ``in_view_counterfactual``: the share of the commanded rollouts' frames (six directions, every step)
  whose end effector projects inside the image;
- ``separation_px_median`` / ``_min_axis``: how many pixels of a ``--image-size`` frame separate the end
  effector after ``+a`` from after ``-a`` at the last step (median over starts; per axis, and the weakest
  axis; an end effector out of view counts at the image's border, since motion past it is not seen): the
  motion a tokenizer and a transformer have to draw (an 8x8 code grid on 64 pixels has 8-pixel cells);
- ``in_view_collection``: the share of every collection frame whose end effector is in view;

and draws each camera's first frame of one start with the six endpoints (``camera_choice.png``).
It neither renders rollouts nor sees occlusion: a camera it favours still needs a look at its frames.

    python benchmarks/camera_choice.py --episodes data/ctl --collections data/ctl data/push
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tyro

from roboalign_env.data.episodes import load_episode, read_manifest
from roboalign_env.data.io import atomic_write
from roboalign_env.eval.control import AXES, DIRECTIONS, choose_starts, real_rollouts
from roboalign_env.eval.media import pyplot, save_figure
from roboalign_env.sim.collect import CameraView, camera_view
from roboalign_env.sim.rendering import FastRenderer, parse_camera

CAMERAS = ("agentview", "agentview+25cm", "agentview+50cm", "frontview", "sideview", "birdview", "robot0_robotview")
"""The fixed cameras of robosuite's scenes (the robot-view one hangs from the robot's base, which stays put), and
``<camera>+<N>cm``: that camera moved N cm back along its line of sight (same direction and field of view)."""


@dataclass(frozen=True)
class Args:
    episodes: Path = Path("data/ctl")
    """The collection whose held-out starts eval-control uses."""
    collections: tuple[Path, ...] = (Path("data/ctl"),)
    """Collections whose recorded end-effector positions are counted."""
    cameras: tuple[str, ...] = CAMERAS
    starts_per_source: int = 8
    steps: int = 16
    magnitude: float = 0.8
    image_size: int = 64
    real_cache: Path = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"), "roboalign_env", "control")
    out: Path = Path("benchmarks/results/camera_choice.json")


def view_of(source: str, camera: str) -> CameraView | None:
    """The camera's pose and field of view in the source's scene, or None when the scene has no such camera."""
    try:
        return camera_view(source, camera)
    except ValueError:
        return None


def start_frame(source: str, seed: int, camera: str, size: int) -> np.ndarray:
    """The scene at an episode's start, as ``camera`` sees it."""
    from roboalign_env.sim.robosuite_env import make_env, reset_env
    from roboalign_env.sim.sources import SOURCES

    env = make_env(SOURCES[source])
    renderer = FastRenderer(env.sim.model._model, size, camera)
    reset_env(env, seed)
    frame = renderer.render(env.sim.data._data)
    renderer.close()
    env.close()
    return frame


def recorded_positions(collection: Path) -> dict[str, np.ndarray]:
    """Every recorded end-effector position of a collection, per source (N, 3)."""
    out: dict[str, list] = {}
    for row in read_manifest(collection):
        ep = load_episode(collection / row["path"], frames=False)
        out.setdefault(ep.meta["source"], []).append(ep.state["eef_pos"])
    return {source: np.concatenate(p) for source, p in out.items()}


def main(args: Args) -> dict:
    starts = choose_starts(args.episodes, (), args.starts_per_source, args.steps, args.magnitude)
    real = real_rollouts(starts, args.image_size, args.real_cache)
    sources = sorted({s.source for s in starts})
    for camera in args.cameras:
        parse_camera(camera)
    unknown = [c for c in args.cameras if all(view_of(source, c) is None for source in sources)]
    if unknown:
        raise ValueError(f"cameras: {unknown} are in none of the scenes of {sources}")
    recorded = {str(c): recorded_positions(c) for c in args.collections}
    result = {"command": "python " + " ".join(sys.argv), "image_size": args.image_size, "magnitude": args.magnitude,
              "steps": args.steps, "starts_per_source": args.starts_per_source, "per_source": {}}
    fig_rows = []
    for source in sources:
        eef = np.stack([r.eef[: len(DIRECTIONS)] for s, r in zip(starts, real) if s.source == source])  # S,6,T,3
        seed = next(s.seed for s in starts if s.source == source)
        rows = {}
        for camera in args.cameras:
            view = view_of(source, camera)
            if view is None:
                continue
            px = view.pixels(eef[:, :, -1], args.image_size).clip(0, args.image_size)  # S, 6, 2 at the last step
            per_axis = {axis: float(np.median(np.linalg.norm(px[:, 2 * i] - px[:, 2 * i + 1], axis=-1)))
                        for i, axis in enumerate(AXES)}
            rows[camera] = {
                "in_view_counterfactual": float(view.in_view(eef).mean()),
                "in_view_start": float(view.in_view(eef[:, 0, 0]).mean()),
                "separation_px_median": per_axis, "separation_px_min_axis": min(per_axis.values()),
                "in_view_collection": {c: float(view.in_view(p[source]).mean()) if source in p else None
                                       for c, p in recorded.items()},
            }
            big = 2 * args.image_size  # the picture's frames, drawn larger than the data's
            fig_rows.append((source, camera, start_frame(source, seed, camera, big), view.pixels(eef[0, 0, 0], big),
                             view.pixels(eef[0, :, -1], big)))
        result["per_source"][source] = rows
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1).encode()))
    draw(fig_rows, args.out.with_suffix(".png"))
    for source, rows in result["per_source"].items():
        for camera, r in rows.items():
            coll = ", ".join(f"{Path(k).name} {v:.2f}" for k, v in r["in_view_collection"].items() if v is not None)
            sep = " / ".join(f"{v:.1f}" for v in r["separation_px_median"].values())
            print(f"{source:20s} {camera:17s} in view: commands {r['in_view_counterfactual']:.2f}, start "
                  f"{r['in_view_start']:.2f}, collection {coll}; +a vs -a px (x / y / z) {sep}")
    print(f"wrote {args.out} and {args.out.with_suffix('.png')}; reproduce: {result['command']}")
    return result


def draw(rows: list, png: Path) -> None:
    """One row per source, one column per camera: the start frame, the end effector (white) and where each
    command takes it after the last step (red +x/-x, green +y/-y, blue +z/-z; filled +, hollow -)."""
    plt = pyplot()
    sources = sorted({r[0] for r in rows})
    cameras = list(dict.fromkeys(r[1] for r in rows))
    fig, axes = plt.subplots(len(sources), len(cameras), figsize=(2.2 * len(cameras), 2.3 * len(sources)),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for source, camera, frame, start, ends in rows:
        ax = axes[sources.index(source), cameras.index(camera)]
        ax.imshow(frame)
        ax.set_xlim(0, frame.shape[1])
        ax.set_ylim(frame.shape[0], 0)
        ax.scatter(start[0], start[1], c="white", s=18, edgecolors="black")
        for i, (x, y) in enumerate(ends):
            color = "rgb"[i // 2]
            ax.scatter(x, y, s=22, facecolors=color if i % 2 == 0 else "none", edgecolors=color)
        ax.set_title(f"{source.split('_')[0]} / {camera}", fontsize=7)
    fig.tight_layout()
    save_figure(fig, png, dpi=70)


if __name__ == "__main__":
    main(tyro.cli(Args))
