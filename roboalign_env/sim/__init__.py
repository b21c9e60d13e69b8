"""robosuite side: scripted sources, collection, rendering, oracle labels and RobotWorldBench.

MuJoCo picks its OpenGL backend when first imported, so the headless EGL default is set here,
before any submodule imports mujoco or robosuite (``MUJOCO_GL=osmesa`` in the environment wins).
"""

import os

os.environ.setdefault("MUJOCO_GL", "egl")
