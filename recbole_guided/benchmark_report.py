"""Turn the sweep's CSV into ``docs/benchmarks.md``: mean ± std over seeds, change over ``base``,
a paired t-test over seeds, seconds per epoch, and how the numbers were produced."""

from __future__ import annotations

import csv
import datetime
import json
import statistics
from pathlib import Path

from scipy import stats

from recbole_guided import benchmark
from recbole_guided.config import GuidedConfig, parent_model
from recbole_guided.errors import ConfigError
from recbole_guided.pipeline import describe_evaluation
from recbole_guided.provenance import git_commit, machine

HEADLINE = ["mrr@10", "ndcg@10", "recall@10", "recall@20", "ndcg@20"]


def read_rows(path: Path) -> list[dict]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def by_seed(rows, dataset, model, variant, metric) -> dict[int, float]:
    return {int(r["seed"]): float(r[f"test_{metric}"]) for r in rows
            if (r["dataset"], r["model"], r["variant"]) == (dataset, model, variant) and r[f"test_{metric}"]}


def mean_std(values) -> str:
    values = list(values)
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.4f}"
    return f"{statistics.mean(values):.4f} ± {statistics.stdev(values):.4f}"


# Each ablation isolates one ingredient of `guided`: the comparison that says whether it matters.
ABLATION_QUESTIONS = {
    "random-guided": "the LLM's content (random vectors in its place)",
    "metadata-guided": "the LLM against the dataset's own categories",
    "guided-no-user": "the user vectors p_u",
    "reduced-base-only": "the attributes at all (same PCA base, full width)",
}


def change_over(variant: dict[int, float], reference: dict[int, float]) -> str:
    """Relative change of the means over the seeds both have, and the paired t-test's p-value."""
    seeds = sorted(set(variant) & set(reference))
    if not seeds:
        return "–"
    v, b = [variant[s] for s in seeds], [reference[s] for s in seeds]
    change = 100 * (statistics.mean(v) - statistics.mean(b)) / statistics.mean(b)
    if len(seeds) < 2:
        return f"{change:+.1f}%"
    p = stats.ttest_rel(v, b).pvalue
    return f"{change:+.1f}% (p{'<0.01' if p < 0.01 else f'={p:.2f}'})"


def row_budget(row: dict) -> tuple[str, str]:
    """(epoch cap, patience) of a CSV row; '?' for rows written before the CSV recorded them."""
    return row.get("epochs") or "?", row.get("stopping_step") or "?"


def budget(rows: list[dict], dataset: str, model: str, results: str = "the results CSV") -> str:
    """The epoch cap and patience every run of this model had; a table mixing budgets is refused."""
    found = {row_budget(r) for r in rows if (r["dataset"], r["model"]) == (dataset, model)}
    if len(found) > 1:
        raise ConfigError(f"{results}: {dataset} {model} has runs with different budgets (epochs, stopping_step) "
                          f"{sorted(found)}; expected one. Move the rows of the old budget to another file.")
    epochs, patience = found.pop()
    return f"at most {epochs} epochs, patience {patience}"


def results_tables(rows: list[dict], variants: list[str], results: str = "the results CSV") -> str:
    out = []
    keys = sorted({(r["dataset"], r["model"]) for r in rows})
    for dataset, model in keys:
        parent = parent_model(model)
        out.append(f"\n### {dataset} · {model} (variant `base` = RecBole's {parent})\n")
        out.append(f"Every run: {budget(rows, dataset, model, results)}.\n")
        out.append("| variant | seeds | " + " | ".join(m.upper() for m in HEADLINE) + " | s/epoch |")
        out.append("|---|---|" + "---|" * len(HEADLINE) + "---|")
        for variant in variants:
            seeds = by_seed(rows, dataset, model, variant, "mrr@10")
            if not seeds:
                continue
            speed = [float(r["seconds_per_epoch"]) for r in rows
                     if (r["dataset"], r["model"], r["variant"]) == (dataset, model, variant)]
            cells = [mean_std(by_seed(rows, dataset, model, variant, m).values()) for m in HEADLINE]
            out.append(f"| {variant} | {len(seeds)} | " + " | ".join(cells) + f" | {statistics.mean(speed):.1f} |")
        out.append("\nChange of the mean over `base` (paired t-test over seeds, two-sided):\n")
        out.append("| variant | " + " | ".join(m.upper() for m in HEADLINE) + " |")
        out.append("|---|" + "---|" * len(HEADLINE))
        for variant in variants:
            if variant == "base" or not by_seed(rows, dataset, model, variant, "mrr@10"):
                continue
            cells = [change_over(by_seed(rows, dataset, model, variant, m),
                                 by_seed(rows, dataset, model, "base", m)) for m in HEADLINE]
            out.append(f"| {variant} | " + " | ".join(cells) + " |")
        ablations = [v for v in ABLATION_QUESTIONS if v in variants and by_seed(rows, dataset, model, v, "mrr@10")]
        if "guided" in variants and ablations:
            out.append("\nChange of `guided` over each ablation, i.e. what the ablated ingredient adds "
                       "(paired t-test over seeds, two-sided):\n")
            out.append("| `guided` vs | what it tests | " + " | ".join(m.upper() for m in HEADLINE) + " |")
            out.append("|---|---|" + "---|" * len(HEADLINE))
            for ablation in ablations:
                cells = [change_over(by_seed(rows, dataset, model, "guided", m),
                                     by_seed(rows, dataset, model, ablation, m)) for m in HEADLINE]
                out.append(f"| {ablation} | {ABLATION_QUESTIONS[ablation]} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def capped_base_row(rows: list[dict], parent: str, seed: int) -> dict | None:
    """The sweep's `base` row of a parent and seed (the sweep names models by their Guided class)."""
    return next((r for r in rows if r["variant"] == "base" and r["seed"] == str(seed)
                 and parent_model(r["model"]) == parent), None)


def convergence_section(path: Path, rows: list[dict]) -> str:
    """The sweep's capped `base` rows against the same parents trained with the cap lifted
    (``benchmarks/convergence.py``), for the parents and seeds that have both."""
    if not path.is_file():
        return ""
    runs = [(r, capped_base_row(rows, r["model"], r["seed"])) for r in json.loads(path.read_text())["runs"].values()]
    runs = [(r, capped) for r, capped in runs if capped]
    if not runs:
        return ""
    out = ["""
## Is `base` cut short by the budget?

Each parent trained once more as the base stage trains it (same config files, split and seed) but
with the cap lifted and RecBole's own patience, and tested at its best validation epoch, against
the sweep's `base` row (epochs counted from 1; commands below the table).

| parent | seed | budget (epochs, patience): capped → uncapped | epochs trained: capped → uncapped (best) | MRR@10 | NDCG@10 | Recall@10 | Recall@20 |
|---|---|---|---|---|---|---|---|"""]
    for r, capped in runs:
        before = {m: float(capped[f"test_{m}"]) for m in r["test"]}
        cells = [f"{before[m]:.4f} → {r['test'][m]:.4f} ({100 * (r['test'][m] - before[m]) / before[m]:+.1f}%)"
                 for m in ("mrr@10", "ndcg@10", "recall@10", "recall@20")]
        out.append(f"| {r['model']} | {r['seed']} | {', '.join(row_budget(capped))} → {r['budget']['epochs']}, {r['budget']['stopping_step']} | "
                   f"{capped['epochs_trained']} → {r['epochs_trained']} ({r['best_epoch'] + 1}) | " + " | ".join(cells) + " |")
    out.append("")
    out += [f"- {r['model']}: `{r['command']}` (commit {r['commit']}; {r['machine']})" for r, _ in runs]
    return "\n".join(out) + "\n"


def sweep_evaluation(sweep: dict) -> tuple[str, str]:
    """How the sweep's first dataset and model are evaluated, and its metadata field, read from
    the same config the runs use (never fixed text)."""
    dataset, model = sweep["datasets"][0], sweep["models"][0]
    config = GuidedConfig(model, dataset, [str(benchmark.ROOT / f) for f in sweep["config_files"]],
                          benchmark.run_settings(sweep, model, "guided", sweep["seeds"][0]))
    return describe_evaluation(config), config["metadata_field"] or "(metadata_field not set)"


def write_report(sweep: dict, sweep_path, report: Path) -> None:
    rows = read_rows(benchmark.ROOT / sweep["results"])
    expected = len(sweep["datasets"]) * len(sweep["models"]) * len(sweep["seeds"]) * len(sweep["variants"])
    status = "complete" if len(rows) >= expected else f"INCOMPLETE: {len(rows)} of {expected} runs finished"
    settings = [f"    {k}: {v}" for k, v in (sweep.get("settings") or {}).items()]
    settings += [f"    {model} only: {v}" for model, v in (sweep.get("model_settings") or {}).items()]
    settings = "\n".join(settings) or "  (no other settings)"
    root = benchmark.ROOT.resolve()
    sweep_path = Path(sweep_path).resolve()
    sweep_path = sweep_path.relative_to(root) if sweep_path.is_relative_to(root) else sweep_path
    evaluation, metadata_field = sweep_evaluation(sweep)
    text = f"""# Benchmarks: Guided models vs their RecBole parents

Generated by `recbole_guided/benchmark_report.py` from `{sweep['results']}` on
{datetime.date.today().isoformat()} (commit {git_commit()}). Sweep status: **{status}**.

- Sweep: `{sweep_path}` ·
  datasets {sweep['datasets']} · models {sweep['models']} · seeds {sweep['seeds']}
- Evaluation: {evaluation}; test metrics of the epoch with the best validation score.
- Same RecBole config, epoch budget and early stopping for every variant of a model; config files
  {sweep['config_files']} plus:
{settings}
- Machine: {machine()}.
- Command: `python run_recbole_guided.py benchmark --sweep={sweep_path}` (resumable; rerun to continue).
  Processes side by side (one per core) each take a part with `--models=`, `--seeds=` or
  `--variants=` (comma separated); all append to the same CSV, and a part finished elsewhere is skipped.

Variants: `base` the parent model as RecBole ships it (trained in the base stage, its item
embeddings are the Guided models' base); `guided` the method (LLM attributes, user guided vectors);
`guided-no-user` without user vectors; `reduced-base-only` the refined table without attributes
(PCA base at full width: the effect of the initialization alone); `random-guided` random vectors
in place of the attributes; `metadata-guided` the `.item` field `{metadata_field}` (multi-hot) in
place of the LLM.

## Results (test, mean ± std over seeds)

`s/epoch` is the mean training epoch of the sweep's runs. It is not a cost comparison: runs may
share the CPU with other jobs; what the refined table costs, measured side by side, is in
`benchmarks/speed.py`'s output (README, "Cost").
{results_tables(rows, sweep['variants'], sweep['results'])}
"""
    if sweep.get("convergence"):
        text += convergence_section(benchmark.ROOT / sweep["convergence"], rows)
    notes = benchmark.ROOT / sweep["notes"] if sweep.get("notes") else None
    if notes is not None and notes.is_file():  # hand-written reading of the numbers, kept beside the sweep
        text += "\n" + notes.read_text()
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)

