"""Building robosuite environments for a :class:`~roboalign_env.sim.sources.Source`.

One place decides how an env is made (no robosuite camera observations: frames come from
:class:`~roboalign_env.sim.rendering.FastRenderer`), how it is seeded per episode without rebuilding
the MuJoCo model, and how privileged state is read off it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from roboalign_env.extras import require


def make_env(source, seed: int = 0):
    """Build the robosuite env of ``source``; episodes are then started with :func:`reset_env`.

    ``hard_reset=False`` keeps one MuJoCo model for the env's lifetime, so a renderer attached to
    it stays valid across episodes; ``ignore_done=True`` because our collector owns the horizon.
    """
    from roboalign_env.sim.rendering import setup_rendering

    setup_rendering()
    robosuite = require("robosuite", "sim", "the robosuite simulator")

    return robosuite.make(
        source.task,
        robots=source.robot,
        has_renderer=False,
        has_offscreen_renderer=False,
        use_camera_obs=False,
        control_freq=source.control_freq,
        horizon=source.horizon,
        hard_reset=False,
        ignore_done=True,
        seed=seed,
        **source.env_kwargs,
    )


def _samplers(sampler):
    yield sampler
    for child in getattr(sampler, "samplers", {}).values():
        yield from _samplers(child)


def reset_env(env, seed: int) -> dict:
    """Reset ``env`` so that object placement and robot init noise depend on ``seed`` only."""
    rng = np.random.default_rng(seed)
    env.rng = rng
    if getattr(env, "placement_initializer", None) is not None:
        for sampler in _samplers(env.placement_initializer):
            sampler.rng = rng
    return env.reset()


@dataclass(frozen=True)
class TaskObject:
    """A task object as MuJoCo sees it: the body (or site on it) whose pose we record, the geoms
    that count for contacts, and the qpos address of its free joint (``None`` if not free)."""

    name: str
    body_id: int
    site_id: int | None
    geom_ids: frozenset[int]
    geom_names: tuple[str, ...]
    free_qpos: int | None

    def pose(self, data) -> tuple[np.ndarray, np.ndarray]:
        """World position and (w, x, y, z) orientation."""
        if self.site_id is None:
            return np.asarray(data.body_xpos[self.body_id]), np.asarray(data.body_xquat[self.body_id])
        return np.asarray(data.site_xpos[self.site_id]), _site_quat(data, self.site_id)


def task_objects(env, source) -> list[TaskObject]:
    """Resolve ``source.objects``: robosuite object models (env attributes or ``env.objects`` by
    name), or MuJoCo site names (e.g. a door's handle: the site's pose is recorded and the geoms
    of its body's subtree count for contacts)."""
    cached = getattr(env, "_roboalign_task_objects", None)
    if cached is not None:
        return cached
    import mujoco

    model = env.sim.model._model
    by_name = {obj.name: obj for obj in getattr(env, "objects", [])}
    found = []
    for name in source.objects:
        obj = getattr(env, name, None) or by_name.get(name)
        site = None
        if obj is not None:
            body = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_BODY, obj.root_body)
            geoms = tuple(obj.contact_geoms)
        else:
            site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, name)
            if site < 0:
                raise AttributeError(f"{source.name}: task object {name!r} is not an env object nor a MuJoCo site")
            body = int(model.site_bodyid[site])
            subtree = {b for b in range(model.nbody) if _is_descendant(model, b, body)}
            geoms = tuple(mujoco.mj_id2name(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in range(model.ngeom) if model.geom_bodyid[g] in subtree)
        joint = model.body_jntadr[body]
        free = int(model.jnt_qposadr[joint]) if joint >= 0 and model.jnt_type[joint] == mujoco.mjtJoint.mjJNT_FREE else None
        ids = frozenset(mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, g) for g in geoms)
        found.append(TaskObject(name, body, site, ids, geoms, free))
    env._roboalign_task_objects = found
    return found


def _is_descendant(model, body: int, ancestor: int) -> bool:
    while body != ancestor and body != 0:
        body = model.body_parentid[body]
    return body == ancestor


def _robot_geom_ids(env) -> tuple[frozenset[int], frozenset[int]]:
    """(all robot geoms, gripper geoms) as MuJoCo ids, resolved once per env."""
    cached = getattr(env, "_roboalign_robot_geoms", None)
    if cached is None:
        robot = env.robots[0]
        gripper = [env.sim.model.geom_name2id(n) for n in robot.gripper["right"].contact_geoms]
        arm = [env.sim.model.geom_name2id(n) for n in robot.robot_model.contact_geoms]
        cached = env._roboalign_robot_geoms = (frozenset(arm + gripper), frozenset(gripper))
    return cached


def _finger_distance(env) -> float:
    """Distance between the first left and right finger-pad geoms: a robot-agnostic gripper opening."""
    gripper = env.robots[0].gripper["right"]
    ids = [env.sim.model.geom_name2id(gripper.important_geoms[side][0]) for side in ("left_fingerpad", "right_fingerpad")]
    return float(np.linalg.norm(env.sim.data.geom_xpos[ids[0]] - env.sim.data.geom_xpos[ids[1]]))


def _site_quat(data, site_id: int) -> np.ndarray:
    """World orientation of a site as a (w, x, y, z) quaternion."""
    import mujoco

    quat = np.zeros(4)
    mujoco.mju_mat2Quat(quat, np.asarray(data.site_xmat[site_id], np.float64))
    return quat.astype(np.float32)


def read_state(env, source) -> dict[str, np.ndarray]:
    """Privileged state of the current step, as a dict of fixed-shape arrays (call it before rendering).

    Contact facts are per task object (``source.objects`` order):

    - ``gripper_contact``: a gripper geom touches the object;
    - ``robot_contact``: any robot geom (arm or gripper) touches the object;
    - ``grasp``: robosuite's ``_check_grasp`` (both finger pads on the object);
    - ``support_contact``: the object touches something other than the robot (table, bin, door
      frame, or another task object, e.g. the cube it is stacked on);
    - ``visible``: the object is in the scene (always true here; bench edits that make an object
      vanish set it false);
    - ``support_penetration`` / ``robot_penetration``: deepest interpenetration (metres, >= 0)
      of the object with its supports / with the robot.
    """
    import mujoco

    # robosuite's step leaves kinematics and contacts from the start of its last physics substep;
    # recompute them at the current positions so they match the rendered frame (and re-renders).
    mujoco.mj_forward(env.sim.model._model, env.sim.data._data)
    data = env.sim.data
    robot = env.robots[0]
    gripper = robot.gripper["right"]
    robot_ids, gripper_ids = _robot_geom_ids(env)
    objects = task_objects(env, source)
    object_ids = [obj.geom_ids for obj in objects]
    n = len(objects)
    gripper_contact = np.zeros(n, bool)
    robot_contact = np.zeros(n, bool)
    support_contact = np.zeros(n, bool)
    support_penetration = np.zeros(n, np.float32)
    robot_penetration = np.zeros(n, np.float32)
    for contact in data.contact[: data.ncon]:
        pair = (contact.geom1, contact.geom2)
        for i, ids in enumerate(object_ids):
            if pair[0] in ids:
                other = pair[1]
            elif pair[1] in ids:
                other = pair[0]
            else:
                continue
            if other in gripper_ids:
                gripper_contact[i] = True
            if other in robot_ids:
                robot_contact[i] = True
                robot_penetration[i] = max(robot_penetration[i], -contact.dist)
            elif other not in ids:
                support_contact[i] = True
                support_penetration[i] = max(support_penetration[i], -contact.dist)
    poses = [obj.pose(data) for obj in objects]
    grip_site = env.sim.model.site_name2id(gripper.important_sites["grip_site"])
    return {
        "eef_pos": np.asarray(data.site_xpos[grip_site], np.float32),
        "eef_quat": _site_quat(data, grip_site),
        "gripper_opening": np.float32(_finger_distance(env)),
        "gripper_qpos": np.asarray(data.qpos[robot._ref_gripper_joint_pos_indexes["right"]], np.float32),
        "joint_pos": np.asarray(data.qpos[robot._ref_joint_pos_indexes], np.float32),
        "object_pos": np.array([p for p, _ in poses], np.float32),
        "object_quat": np.array([q for _, q in poses], np.float32),
        "gripper_contact": gripper_contact,
        "robot_contact": robot_contact,
        "grasp": np.array([env._check_grasp(gripper=gripper, object_geoms=list(obj.geom_names)) for obj in objects], bool),
        "support_contact": support_contact,
        "support_penetration": support_penetration,
        "robot_penetration": robot_penetration,
        "visible": np.ones(n, bool),
        "success": np.bool_(env._check_success()),
        "progress": np.float32(source.progress(env)),
        "qpos": np.asarray(data.qpos, np.float64).copy(),
        "qvel": np.asarray(data.qvel, np.float64).copy(),
    }
