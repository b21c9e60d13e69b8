#!/usr/bin/env bash
# Create or reuse .venv and install roboalign_env with its dependencies (CPU machine, Python 3.11).
# Idempotent: a second run only checks what is installed. Usage: bash scripts/setup.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Headless OpenGL for MuJoCo rendering (Mesa EGL; OSMesa as a fallback with MUJOCO_GL=osmesa).
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  missing=()
  for pkg in libegl1 libgl1 libgles2 libosmesa6; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision that import together on CPU (see DESIGN notes: 2.13.0+cpu breaks torchvision).
.venv/bin/python -m pip install -q torch==2.14.1 torchvision==0.29.1
.venv/bin/python -m pip install -q -e ".[all,test]"
.venv/bin/python -c "import torch, torchvision, robosuite, mujoco; print(f'roboalign_env ready: torch {torch.__version__}, robosuite {robosuite.__version__}, mujoco {mujoco.__version__}')" 2>&1 | grep -v -i "warning"
