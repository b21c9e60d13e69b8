"""Look at RobotWorldBench: the label distribution of a split and one pair of each degradation family.

    roboalign collect --out data/episodes --episodes-per-source 4
    roboalign build-bench --collection data/episodes --out data/bench
    python examples/inspect_bench.py data/bench
"""

import sys
from collections import Counter

from roboalign_env.data.bench import load_pair, read_index

root = sys.argv[1] if len(sys.argv) > 1 else "data/bench"
rows = read_index(root, split="train")
print(f"{len(rows)} training pairs; aggregate scores (0-10):", sorted(Counter(r["aggregate"] for r in rows).items()))

seen = set()
for row in rows:
    family = row["provenance"]["family"]
    if family in seen:
        continue
    seen.add(family)
    pair = load_pair(root, row)
    print(f"{family:9s} {row['provenance']['kind']:13s} video {pair['video'].shape} actions {pair['actions'].shape} "
          f"\"{row['instruction']}\" -> {row['labels']}")
