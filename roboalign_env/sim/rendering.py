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


class FastRenderer:
    """Renders ``camera`` of a MuJoCo model at ``size`` x ``size`` as upright uint8 RGB.

    Build it after the model's last rebuild (our envs use ``hard_reset=False``, so once per env).
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
        self._renderer.update_scene(data, camera=self.camera, scene_option=self._option)
        return self._renderer.render().copy()

    def close(self) -> None:
        self._renderer.close()


def env_renderer(env, size: int = 64) -> FastRenderer:
    """A :class:`FastRenderer` for a robosuite env's underlying MuJoCo model."""
    return FastRenderer(env.sim.model._model, size)
