"""Which instruction encoder should the teacher use: the pretrained MiniLM (frozen) or a trained one?

The judge's text input matters through one question: how does an instruction relate to what the
scene's task is (the same task, a near miss with a wrong object or direction, another task)?
This benchmark asks exactly that, text only: given an instruction and a reference instruction of
the video's source, classify the relation (correct / near_miss / other_task). Both encoders feed
the same small classifier over [a, b, a*b, |a-b|], trained on the bench's train-split pairs (three
sources) and tested on the held-out source's pairs, whose instructions (and near misses such as
"put the milk carton in the bin") never occur in training. The trained encoder is the 4-layer
pre-norm Transformer of the student, learned jointly with the classifier.

    python benchmarks/judge_text_encoder.py --bench data/bench
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import tyro
from torch import nn

from roboalign_env.data.bench import read_index
from roboalign_env.models.text import MINILM_DIM, TextEncoder, minilm_embed
from roboalign_env.sim.sources import SOURCES

KINDS = ("correct", "near_miss", "other_task")


@dataclass(frozen=True)
class Args:
    bench: Path = Path("data/bench")
    """Bench folder."""
    steps: int = 400
    """Optimizer steps per encoder."""
    seeds: int = 3
    """Repetitions with different seeds."""
    out: Path = Path("benchmarks/results/judge_text_encoder.json")
    """Result file."""


def pairs(rows: list[dict], seed: int) -> tuple[list[str], list[str], torch.Tensor]:
    """(instruction, a random reference instruction of the pair's source, relation) per row."""
    rng = np.random.default_rng(seed)
    refs = [str(rng.choice(SOURCES[r["source"]].instructions)) for r in rows]
    return [r["instruction"] for r in rows], refs, torch.tensor([KINDS.index(r["instruction_kind"]) for r in rows])


class Relation(nn.Module):
    def __init__(self, encoder: nn.Module | None, dim: int):
        super().__init__()
        self.encoder = encoder
        self.mlp = nn.Sequential(nn.Linear(4 * dim, 128), nn.GELU(), nn.Linear(128, len(KINDS)))

    def forward(self, a, b):
        if self.encoder is not None:
            a, b = self.encoder(a), self.encoder(b)
        return self.mlp(torch.cat([a, b, a * b, (a - b).abs()], -1))


def run(kind: str, train, test, steps: int, seed: int) -> float:
    torch.manual_seed(seed)
    if kind == "minilm":
        distinct = sorted(set(train[0] + train[1] + test[0] + test[1]))
        table = dict(zip(distinct, minilm_embed(distinct)))
        model, embed = Relation(None, MINILM_DIM), lambda texts: torch.stack([table[t] for t in texts])
    else:
        encoder = TextEncoder()
        model, embed = Relation(encoder, 256), encoder.tokenize
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    (ta, tb, ty), (va, vb, vy) = train, test
    rng = np.random.default_rng(seed)
    for _ in range(steps):
        idx = rng.integers(0, len(ty), 64)
        loss = nn.functional.cross_entropy(model(embed([ta[i] for i in idx]), embed([tb[i] for i in idx])), ty[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(embed(va), embed(vb)).argmax(-1)
    # balanced accuracy: near misses and other tasks are rare next to correct instructions
    return float(np.mean([(pred[vy == k] == k).float().mean() for k in range(len(KINDS))]))


def main(args: Args) -> None:
    rows = read_index(args.bench)
    results = {"minilm": [], "trained": []}
    for seed in range(args.seeds):
        train = pairs([r for r in rows if r["split"] == "train"], seed)
        test = pairs([r for r in rows if r["split"] == "heldout"], seed + 100)
        for kind in results:
            results[kind].append(run(kind, train, test, args.steps, seed))
            print(f"seed {seed} {kind:8s} held-out source, balanced accuracy of the instruction relation: "
                  f"{results[kind][-1]:.3f}", flush=True)
    summary = {
        "benchmark": "judge_text_encoder",
        "task": "instruction relation (correct / near_miss / other_task), trained on 3 sources, tested on the held-out source",
        "balanced_accuracy": {k: {"mean": round(float(np.mean(v)), 3), "per_seed": [round(x, 3) for x in v]} for k, v in results.items()},
        "better_here": max(results, key=lambda k: np.mean(results[k])),
        "command": "python " + " ".join(sys.argv),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(summary, indent=1) + "\n")
    print(f"better here: {summary['better_here']}\nwrote {args.out}\nreproduce: {summary['command']}")


if __name__ == "__main__":
    main(tyro.cli(Args))
