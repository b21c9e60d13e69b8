"""robosuite side: scripted sources, collection, rendering, oracle labels and RobotWorldBench.

Importing this package has no side effects; code that renders calls
:func:`roboalign_env.sim.rendering.setup_rendering` before mujoco or robosuite is imported.
"""
