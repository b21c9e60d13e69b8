"""VLM judge backend: strict parsing of canned outputs, retries, averaging over samples, local weights only.

The generation step is a test double (a callable returning canned texts): building a tiny
image-text-to-text model offline needs a tokenizer and image processor files that are not on this
machine, so the transformers path itself (``VLMJudge.from_pretrained``) is covered only for its
refusal to load anything but a local folder.
"""

import json

import numpy as np
import pytest

from roboalign_env.models.vlm_judge import VLMJudge, VLMOutputError, build_prompt, parse_scores, pick_frames
from roboalign_env.rubric import DIMENSIONS

GOOD = {"instruction_following": 3, "manipulation_success": 2, "action_outcome_consistency": 1,
        "temporal_consistency": 1, "contact_realism": 0, "physics_adherence": 1}


def output(scores=GOOD, reasoning="The gripper closes on the cube {firmly} and lifts it."):
    return f"Step by step: I look at the frames.\n{json.dumps({'reasoning': reasoning, **scores})}"


def test_parser_reads_the_last_json_object_even_with_braces_in_reasoning():
    assert parse_scores(output()) == GOOD
    draft = json.dumps({**GOOD, "instruction_following": 0})
    assert parse_scores(f"Draft: {draft}\nFinal answer: {output()}") == GOOD
    assert parse_scores(output({**GOOD, "physics_adherence": 2.0}))["physics_adherence"] == 2


@pytest.mark.parametrize("text, words", [
    ("I think it is fine, 3/3.", "no JSON object"),
    (output({k: v for k, v in GOOD.items() if k != "contact_realism"}), "misses \\['contact_realism'\\]"),
    (output({**GOOD, "instruction_following": 4}), "outside 0..3"),
    (output({**GOOD, "manipulation_success": -1}), "outside 0..2"),
    (output({**GOOD, "temporal_consistency": 0.5}), "not an integer"),
    (output({**GOOD, "contact_realism": "1"}), "not an integer"),
    (output({**GOOD, "contact_realism": True}), "not an integer"),
    ('{"instruction_following": 3, "manipulation_success": 2', "no JSON object"),
])
def test_parser_rejects_malformed_outputs_with_the_reason(text, words):
    with pytest.raises(VLMOutputError, match=words):
        parse_scores(text)


def video(n=20):
    return np.random.default_rng(0).integers(0, 256, (n, 64, 64, 3), dtype=np.uint8)


def test_samples_are_averaged_and_malformed_ones_retried():
    texts = iter([output(), "garbage", output({**GOOD, "instruction_following": 1, "contact_realism": 1})])
    calls = []

    def generate(prompt, images, temperature):
        calls.append((prompt, len(images), temperature))
        return next(texts)

    result = VLMJudge(generate, samples=2, temperature=0.6, retries=1, frames=8).score(video(), "lift the red cube")
    assert result["scores"]["instruction_following"] == 2.0 and result["scores"]["contact_realism"] == 0.5
    assert result["scores"]["manipulation_success"] == 2.0
    assert result["aggregate"] == pytest.approx(sum(result["scores"].values()) / 10)
    assert len(calls) == 3 and all(t == 0.6 and n == 9 for _, n, t in calls)  # initial frame + 8 frames
    assert "lift the red cube" in calls[0][0] and "Instruction Following (0-3 points)" in calls[0][0]
    assert len(result["samples"]) == 2


def test_persistently_malformed_output_raises_a_clear_error():
    judge = VLMJudge(lambda p, i, t: output({**GOOD, "physics_adherence": 5}), samples=1, retries=2)
    with pytest.raises(VLMOutputError, match="3 generations in a row.*physics_adherence=5 is outside 0..2"):
        judge.score(video(), "open the door")


def test_prompt_and_frames_inputs_are_checked(tmp_path):
    with pytest.raises(ValueError, match="instruction"):
        build_prompt("  ", 8)
    assert all(d.replace("_", " ").split()[0].lower() in build_prompt("x", 8).lower() for d in DIMENSIONS)
    assert len(pick_frames(video(5), 8)) == 5 and len(pick_frames(video(40), 8)) == 8
    with pytest.raises(ValueError, match="uint8"):
        pick_frames(np.zeros((0, 64, 64, 3), np.uint8), 8)
    with pytest.raises(FileNotFoundError, match="local folder"):
        VLMJudge.from_pretrained(tmp_path / "no-such-model")
