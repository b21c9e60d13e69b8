"""roboalign_env: RoboAlign-R1 world model, judge and Gymnasium simulator."""

__version__ = "0.1.0"
