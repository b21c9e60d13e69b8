"""Optional VLM judge backend: the paper's rubric prompt with a local image-text-to-text model.

Frames and the instruction go in; the model writes its reasoning and then a JSON object with the six
scores. As in the paper, ``samples`` generations at ``temperature`` are averaged. Every output is
parsed strictly (:func:`parse_scores`): one JSON object with all six dimensions as integers within
the paper's ranges; a malformed generation is retried up to ``retries`` times, then
:class:`VLMOutputError` says what was wrong with the last one.

Weights come only from a local folder (``local_files_only=True``): nothing is downloaded.
The generation step is a plain callable ``generate(prompt, images, temperature) -> str``, so other
backends (or a test double) plug in without a model.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import numpy as np

from roboalign_env.rubric import DIMENSIONS, MAX_SCORES, TOTAL

RUBRIC = """You are given:
- An instruction describing what the robot should do
- An initial frame (the starting state)
- A sequence of frames from a generated video
Your task is to evaluate the generated video across 6 dimensions. Score each dimension carefully.

Scoring Dimensions:
Instruction Following (0-3 points): Does the video show the robot attempting and executing the action described in the instruction? 0: Completely unrelated action 1: Vaguely related but wrong action 2: Correct action but incomplete or imprecise 3: Perfectly follows the instruction
Manipulation Success (0-2 points): Is the manipulation task successfully completed by the end of the video? 0: Task completely failed 1: Partial success (object moved but not to target) 2: Full success (task completed as instructed)
Action-Outcome Consistency (0-1 point): Are the robot's actions logically consistent with the observed outcomes? 0: Actions and outcomes are inconsistent 1: Actions and outcomes are consistent
Temporal Consistency (0-1 point): Is the video temporally coherent without flickering, sudden jumps, or artifacts? 0: Severe temporal artifacts 1: Smooth and temporally consistent
Contact Realism (0-1 point): When the robot contacts objects, does it look physically realistic? 0: Unrealistic contacts 1: Contacts look natural and realistic
Physics Adherence (0-2 points): Does the video obey basic physics? 0: Severe physics violations 1: Minor physics issues but mostly plausible 2: Fully physically plausible

Output Format: First, think step by step about what you observe in the video. Then output your evaluation as a JSON object:
{"reasoning": "Your detailed analysis", "instruction_following": <0-3>, "manipulation_success": <0-2>, "action_outcome_consistency": <0-1>, "temporal_consistency": <0-1>, "contact_realism": <0-1>, "physics_adherence": <0-2>}

Instruction: {instruction}
The first image is the initial frame; the following {frames} images are the video's frames in order."""


class VLMOutputError(ValueError):
    """A VLM generation that is not one JSON object with six in-range integer scores."""


def build_prompt(instruction: str, frames: int) -> str:
    if not isinstance(instruction, str) or not instruction.strip():
        raise ValueError(f"instruction: missing (got {instruction!r}); expected a non-empty string")
    return RUBRIC.replace("{instruction}", instruction.strip()).replace("{frames}", str(frames))


def parse_scores(text: str) -> dict[str, int]:
    """The six scores from a generation: its last JSON object, every dimension an integer in range."""
    obj = _last_json_object(text)
    if obj is None:
        raise VLMOutputError(f"no JSON object in the output (ends with {text[-120:]!r})")
    missing = [d for d in DIMENSIONS if d not in obj]
    if missing:
        raise VLMOutputError(f"JSON misses {missing}; expected all of {list(DIMENSIONS)}")
    scores = {}
    for dim, top in zip(DIMENSIONS, MAX_SCORES):
        value = obj[dim]
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
            raise VLMOutputError(f"{dim}={value!r} is not an integer")
        if not 0 <= value <= top:
            raise VLMOutputError(f"{dim}={value} is outside 0..{top}")
        scores[dim] = int(value)
    return scores


def _last_json_object(text: str) -> dict | None:
    """The last balanced ``{...}`` in ``text`` that parses as a JSON object (strings may hold braces)."""
    decoder = json.JSONDecoder()
    found = None
    i = text.find("{")
    while i != -1:
        try:
            obj, end = decoder.raw_decode(text, i)
        except json.JSONDecodeError:
            i = text.find("{", i + 1)
            continue
        if isinstance(obj, dict):
            found = obj
        i = text.find("{", end)
    return found


def pick_frames(video: np.ndarray, count: int) -> list[np.ndarray]:
    """``count`` evenly spaced frames (all of them when the video is shorter)."""
    video = np.asarray(video)
    if video.ndim != 4 or video.shape[-1] != 3 or video.dtype != np.uint8 or len(video) == 0:
        raise ValueError(f"video: expected uint8 (T, H, W, 3) with T >= 1, got {video.dtype} {video.shape}")
    idx = np.unique(np.linspace(0, len(video) - 1, min(count, len(video))).round().astype(int))
    return [video[i] for i in idx]


class VLMJudge:
    """Rubric-prompted VLM scoring with sampling, strict parsing, retries and averaging."""

    def __init__(self, generate: Callable[[str, list[np.ndarray], float], str], samples: int = 5,
                 temperature: float = 0.6, retries: int = 2, frames: int = 8):
        self.generate, self.samples, self.temperature = generate, samples, temperature
        self.retries, self.frames = retries, frames

    @classmethod
    def from_pretrained(cls, path: str | Path, max_new_tokens: int = 512, **kwargs) -> "VLMJudge":
        """A judge around the local transformers image-text-to-text model in ``path`` (never downloads)."""
        path = Path(path)
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"{path}: no local model (config.json); the VLM backend only loads weights from a local folder")
        import torch
        from PIL import Image
        from transformers import AutoModelForImageTextToText, AutoProcessor

        processor = AutoProcessor.from_pretrained(path, local_files_only=True)
        model = AutoModelForImageTextToText.from_pretrained(path, local_files_only=True).eval()

        def generate(prompt: str, images: list[np.ndarray], temperature: float) -> str:
            content = [{"type": "image"} for _ in images] + [{"type": "text", "text": prompt}]
            chat = processor.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True)
            inputs = processor(text=chat, images=[Image.fromarray(im) for im in images], return_tensors="pt")
            with torch.no_grad():
                out = model.generate(**inputs, do_sample=temperature > 0, temperature=temperature, max_new_tokens=max_new_tokens)
            return processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True)

        return cls(generate, **kwargs)

    def sample(self, prompt: str, images: list[np.ndarray]) -> tuple[dict[str, int], str]:
        """One parsed generation, retrying malformed ones; the error names the last problem."""
        problem = None
        for _ in range(self.retries + 1):
            text = self.generate(prompt, images, self.temperature)
            try:
                return parse_scores(text), text
            except VLMOutputError as err:
                problem = err
        raise VLMOutputError(f"{self.retries + 1} generations in a row were malformed; last: {problem}")

    def score(self, video: np.ndarray, instruction: str, initial_frame: np.ndarray | None = None) -> dict:
        """Mean scores over ``samples`` generations, their aggregate / 10, and every sample with its text."""
        frames = pick_frames(video, self.frames)
        prompt = build_prompt(instruction, len(frames))
        images = [np.asarray(video[0] if initial_frame is None else initial_frame, np.uint8)] + frames
        runs = [self.sample(prompt, images) for _ in range(self.samples)]
        mean = {d: float(np.mean([s[d] for s, _ in runs])) for d in DIMENSIONS}
        return {"scores": mean, "aggregate": sum(mean.values()) / TOTAL,
                "samples": [{"scores": s, "output": t} for s, t in runs]}
