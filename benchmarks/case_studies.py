"""Explain three real ml-100k users from a trained GuidedSASRec (the README's main job).

    python benchmarks/case_studies.py [--model_file=saved/GuidedSASRec-....pth] [--users=1,2,3]

Without ``--users`` it picks three contrasting users among those with at least 40 ratings: the
one whose learned profile leans most towards ``humor``, the one leaning most towards ``tension``,
and the first (by token) whose next movie is in their top 10. Writes the explanations to
docs/case_studies/<user>.md and the charts to docs/case_studies/<user>.png; docs/case_studies.md
is written by hand around them.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from recbole_guided.explain import explain, newest_checkpoint, to_markdown, to_png  # noqa: E402
from recbole_guided.quick_start import load_guided_model  # noqa: E402


def pick_users(model, dataset, test_data, min_history: int = 40) -> list[str]:
    tokens = dataset.field2id_token[dataset.uid_field]
    counts = torch.bincount(dataset.inter_feat[dataset.uid_field], minlength=len(tokens))
    eligible = [u for u in range(1, len(tokens)) if counts[u] >= min_history]
    learned = model.user_guided.weight.detach()
    attrs = model.item_embedding.attributes
    chosen = []
    for attribute in ("humor", "tension"):
        k = attrs.index(attribute)
        lean = learned[:, k] - learned.mean(dim=1)
        for u in sorted(eligible, key=lambda u: -float(lean[u])):
            if tokens[u] not in chosen:
                chosen.append(str(tokens[u]))
                break
    for u in sorted(eligible, key=lambda u: int(tokens[u])):
        if str(tokens[u]) not in chosen and explain(model, dataset, test_data, str(tokens[u]), k=10).focus.rank <= 10:
            chosen.append(str(tokens[u]))
            break
    return chosen


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model_file", default=None)
    parser.add_argument("--users", default=None)
    args = parser.parse_args(argv)
    model_file = Path(args.model_file) if args.model_file else newest_checkpoint("GuidedSASRec", ROOT / "saved")
    _, model, dataset, _, _, test_data = load_guided_model(model_file)
    users = args.users.split(",") if args.users else pick_users(model, dataset, test_data)
    out = ROOT / "docs" / "case_studies"
    out.mkdir(parents=True, exist_ok=True)
    for user in users:
        e = explain(model, dataset, test_data, user, k=10)
        (out / f"{user}.md").write_text(to_markdown(e))
        to_png(e, out / f"{user}.png")
        print(to_markdown(e))
    print(f"checkpoint: {model_file}; users: {users}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
