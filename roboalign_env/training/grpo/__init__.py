"""RoboAlign-R1 post-training: GRPO of the world model against a reward picked by name.

- :mod:`.objective`: group-normalized advantages, the clipped surrogate with a k3 KL, and the
  teacher-forced log-probabilities of a rollout's sampled codes;
- :mod:`.rewards`: the reward registry (``student``, ``rlvr``, ``hybrid``);
- :mod:`.trainer`: ``GRPOConfig``, the trainer (rollouts, online re-distillation, resume) and
  :func:`~.trainer.post_train`, the entry point;
- :mod:`.plots`: the run's reward / KL / agreement figure.
"""
