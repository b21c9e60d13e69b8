"""The small default model shipped inside the package (package data, no download).

``default/`` holds ``world_model/`` (tokenizer + transformer, bf16 weights), ``student/`` (the
student reward, float16) and ``seeds/`` (real first frames, instructions and robosuite seeds from
every source, used by ``RoboAlignWorld-v0.reset``). ``scripts/train_default_model.sh`` rebuilds
all of it.
"""

from pathlib import Path

DEFAULT_MODEL = Path(__file__).resolve().parent / "default"
