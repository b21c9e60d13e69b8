"""Rank `eval-control` reports by their control shortfall and say which would replace the incumbent.

Each report's six control numbers are scored by how far they are from the targets
(``roboalign_env.eval.control_targets``: 0 every target met, 6 none better than chance / nothing moves), and a
report replaces the incumbent's model or setting only if it keeps every frame target the incumbent meets and
its shortfall is lower by more than the selection margin. Only reports made like the incumbent's (same
episodes, starts, steps, magnitude and decoding temperature) are ranked; tokenizer-only ceilings are listed
apart. A decoding setting that makes the env slower must also keep the single-env step time target
(``benchmarks/env_throughput.py``): that is not in these reports.

    python benchmarks/control_selection.py --incumbent benchmarks/results/control_default.json
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import tyro

from roboalign_env.data.io import atomic_write
from roboalign_env.eval.control_targets import SELECTION_MARGIN, control_shortfall, frame_targets_met, prefer

COMPARED = ("episodes", "starts_per_source", "steps", "magnitude", "sources", "probe")


@dataclass(frozen=True)
class Args:
    incumbent: Path = Path("benchmarks/results/control_default.json")
    reports: tuple[Path, ...] = ()
    """Reports to rank (default: every control_*.json beside the incumbent)."""
    out: Path = Path("benchmarks/results/control_selection.json")


def main(args: Args) -> dict:
    incumbent = json.loads(args.incumbent.read_text())
    reports = args.reports or tuple(p for p in sorted(args.incumbent.parent.glob("control_*.json"))
                                    if p.resolve() != args.out.resolve())
    ranked, ceilings, skipped = [], [], []
    for path in reports:
        report = json.loads(path.read_text())
        settings = report["settings"]
        unlike = [k for k in COMPARED if settings.get(k) != incumbent["settings"].get(k)]
        ceiling = settings["decoding"] == "tokenizer only"
        if not ceiling and settings["decoding"] != incumbent["settings"]["decoding"]:
            unlike.append("decoding")
        if "tracking_eef_cm" not in report["headline"]:
            unlike.append("probe numbers")
        if unlike:
            skipped.append({"report": path.name, "differs_in": unlike})
            continue
        h = report["headline"]
        row = {"report": path.name, "model": settings["model"], "window": settings["window"],
               "guidance": settings["guidance"], "shortfall": control_shortfall(h),
               "frame_targets_met": frame_targets_met(h)}
        if ceiling:
            ceilings.append(row)
        else:
            row["replaces_incumbent"] = prefer(h, incumbent["headline"])
            ranked.append(row)
    ranked.sort(key=lambda r: r["shortfall"]["total"])
    result = {"command": "python " + " ".join(sys.argv), "incumbent": args.incumbent.name,
              "incumbent_shortfall": control_shortfall(incumbent["headline"]), "margin": SELECTION_MARGIN,
              "ranked": ranked, "tokenizer_ceilings": ceilings, "not_comparable": skipped}
    atomic_write(args.out, lambda f: f.write(json.dumps(result, indent=1).encode()))
    print(f"incumbent {args.incumbent.name}: control shortfall {result['incumbent_shortfall']['total']:.3f} of 6")
    print("| report | window | guidance | direction | separation | gripper | swap | tracking | moving PSNR | total |"
          " frame targets | replaces |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in ranked:
        s = r["shortfall"]
        parts = " | ".join(f"{s[k]:.3f}" for k in ("direction", "separation", "gripper", "swap", "tracking",
                                                    "moving_psnr", "total"))
        met = ", ".join(k for k, v in r["frame_targets_met"].items() if v) or "none"
        print(f"| {r['report']} | {r['window']} | {r['guidance']} | {parts} | {met} | {r['replaces_incumbent']} |")
    print(f"{len(ceilings)} tokenizer ceilings, {len(skipped)} reports not comparable; wrote {args.out}")
    print(f"reproduce: {result['command']}")
    return result


if __name__ == "__main__":
    main(tyro.cli(Args))
