"""Stream T=8 training clips (uniform episode, uniform start, stride 1) from a collection into a DataLoader.

    roboalign collect --out data/episodes --episodes-per-source 4
    python examples/stream_clips.py data/episodes
"""

import sys

import torch

from roboalign_env.data.clips import ClipStream

stream = ClipStream(sys.argv[1] if len(sys.argv) > 1 else "data/episodes", clip_len=8, augment=True)
loader = torch.utils.data.DataLoader(stream, batch_size=16, num_workers=2)
for step, batch in zip(range(3), loader):
    print(step, "frames", tuple(batch["frames"].shape), "actions", tuple(batch["actions"].shape),
          f"pixel range [{batch['frames'].min():.2f}, {batch['frames'].max():.2f}]")
