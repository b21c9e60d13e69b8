"""The Gymnasium environments.

- :mod:`.core`: the batched dream (world model + student reward + seed clips) behind both dream envs;
- :mod:`.world`: ``RoboAlignWorld-v0``, one episode at a time;
- :mod:`.vector`: the native vector env ``gym.make_vec("RoboAlignWorld-v0", num_envs=N)``;
- :mod:`.sb3`: the Stable-Baselines3 ``VecEnv`` adapter;
- :mod:`.real`: ``RoboAlignReal-v0``, the same spaces in real robosuite;
- :mod:`.reward`: how the student's scores become rewards, success and termination;
- :mod:`.seeds`: the held-out real starts shipped with a model.
"""
