"""Fast offscreen rendering of robosuite scenes with MuJoCo's own renderer.

Rendering dominates collection cost on a CPU (Mesa llvmpipe). At 64x64 the picture barely changes
without shadows, reflections and multisampling, while the cost drops severalfold, so those are
off. ``mujoco.Renderer`` already returns images upright (row 0 is the top of the picture), unlike
robosuite's raw OpenGL camera observations, which are bottom-up.

Whatever renders calls :func:`setup_rendering` first (``make_env`` and :class:`FastRenderer` do);
importing this package or any model has no such side effect.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import mujoco

CAMERA = "agentview"
"""The recording camera unless a collection names another (a camera setting, :func:`parse_camera`)."""


def setup_rendering() -> None:
    """Prepare this process for headless MuJoCo rendering; call it before mujoco or robosuite is imported.

    - MuJoCo picks its OpenGL backend when first imported: the headless EGL default is set here
      (``MUJOCO_GL=osmesa`` in the environment wins).
    - Mesa's software renderers (llvmpipe, OSMesa) and triton (bundled with CUDA builds of torch)
      each carry an LLVM; importing triton after Mesa has loaded segfaults the process (seen with
      torch 2.14 + Mesa 22), e.g. when torchvision is imported after the first render. Importing
      triton first is safe, so a process that renders and later uses torch stays alive.

    Idempotent and cheap after the first call.
    """
    os.environ.setdefault("MUJOCO_GL", "egl")
    try:
        import triton  # noqa: F401
    except Exception:  # absent (CPU-only torch) or unusable: nothing to protect against
        pass


def parse_camera(camera: str) -> tuple[str, float]:
    """A camera setting: the name of one of the scene's cameras, optionally moved back along its line of sight
    by whole centimetres. ``"agentview+50cm"`` -> ``("agentview", 0.5)``; ``"agentview"`` -> ``("agentview", 0.0)``.
    """
    name, plus, back = camera.partition("+")
    if not name or (plus and not (back.endswith("cm") and back[:-2].isdigit())):
        raise ValueError(f"camera {camera!r}: expected the name of a camera of the scene (agentview, frontview, "
                         "sideview, birdview), optionally moved back in whole centimetres: agentview+50cm")
    return name, int(back[:-2]) / 100 if plus else 0.0


def place_camera(model: "mujoco.MjModel", camera: str) -> str:
    """Apply a camera setting to ``model`` (moving the camera there: once per model) and return the name of the
    scene camera to render."""
    import mujoco

    name, back = parse_camera(camera)
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, name)
    if cam < 0:
        raise ValueError(f"camera {camera!r}: this scene has no camera {name!r}")
    if back:
        if model.cam_bodyid[cam] != 0:
            raise ValueError(f"camera {camera!r}: only a camera fixed to the world can be moved back")
        rotation = np.empty(9)
        mujoco.mju_quat2Mat(rotation, model.cam_quat[cam])
        model.cam_pos[cam] += back * rotation.reshape(3, 3)[:, 2]  # a camera looks along its -z axis
    return name


class FastRenderer:
    """Renders ``camera`` (a camera setting, :func:`parse_camera`) of a MuJoCo model at ``size`` x ``size`` as
    upright uint8 RGB.

    Build it after the model's last rebuild (our envs use ``hard_reset=False``, so once per env); a moved camera
    is moved in the model, so one renderer per model.
    """

    def __init__(self, model: "mujoco.MjModel", size: int = 64, camera: str = CAMERA):
        setup_rendering()
        import mujoco

        if size < 8:
            raise ValueError(f"image size must be >= 8 pixels, got {size}")
        model.vis.quality.offsamples = 0
        model.vis.global_.offwidth = max(size, 1)
        model.vis.global_.offheight = max(size, 1)
        self.size = size
        self.camera = camera
        self._camera_name = place_camera(model, camera)
        try:
            self._renderer = mujoco.Renderer(model, size, size)
        except mujoco.FatalError as err:
            raise RuntimeError(
                f"MuJoCo could not create an offscreen OpenGL context (MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}): "
                f"{err}. Call roboalign_env.sim.rendering.setup_rendering() before importing mujoco, or set "
                f"MUJOCO_GL=egl (or osmesa) in the environment."
            ) from err
        flags = self._renderer.scene.flags
        flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        flags[mujoco.mjtRndFlag.mjRND_SKYBOX] = 0
        # robosuite puts collision geoms in group 0 and visual meshes in group 1: draw visuals only.
        self._option = mujoco.MjvOption()
        self._option.geomgroup[0] = 0

    def render(self, data: "mujoco.MjData") -> np.ndarray:
        """Return an upright (size, size, 3) uint8 image of ``data``'s current state."""
        self._renderer.update_scene(data, camera=self._camera_name, scene_option=self._option)
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()


def env_renderer(env, size: int = 64, camera: str = CAMERA) -> FastRenderer:
    """A :class:`FastRenderer` for a robosuite env's underlying MuJoCo model."""
    return FastRenderer(env.sim.model._model, size, camera)
