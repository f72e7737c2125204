"""The accuracy-interpretability frontier: as ``guided_scale`` grows, how much of each user's
ranking the attributes account for (``evaluation.guided_share``) and what it costs in NDCG@10.

    python benchmarks/frontier.py [--model=GuidedSASRec] [--seed=2020] [--scales=auto,auto*2,auto*4,auto*8]

One run per scale on ml-100k with properties/quickstart.yaml (the base stage is trained once and
reused); resumable: finished scales are kept in the output and skipped. Writes
benchmarks/results/frontier.json with the command, commit and machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from recbole_guided.provenance import git_commit, machine  # noqa: E402
from recbole_guided.quick_start import run_recbole_guided  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="GuidedSASRec")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--scales", default="auto,auto*2,auto*4,auto*8")
    parser.add_argument("--output", default=str(REPO / "benchmarks" / "results" / "frontier.json"))
    args = parser.parse_args()
    output = Path(args.output)
    done = json.loads(output.read_text()) if output.is_file() else {"runs": {}}
    for scale in args.scales.split(","):
        key = f"{args.model}-seed{args.seed}-{scale}"
        if key in done["runs"]:
            continue
        result = run_recbole_guided(args.model, "ml-100k", [str(REPO / "properties" / "quickstart.yaml")],
                                    {"guided_scale": scale, "seed": args.seed})
        done["runs"][key] = {
            "model": args.model, "seed": args.seed, "guided_scale": scale,
            "guided_share": result["guided_share"],
            "groups": result["groups"], "baseline_groups": result["baseline"]["groups"],
            "test": {k: float(v) for k, v in result["test_result"].items()},
            "evaluation": result["evaluation"],
            "command": "python benchmarks/frontier.py " + " ".join(sys.argv[1:]),
            "commit": git_commit(REPO), "machine": machine(),
        }
        output.write_text(json.dumps(done, indent=2))
        print(f"{key}: share {result['guided_share']:.3f}, ndcg@10 {result['test_result']['ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
