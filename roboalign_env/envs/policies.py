"""Stable-Baselines3 policies saved as weights, loaded without unpickling anything.

An SB3 ``.zip`` holds pickled Python objects, so loading one can run arbitrary code. A policy is
instead saved as a folder of two files:

- ``policy.safetensors``: the policy's ``state_dict`` (weights only);
- ``policy.json``: the SB3 algorithm, the policy class, its constructor keyword arguments and the
  observation and action spaces, all plain JSON.

Loading rebuilds the policy from classes on explicit allow-lists (SB3's own policy classes per
algorithm, named activations and feature extractors), then loads the weights: no ``pickle``, no
``torch.load``, no SB3 ``.load``. The optimizer is not saved: a loaded policy only acts.
:func:`load_sb3_zip` is the unpickling path, for files the user trusts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from gymnasium import spaces

from roboalign_env.data.io import atomic_write
from roboalign_env.extras import require

FORMAT = "roboalign_policy/1"
WEIGHTS, CONFIG = "policy.safetensors", "policy.json"
SB3_ALGORITHMS = ("ppo", "sac", "td3", "a2c", "ddpg")

ACTIVATIONS = {cls.__name__: cls for cls in (torch.nn.ReLU, torch.nn.Tanh, torch.nn.GELU, torch.nn.ELU,
                                             torch.nn.LeakyReLU, torch.nn.SiLU, torch.nn.Sigmoid, torch.nn.Identity)}
"""Activation functions a saved policy may name."""
FEATURE_EXTRACTORS = ("CombinedExtractor", "NatureCNN", "FlattenExtractor")
"""SB3 feature extractors (``stable_baselines3.common.torch_layers``) a saved policy may name."""
DROPPED_KWARGS = ("lr_schedule", "optimizer_class", "optimizer_kwargs")
"""Constructor arguments that only matter for training, not saved."""


def _sb3(purpose: str):
    return require("stable_baselines3", "sb3", purpose)


def policy_classes(algorithm: str) -> dict[str, type]:
    """The SB3 policy classes ``algorithm`` may rebuild, by class name and by alias (``MultiInputPolicy``)."""
    if algorithm not in SB3_ALGORITHMS:
        raise ValueError(f"unknown SB3 algorithm {algorithm!r}; expected one of {', '.join(SB3_ALGORITHMS)}")
    aliases = getattr(_sb3("loading a saved SB3 policy"), algorithm.upper()).policy_aliases
    return {**{cls.__name__: cls for cls in aliases.values()}, **aliases}


def _feature_extractors() -> dict[str, type]:
    torch_layers = require("stable_baselines3.common.torch_layers", "sb3", "loading a saved SB3 policy")
    return {name: getattr(torch_layers, name) for name in FEATURE_EXTRACTORS}


def _json_safe(value, where: str):
    """``value`` as plain JSON (tuples become lists), or a ``ValueError`` naming ``where``."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {k: _json_safe(v, f"{where}.{k}") for k, v in value.items()}
    raise ValueError(f"policy_kwargs {where} = {value!r} cannot be saved as JSON")


def _bounds_to_json(values: np.ndarray):
    """Box bounds: one number if all are equal, else nested lists; infinities as "inf" / "-inf"."""
    number = int if np.issubdtype(values.dtype, np.integer) else float
    values = np.asarray(values, dtype=np.float64)
    as_json = lambda x: number(x) if np.isfinite(x) else ("inf" if x > 0 else "-inf")  # noqa: E731
    if values.size and np.all(values == values.flat[0]):
        return as_json(values.flat[0])
    return np.vectorize(as_json, otypes=[object])(values).tolist()


def space_to_json(space: spaces.Space) -> dict:
    """A Box, or a Dict of Boxes, as JSON (shape, dtype, low, high)."""
    if isinstance(space, spaces.Box):
        return {"type": "Box", "shape": list(space.shape), "dtype": space.dtype.name,
                "low": _bounds_to_json(space.low), "high": _bounds_to_json(space.high)}
    if isinstance(space, spaces.Dict):
        return {"type": "Dict", "spaces": {key: space_to_json(sub) for key, sub in space.spaces.items()}}
    raise ValueError(f"cannot save a policy for a {type(space).__name__} space; expected Box or Dict of Boxes")


def space_from_json(description: dict) -> spaces.Space:
    """The inverse of :func:`space_to_json`; a malformed description raises ``ValueError``."""
    kind = description.get("type") if isinstance(description, dict) else None
    if kind == "Dict" and isinstance(description.get("spaces"), dict):
        # As pairs, so the saved key order (that of the features the policy concatenates) is kept.
        return spaces.Dict([(key, space_from_json(sub)) for key, sub in description["spaces"].items()])
    if kind == "Box":
        try:
            shape, dtype = tuple(int(n) for n in description["shape"]), np.dtype(description["dtype"])
            if dtype.kind not in "iuf":
                raise ValueError(f"dtype {dtype} is not numeric")
            low, high = (np.broadcast_to(np.asarray(description[k], dtype=np.float64), shape) for k in ("low", "high"))
            return spaces.Box(low.astype(dtype), high.astype(dtype), shape, dtype)
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(f"invalid Box description {description!r}: {err}") from err
    raise ValueError(f"invalid space description {description!r}; expected a Box or a Dict of Boxes")


def save_policy(model, folder: str | Path) -> Path:
    """Save a trained SB3 algorithm's policy (PPO, SAC, ...) to ``folder`` as ``policy.safetensors`` +
    ``policy.json``; both files are written atomically. Returns ``folder``."""
    from safetensors.torch import save

    stable_baselines3 = _sb3("saving an SB3 policy")
    algorithm = type(model).__name__.lower()
    policy = model.policy
    policy_classes(algorithm)  # an algorithm load_policy can rebuild
    kwargs = {k: v for k, v in policy._get_constructor_parameters().items()
              if k not in ("observation_space", "action_space", *DROPPED_KWARGS)}
    for key, allowed in (("activation_fn", ACTIVATIONS), ("features_extractor_class", _feature_extractors())):
        if key in kwargs:
            name = getattr(kwargs[key], "__name__", None)
            if allowed.get(name) is not kwargs[key]:
                raise ValueError(f"{key}={kwargs[key]!r} cannot be saved as weights; expected one of {sorted(allowed)}")
            kwargs[key] = name
    config = {"format": FORMAT, "algorithm": algorithm, "policy_class": type(policy).__name__,
              "policy_kwargs": _json_safe(kwargs, "policy_kwargs"),
              "observation_space": space_to_json(policy.observation_space),
              "action_space": space_to_json(policy.action_space),
              "stable_baselines3": stable_baselines3.__version__}
    # Cloned: modules shared between actor and critic appear under several names, and safetensors
    # refuses tensors that share memory.
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in policy.state_dict().items()}
    folder = Path(folder)
    atomic_write(folder / WEIGHTS, lambda f: f.write(save(tensors)))
    atomic_write(folder / CONFIG, lambda f: f.write(json.dumps(config, indent=1)), mode="w")
    return folder


@dataclass
class SavedPolicy:
    """A policy rebuilt by :func:`load_policy`; ``predict`` answers like an SB3 model's."""

    policy: torch.nn.Module
    """The SB3 policy module, on CPU, in eval mode."""
    algorithm: str
    config: dict
    """The folder's ``policy.json``."""

    def predict(self, observation, deterministic: bool = True):
        """``(action, None)`` for one observation (or a batch), as ``model.predict`` returns it."""
        return self.policy.predict(observation, deterministic=deterministic)


def read_config(folder: str | Path) -> dict:
    """``folder/policy.json``, checked: format, algorithm, policy class and kwargs' class names."""
    path = Path(folder) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file; a saved policy folder holds {CONFIG} and {WEIGHTS}")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(config, dict) or config.get("format") != FORMAT:
        found = config.get("format") if isinstance(config, dict) else config
        raise ValueError(f"{path}: format {found!r} is not {FORMAT!r}")
    missing = [k for k in ("algorithm", "policy_class", "policy_kwargs", "observation_space", "action_space")
               if k not in config]
    if missing:
        raise ValueError(f"{path}: missing {', '.join(missing)}")
    if config["algorithm"] not in SB3_ALGORITHMS:
        raise ValueError(f"{path}: algorithm {config['algorithm']!r} is not one of {', '.join(SB3_ALGORITHMS)}")
    classes = policy_classes(config["algorithm"])
    if config["policy_class"] not in classes:
        raise ValueError(f"{path}: policy_class {config['policy_class']!r} is not an allowed "
                         f"{config['algorithm'].upper()} policy; expected one of {sorted(classes)}")
    kwargs = config["policy_kwargs"]
    if not isinstance(kwargs, dict):
        raise ValueError(f"{path}: policy_kwargs must be a JSON object, got {kwargs!r}")
    for key, allowed in (("activation_fn", ACTIVATIONS), ("features_extractor_class", FEATURE_EXTRACTORS)):
        if key in kwargs and (not isinstance(kwargs[key], str) or kwargs[key] not in allowed):
            raise ValueError(f"{path}: policy_kwargs {key} {kwargs[key]!r} is not allowed; "
                             f"expected one of {sorted(allowed)}")
    dropped = sorted(set(kwargs) & set(DROPPED_KWARGS))
    if dropped:
        raise ValueError(f"{path}: policy_kwargs {', '.join(dropped)} cannot be loaded (training-only)")
    return config


def load_policy(folder: str | Path) -> SavedPolicy:
    """Rebuild the policy saved in ``folder`` by :func:`save_policy` (on CPU, eval mode)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    folder = Path(folder)
    config = read_config(folder)
    path = folder / CONFIG
    try:
        observation_space = space_from_json(config["observation_space"])
        action_space = space_from_json(config["action_space"])
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from err
    kwargs = dict(config["policy_kwargs"])
    if "activation_fn" in kwargs:
        kwargs["activation_fn"] = ACTIVATIONS[kwargs["activation_fn"]]
    if "features_extractor_class" in kwargs:
        kwargs["features_extractor_class"] = _feature_extractors()[kwargs["features_extractor_class"]]
    policy_cls = policy_classes(config["algorithm"])[config["policy_class"]]
    try:
        policy = policy_cls(observation_space, action_space, lr_schedule=lambda _: 0.0, **kwargs)
    except (TypeError, ValueError, AssertionError, KeyError, RuntimeError) as err:
        raise ValueError(f"{path}: cannot build {config['policy_class']} from it ({err})") from err
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"{weights}: no such file; a saved policy folder holds {CONFIG} and {WEIGHTS}")
    try:
        state = load_file(weights, device="cpu")
    except (SafetensorError, OSError, ValueError) as err:
        raise ValueError(f"{weights}: not a readable safetensors file ({err})") from err
    try:
        policy.load_state_dict(state, strict=True)
    except RuntimeError as err:
        raise ValueError(f"{weights}: weights do not fit the {config['policy_class']} of {path} ({err})") from err
    return SavedPolicy(policy.eval(), config["algorithm"], config)


def load_sb3_zip(path: str | Path, algorithm: str):
    """SB3's own ``ALGO.load(path)``. It unpickles the zip, which can execute arbitrary code: only for
    files the user trusts (``roboalign compare --trust-sb3-zip``)."""
    policy_classes(algorithm)  # a known algorithm
    stable_baselines3 = _sb3("loading an SB3 .zip")
    return getattr(stable_baselines3, algorithm.upper()).load(path, device="cpu")


def frame_policy(model):
    """``model`` (a loaded policy: ``predict(obs, deterministic)``) as a function of a batch of frames, uint8
    (B, 3, 64, 64), and each frame's source, returning actions (B, 7): the observations it is given are
    ``RoboAlignWorld-v0``'s (the frame and the source's task vector), and it acts deterministically."""
    from roboalign_env.envs.core import task_vector

    def act(frames: np.ndarray, sources: list[str]) -> np.ndarray:
        observation = {"image": np.ascontiguousarray(frames), "task": np.stack([task_vector(s) for s in sources])}
        return np.asarray(model.predict(observation, deterministic=True)[0], np.float32)

    return act
