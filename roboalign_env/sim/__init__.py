"""robosuite side: scripted sources, collection, rendering, oracle labels and RobotWorldBench.

Two things must happen before any submodule imports mujoco or robosuite:

- MuJoCo picks its OpenGL backend when first imported, so the headless EGL default is set here
  (``MUJOCO_GL=osmesa`` in the environment wins).
- Mesa's software renderers (llvmpipe, OSMesa) and triton (bundled with CUDA builds of torch) each
  carry an LLVM; importing triton after Mesa has loaded segfaults the process (seen with torch
  2.14 + Mesa 22), e.g. when torchvision is imported after the first render. Importing triton
  first is safe, so every process that renders and later uses torch stays alive.
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")

try:
    import triton  # noqa: F401
except Exception:  # absent (CPU-only torch) or unusable: nothing to protect against
    pass
