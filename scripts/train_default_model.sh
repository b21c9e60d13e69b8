#!/usr/bin/env bash
# Rebuild the default model shipped in the package (roboalign_env/assets/default) from nothing:
# robosuite episodes (scripted + as many exploration episodes) -> RobotWorldBench -> tokenizer + world model
# (SFT: each frame's codes together, from the previous frame and the action alone; then each frame of an SWR
# window from the window's first frame and the actions since, --anchor-frames; then two cycles on 16-frame
# clips pooled with explore_push episodes, decoding SWR windows of 16 frames) -> state probe -> the
# world model's rollouts join the bench (labelled by the probe and robosuite) -> teacher judge (reads
# actions; PickPlaceCan held out, the judge the held-out numbers belong to) -> that teacher fine-tuned on every
# source with action twins -> student distilled from it (reads actions) -> pack (with the probe for the
# reward-hacking monitor). The bench also pools episodes of the judge-only sources (docs/data_engine.md#sources).
# The world model is not post-trained: GRPO against the student (`roboalign post-train`, RoboAlign-R1)
# lowered how well the dream follows commands (docs/post_training.md).
# Every step resumes after a kill (re-run the script). Stage times on a 2-core CPU with no GPU
# (docs/rebuild.md): collect + bench 36 min (measured for the earlier recipe without exploration episodes);
# on the 480-episode collection (60 + 60 per source): tokenizer 11 min (8x8 dynamics codes), transformer
# 211 min (three cosine cycles, each started from the one before: 7,000 + 7,000 steps, 76 + 84 min; then
# 4,000 steps with --anchor-frames, 51 min; the two 16-frame cycles, 1,250 + 2,600 steps of 64 clips, ran on one
# GPU: 3.5 and 3.7 min on an H100 / H200; about 14 h on 2 cores, from 1.7 s per step of 8 such clips), bench
# 13.7 min, dream rollouts 6 min, teacher 25 min (1,200 steps), student 33 min (teacher targets on the
# bench and 12,000 extra clips, 6,000 steps).
# On a GPU: docs/rebuild.md, "GPU recipe".
# Usage: bash scripts/train_default_model.sh [DATA_DIR] [RUNS_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
DATA=${1:-data}
RUNS=${2:-runs}
R=.venv/bin/roboalign

$R collect --out "$DATA/episodes" --episodes-per-source 200 --exploration-fraction 0.5 --workers 2
$R collect --out "$DATA/judge_only" --sources lift_ur5e pickplace_milk_panda pickplace_bread_panda \
    pickplace_milk_kinova3 pickplace_cereal_panda --episodes-per-source 60 --exploration-fraction 0.5 --workers 2
$R collect --out "$DATA/push" --episodes-per-source 16 --exploration-fraction 0.75 --exploration-modes explore_push \
    --first-seed 100000 --workers 2
$R build-bench --collection "$DATA/episodes" "$DATA/judge_only" --out "$DATA/bench" --workers 2
.venv/bin/python benchmarks/world_model_training.py --episodes "$DATA/episodes" --pooled-with "$DATA/push" \
    --runs "$RUNS" --export "$RUNS/world_model_export"
$R train-probe --collection "$DATA/episodes" --out "$RUNS/probe" --export-to checkpoints/probe
[ -f "$DATA/bench/videos/external/sft.npz" ] || $R add-dream-pairs --name sft --model "$RUNS/world_model_export" \
    --probe checkpoints/probe --collection "$DATA/episodes" --bench "$DATA/bench"
$R train-judge --bench "$DATA/bench" --out "$RUNS/judge" --export-to checkpoints/judge
$R train-judge --bench "$DATA/bench" --init-from checkpoints/judge --heldout-source '' --steps 1200 \
    --out "$RUNS/judge_every_source" --export-to checkpoints/judge_every_source
$R distill --teacher checkpoints/judge_every_source --bench "$DATA/bench" --collection "$DATA/episodes" --loss kl \
    --extra-clips 12000 --steps 6000 --out "$RUNS/student"
$R pack-default --world-model "$RUNS/world_model_export" --student "$RUNS/student/model" --collection "$DATA/episodes" \
    --probe checkpoints/probe
