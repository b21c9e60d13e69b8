"""roboalign_env: RoboAlign-R1 world model, judge and Gymnasium simulator.

Importing the package registers the environments (string entry points: torch, robosuite and the
models load only when an environment is made):

- ``RoboAlignWorld-v0``: the dream (world model + student reward); ``gym.make_vec`` gives the
  native batched vector env;
- ``RoboAlignReal-v0``: the same spaces backed by real robosuite.
"""

__version__ = "0.1.0"


def _register() -> None:
    from gymnasium.envs.registration import register, registry

    if "RoboAlignWorld-v0" not in registry:
        register(
            id="RoboAlignWorld-v0",
            entry_point="roboalign_env.envs.world:RoboAlignWorldEnv",
            vector_entry_point="roboalign_env.envs.vector:RoboAlignWorldVectorEnv",
            max_episode_steps=64,
        )
    if "RoboAlignReal-v0" not in registry:
        register(id="RoboAlignReal-v0", entry_point="roboalign_env.envs.real:RoboAlignRealEnv", max_episode_steps=64)


_register()
