"""Is the LLM's rating of ml-100k meaningful, and what does it cost?

1. Rank correlation (Spearman) of each attribute's scores in ``ml-100k.guided`` with the genre
   labels of ``ml-100k.item`` that should relate to it (the genres are in the item text the LLM
   reads, so this checks that the model uses what it is shown, not that it knows the films).
2. ``generate`` mode on a sample: how many answers still fail to parse after the retries.
3. Items per second of each mode on this machine, on the same sample, from an empty cache.

    python benchmarks/llm_validity.py [--sample=40] [--llm=qwen2.5-1.5b] [--skip_speed]
        [--guided=dataset/ml-100k/ml-100k.guided]
        [--old_guided=benchmarks/results/ml-100k.smollm2-135m.guided --old_llm=smollm2-135m]

The old file's figures are shown beside the new (set ``--old_guided=`` to leave them out), and a
sanity table lists both raters' scores of a few well-known films.

Writes benchmarks/results/llm_validity.json and docs/llm_validity.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from scipy.stats import spearmanr

ROOT = Path(__file__).absolute().parents[1]  # not resolve(): a copy run elsewhere reads its own tree
sys.path.insert(0, str(ROOT))

from recbole_guided.provenance import git_commit, machine  # noqa: E402
from recbole_guided.data_files import GuidedTable  # noqa: E402
from recbole_guided.refined_embedding import center_rows  # noqa: E402
from recbole_guided.llm.backends import DEFAULT_LLM, make_backend  # noqa: E402
from recbole_guided.llm.prompts import item_messages, read_item_texts  # noqa: E402
from recbole_guided.llm.schema import AttributeSchema  # noqa: E402
from recbole_guided.llm.scorer import score_all  # noqa: E402

# attribute -> genres it should rise with (+) or fall with (-)
EXPECTED = {
    "family_friendly": {"Children's": +1, "Animation": +1, "Horror": -1, "Crime": -1},
    "humor": {"Comedy": +1, "Drama": -1},
    "tension": {"Thriller": +1, "Horror": +1},
    "romance": {"Romance": +1},
    "action": {"Action": +1, "Adventure": +1},
    "darkness": {"Horror": +1, "Film-Noir": +1, "Crime": +1, "Children's": -1},
    "thought_provoking": {"Drama": +1, "Documentary": +1},
    "spectacle": {"Sci-Fi": +1, "Fantasy": +1},
}


def genre_correlations(guided: Path, item_file: Path, center: str = "none") -> list[dict]:
    """``center="item"``: the scores as the Guided models use them (``guided_center``), each
    item's mean over its attributes removed."""
    table = GuidedTable.read(guided, key_field="item_id")
    table = GuidedTable(table.key_field, table.tokens, table.attributes, center_rows(table.values, center))
    genres = {}
    for line in item_file.read_text(encoding="utf-8").splitlines()[1:]:
        cells = line.split("\t")
        genres[cells[0]] = set(cells[3].split())
    rows = []
    for k, attribute in enumerate(table.attributes):
        for genre, sign in EXPECTED.get(attribute, {}).items():
            label = np.array([genre in genres[t] for t in table.tokens], dtype=float)
            rho, p = spearmanr(table.values[:, k], label)
            rows.append({"attribute": attribute, "genre": genre, "expected_sign": sign,
                         "spearman": float(rho), "p_value": float(p), "items_with_genre": int(label.sum()),
                         "mean_with_genre": float(table.values[label == 1, k].mean()),
                         "mean_without_genre": float(table.values[label == 0, k].mean())})
    return rows


def time_mode(schema, texts, backend, mode: str, retries: int) -> dict:
    prompts = {t: item_messages(schema, texts[t], mode) for t in texts}
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        table, report = score_all(schema, prompts, backend, mode, Path(tmp) / "cache.jsonl", None,
                                  retries=retries, show_progress=False)
        seconds = time.perf_counter() - start
    return {"mode": mode, "items": len(prompts), "seconds": round(seconds, 1),
            "load_average_1min_after": round(os.getloadavg()[0], 2),  # other jobs sharing the CPU
            "items_per_second": round(len(prompts) / seconds, 3), "answer_retries": retries,
            "failed_after_retries": len(report.failures),
            "failure_examples": dict(list(report.failures.items())[:5])}


def halo(guided: Path, item_file: Path, inter_file: Path) -> dict:
    """How much of the scores is one level per item: its link with popularity, the attributes'
    mean correlation, and the level of documentaries against the rest."""
    table = GuidedTable.read(guided, key_field="item_id")
    level = table.values.mean(axis=1)
    counts: dict[str, int] = {}
    for line in inter_file.read_text(encoding="utf-8").splitlines()[1:]:
        item = line.split("\t")[1]
        counts[item] = counts.get(item, 0) + 1
    popularity = np.array([counts.get(t, 0) for t in table.tokens])
    genres = {line.split("\t")[0]: line.split("\t")[3].split()
              for line in item_file.read_text(encoding="utf-8").splitlines()[1:]}
    documentary = np.array(["Documentary" in genres[t] for t in table.tokens])
    corr = np.corrcoef(table.values.T)
    return {"level_popularity_spearman": float(spearmanr(level, popularity)[0]),
            "mean_correlation_between_attributes": float(corr[np.triu_indices_from(corr, 1)].mean()),
            "level_documentary": float(level[documentary].mean()), "level_other": float(level[~documentary].mean()),
            "median_ratings_documentary": float(np.median(popularity[documentary])),
            "median_ratings_other": float(np.median(popularity[~documentary]))}


def holds(r: dict) -> bool:
    return bool(np.sign(r["spearman"]) == r["expected_sign"] and r["p_value"] < 0.05)


# well-known films of ml-100k: token -> title, for the sanity table
FAMOUS = {"50": "Star Wars (1977)", "1": "Toy Story (1995)", "71": "The Lion King (1994)",
          "11": "Se7en (1995)", "2": "GoldenEye (1995)", "318": "Schindler's List (1993)",
          "56": "Pulp Fiction (1994)", "69": "Forrest Gump (1994)", "98": "The Silence of the Lambs (1991)",
          "185": "Psycho (1960)"}


def famous_scores(guided: Path) -> dict:
    table = GuidedTable.read(guided, key_field="item_id")
    rows = {t: table.values[table.tokens.index(t)].round(2).tolist() for t in FAMOUS if t in table.tokens}
    return {"attributes": table.attributes, "rows": rows,
            "mean_over_items": table.values.mean(axis=0).round(2).tolist(),
            "percentile_5": np.percentile(table.values, 5, axis=0).round(2).tolist(),
            "percentile_95": np.percentile(table.values, 95, axis=0).round(2).tolist()}


def markdown(result: dict) -> str:
    old = result.get("old")
    lines = ["# Validity of the LLM ratings of ml-100k", "",
             f"Generated by `{result['command']}` on {result['machine']} (commit {result['commit']}).",
             f"Guided file: `{result['guided_file']}` ({result['llm']}, logprob mode)"
             + (f"; beside it the earlier `{old['guided_file']}` ({old['llm']})." if old else "."), "",
             "## Rank correlation with the genre labels", "",
             "Spearman correlation between each attribute's score and a 0/1 genre label, over all "
             f"{result['items']} items. The genres are part of the text the LLM reads, and a model that "
             "knows the film can also rate it from what it knows; either way a rating that means what "
             "its name says should follow these genres.", ""]
    if old:
        lines += [f"| attribute | genre | expected | {old['llm']} ρ | agrees | {result['llm']} ρ | p-value | "
                  f"items with genre | mean score with / without | agrees | item-centered ρ | agrees |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    else:
        lines += ["| attribute | genre | expected | Spearman ρ | p-value | items with genre | agrees |",
                  "|---|---|---|---|---|---|---|"]
    for k, r in enumerate(result["correlations"]):
        sign = "+" if r["expected_sign"] > 0 else "−"
        new = f"{r['spearman']:+.3f} | {r['p_value']:.1e} | {r['items_with_genre']} | {'yes' if holds(r) else 'no'}"
        if old:
            new = new.replace(f" | {'yes' if holds(r) else 'no'}",
                              f" | {r['mean_with_genre']:.2f} / {r['mean_without_genre']:.2f} | {'yes' if holds(r) else 'no'}")
            o, c = old["correlations"][k], result["correlations_centered"][k]
            lines.append(f"| {r['attribute']} | {r['genre']} | {sign} | {o['spearman']:+.3f} | "
                         f"{'yes' if holds(o) else 'no'} | {new} | {c['spearman']:+.3f} | {'yes' if holds(c) else 'no'} |")
        else:
            lines.append(f"| {r['attribute']} | {r['genre']} | {sign} | {new} |")
    n = len(result["correlations"])
    ok = sum(holds(r) for r in result["correlations"])
    against = [f"{r['attribute']}/{r['genre']} ({r['spearman']:+.2f})" for r in result["correlations"]
               if np.sign(r["spearman"]) == -r["expected_sign"] and r["p_value"] < 0.05]
    lines += ["", f"{result['llm']}: {ok} of {n} expected relations hold (right sign, p < 0.05)"
              + (f"; {result['llm']} has {len(against)} significantly against the expected sign"
                 + (f": {', '.join(against)}." if against else ".")) ]
    centered = result.get("correlations_centered")
    if centered:
        against = [f"{r['attribute']}/{r['genre']} ({r['spearman']:+.2f})" for r in centered
                   if np.sign(r["spearman"]) == -r["expected_sign"] and r["p_value"] < 0.05]
        lines.append(f"{result['llm']}, item-centered as the Guided models use it (`guided_center: item`): "
                     f"{sum(holds(r) for r in centered)} of {n} hold, {len(against)} significantly against"
                     + (f": {', '.join(against)}." if against else "."))
    if old:
        lines.append(f"{old['llm']}: {sum(holds(r) for r in old['correlations'])} of {n}.")
    h = result.get("halo")
    if h:
        lines += ["", "**Why the item-centered column.** Much of the raw scores is one level per item, shared by "
                  f"all attributes (a halo): the attributes correlate {h['mean_correlation_between_attributes']:.2f} "
                  "with each other on average, and an item's mean score rises with how often it was rated "
                  f"(Spearman {h['level_popularity_spearman']:+.2f}), i.e. with how well the model is likely to know "
                  f"it. Documentaries are obscure (median {h['median_ratings_documentary']:.0f} ratings against "
                  f"{h['median_ratings_other']:.0f}) and get a lower level ({h['level_documentary']:.2f} against "
                  f"{h['level_other']:.2f}), which drags their raw `thought_provoking` below a famous drama's. "
                  "Removing each item's mean over its scores takes that level out and leaves what differs between "
                  "attributes. The Guided models do this by default (`guided_center: item` in "
                  "`properties/model/guided.yaml`); the file keeps the raw ratings.", ""]
    else:
        lines.append("")
    for who in ([result] + ([old] if old else [])):
        fam = who.get("famous")
        if not fam:
            continue
        lines += [f"## Well-known films, {who['llm']}", "",
                  f"Each film's score per attribute (scale 1 to 9) in `{who['guided_file']}`; the last rows "
                  "are the attribute's mean and its 5th to 95th percentile over all items.", "",
                  "| film | " + " | ".join(fam["attributes"]) + " |", "|---" * (len(fam["attributes"]) + 1) + "|"]
        for token, values in fam["rows"].items():
            lines.append(f"| {FAMOUS[token]} | " + " | ".join(f"{v:.1f}" for v in values) + " |")
        lines += ["| *mean over all items* | " + " | ".join(f"{v:.1f}" for v in fam["mean_over_items"]) + " |"]
        if "percentile_5" in fam:
            lines.append("| *5th to 95th percentile* | " + " | ".join(
                f"{a:.1f}–{b:.1f}" for a, b in zip(fam["percentile_5"], fam["percentile_95"])) + " |")
        lines.append("")
    if not result.get("speed"):
        lines += ["Speed, and how often `generate` answers parse, are measured by `benchmarks/llm_speed.py`: "
                  "see [llm_scoring.md](llm_scoring.md).", ""]
    if result.get("speed"):
        lines += ["## Parse failures and speed on a sample", "",
                  f"The first {result['speed'][0]['items']} items of ml-100k, scored from an empty cache, "
                  f"on {result['machine']}. The load average shows whether other jobs shared the CPU "
                  f"(about 1 per core they kept busy).", "",
                  "| mode | items | seconds | items/s | load average | answers failing after retries |",
                  "|---|---|---|---|---|---|"]
        for s in result["speed"]:
            failed = f"{s['failed_after_retries']} ({100 * s['failed_after_retries'] / s['items']:.0f}%, " \
                     f"{s['answer_retries']} retries)" if s["mode"] == "generate" else "n/a (nothing to parse)"
            lines.append(f"| {s['mode']} | {s['items']} | {s['seconds']} | {s['items_per_second']} | "
                         f"{s['load_average_1min_after']} | {failed} |")
        for s in result["speed"]:
            for token, error in s["failure_examples"].items():
                lines.append(f"\n- {s['mode']} failure, item {token}: `{error[:160]}`")
    return "\n".join(lines) + "\n"


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--guided", default=str(ROOT / "dataset/ml-100k/ml-100k.guided"))
    parser.add_argument("--llm", default=DEFAULT_LLM)
    parser.add_argument("--old_guided", default=str(ROOT / "benchmarks/results/ml-100k.smollm2-135m.guided"))
    parser.add_argument("--old_llm", default="smollm2-135m")
    parser.add_argument("--sample", type=int, default=40)
    parser.add_argument("--answer_retries", type=int, default=2)
    parser.add_argument("--skip_speed", action="store_true")
    args = parser.parse_args(argv)
    item_file = ROOT / "dataset/ml-100k/ml-100k.item"
    guided = Path(args.guided)
    result = {"command": "python benchmarks/llm_validity.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "machine": machine(), "commit": git_commit(ROOT), "python": platform.python_version(),
              "guided_file": relative(guided), "llm": args.llm,
              "items": len(GuidedTable.read(guided, key_field="item_id").tokens),
              "correlations": genre_correlations(guided, item_file), "famous": famous_scores(guided),
              "correlations_centered": genre_correlations(guided, item_file, center="item"),
              "halo": halo(guided, item_file, ROOT / "dataset/ml-100k/ml-100k.inter")}
    if args.old_guided:
        old = Path(args.old_guided)
        result["old"] = {"guided_file": relative(old), "llm": args.old_llm,
                         "correlations": genre_correlations(old, item_file), "famous": famous_scores(old)}
    if not args.skip_speed:
        schema = AttributeSchema.load("movies")
        texts = dict(list(read_item_texts(item_file, schema).items())[:args.sample])
        backend = make_backend(args.llm, batch_size=4)
        result["speed"] = [time_mode(schema, texts, backend, mode, args.answer_retries)
                           for mode in ("logprob", "generate")]
    (ROOT / "benchmarks/results").mkdir(parents=True, exist_ok=True)
    (ROOT / "benchmarks/results/llm_validity.json").write_text(json.dumps(result, indent=2))
    (ROOT / "docs/llm_validity.md").write_text(markdown(result))
    print(markdown(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
