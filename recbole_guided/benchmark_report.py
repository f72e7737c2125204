"""Turn the sweep's CSV into ``docs/benchmarks.md``: mean ± std over seeds, change over ``base``,
a paired t-test over seeds, seconds per epoch, and how the numbers were produced."""

from __future__ import annotations

import csv
import datetime
import json
import statistics
from pathlib import Path

import numpy as np
from scipy import stats

from recbole_guided import benchmark
from recbole_guided.config import GuidedConfig, parent_model
from recbole_guided.errors import ConfigError
from recbole_guided.evaluation import RunRanks
from recbole_guided.paired_test import PairedChange, paired_change, paired_rank_change
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
    values = [v for v in values if v == v]  # an empty group's NaN has no mean
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


GROUP_HEAD = ["all", *benchmark.GROUPS]
# (variant, reference) pairs compared user by user; a sweep may name its own with `paired`
# `reduced-base-only` against `base` is what training again from the parent's own table does without
# any attributes; `guided` against it, what the attributes add on top
PAIRED = [("guided", "base"), ("guided", "random-guided"), ("guided", "reduced-base-only"),
          ("metadata-guided", "base"), ("random-guided", "base"), ("reduced-base-only", "base")]


def pooled_pairs(rows: list[dict], results_dir: Path, a: str, b: str, mode: str, group: str,
                 metric: str = "ndcg", k: int = 10) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Per-case values of ``a`` and ``b`` on the same users of the same seeds, pooled over seeds,
    with each case's seed; from the runs' rank files (``rows`` are one model's). ``None`` when no
    seed has both or the group is empty."""
    va, vb, runs = [], [], []
    by = {(r["variant"], r["seed"]): r for r in rows if r.get("ranks_file")}
    for (variant, seed), row_a in sorted(by.items()):
        row_b = by.get((b, seed))
        if variant != a or row_b is None:
            continue
        ra, rb = (read_ranks(results_dir / r["ranks_file"]) for r in (row_a, row_b))
        if mode not in ra.ranks or mode not in rb.ranks:
            continue
        a_values, b_values = ra.paired_values(rb, mode, group, metric, k)
        va.append(a_values)
        vb.append(b_values)
        runs.append(np.full(len(a_values), int(seed)))
    if not va or not sum(len(v) for v in va):
        return None
    return np.concatenate(va), np.concatenate(vb), np.concatenate(runs)


def pooled_paired_change(rows: list[dict], results_dir: Path, a: str, b: str, mode: str, group: str,
                         metric: str = "ndcg", k: int = 10) -> PairedChange | None:
    """``b`` against ``a`` (the interval resamples seeds, then users)."""
    pairs = pooled_pairs(rows, results_dir, a, b, mode, group, metric, k)
    return None if pairs is None else paired_change(pairs[0], pairs[1], runs=pairs[2])


def paired_over_users(rows: list[dict], results_dir: Path, a: str, b: str, mode: str, group: str) -> str:
    change = pooled_paired_change(rows, results_dir, a, b, mode, group)
    return "–" if change is None else str(change)


def paired_ranks_over_users(rows: list[dict], results_dir: Path, a: str, b: str, mode: str, group: str) -> str:
    pairs = pooled_pairs(rows, results_dir, a, b, mode, group, "rank")
    return "–" if pairs is None else str(paired_rank_change(pairs[0], pairs[1], runs=pairs[2]))


_RANKS: dict[Path, RunRanks] = {}


def read_ranks(path: Path) -> RunRanks:
    """A run's rank file, read once per process (a report reads each many times)."""
    if path not in _RANKS:
        _RANKS[path] = RunRanks.read(path)
    return _RANKS[path]


def group_tables(rows: list[dict], variants: list[str], results: Path, groups=benchmark.GROUPS,
                 paired=PAIRED) -> str:
    """Per model: NDCG@10 by user group, full ranking and sampled, and paired changes over users."""
    head = ["all", *groups]
    out = []
    for dataset, model in sorted({(r["dataset"], r["model"]) for r in rows}):
        mine = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        if not any(r.get("users_tail") for r in mine):
            continue
        sizes = next(r for r in mine if r.get("users_tail"))
        users = " · ".join(f"{g} {sizes[f'users_{g}']}" for g in groups)
        out.append(f"\n### {dataset} · {model}: NDCG@10 by group\n\nTest users per group (seed {sizes['seed']}): {users}.\n")
        for mode, label in (("full", "full ranking over all items"), (benchmark.SAMPLED, "sampled: the target "
                                                                       "against 100 uniformly drawn negatives")):
            out.append(f"**{label}** (mean ± std over seeds)\n")
            out.append("| variant | seeds | " + " | ".join(head) + " |")
            out.append("|---|---|" + "---|" * len(head))
            for variant in variants:
                chosen = [r for r in mine if r["variant"] == variant and r.get(benchmark.group_column(mode, "tail"))]
                if chosen:
                    cells = [mean_std(float(r[benchmark.group_column(mode, g)]) for r in chosen) for g in head]
                    out.append(f"| {variant} | {len(chosen)} | " + " | ".join(cells) + " |")
            pairs = [(a, b) for b, a in paired if a in variants and b in variants]
            if pairs:
                out.append("\nChange of NDCG@10, paired over the same users and seeds (95% two-level bootstrap "
                           "interval: seeds, then users within them; Wilcoxon signed-rank p over the pooled "
                           "user x seed pairs, which does not count the seed-to-seed spread: read the interval):\n")
                out += comparison_rows(pairs, head, lambda a, b, g: paired_over_users(mine, results.parent, a, b, mode, g))
                out.append("\nThe target's rank, paired over the same users and seeds: the geometric mean of the "
                           "rank ratio (below 1: the first variant ranks the target higher) with its 95% two-level "
                           "bootstrap interval, the share of users it ranks higher, and the Wilcoxon p of the log "
                           "ranks. Unlike NDCG@10 it counts every user, also those whose target is outside the "
                           "top 10 under both variants:\n")
                out += comparison_rows(pairs, head,
                                       lambda a, b, g: paired_ranks_over_users(mine, results.parent, a, b, mode, g))
            out.append("")
    return "\n".join(out)


def comparison_rows(pairs, head: list[str], cell) -> list[str]:
    """A Markdown table, one row per ``(a, b)`` pair, one ``cell(a, b, group)`` per group."""
    out = ["| comparison | " + " | ".join(head) + " |", "|---|" + "---|" * len(head)]
    for a, b in pairs:
        cells = [cell(a, b, g) for g in head]
        if set(cells) != {"–"}:  # a variant not run yet has no row
            out.append(f"| `{b}` vs `{a}` | " + " | ".join(cells) + " |")
    return out


def frontier_section(sweep_path: str) -> str:
    """The accuracy-interpretability frontier from the sweep at ``sweep_path``: its ``guided`` runs
    at growing ``guided_scale`` (``benchmark.FRONTIER``), the attributes' share of each user's
    ranking against NDCG@10 and the target's rank, paired with the parent on the same users."""
    sweep = benchmark.load_sweep(benchmark.ROOT / sweep_path)
    results = benchmark.ROOT / sweep["results"]
    rows = read_rows(results)
    out = []
    for dataset, model in sorted({(r["dataset"], r["model"]) for r in rows}):
        mine = [r for r in rows if (r["dataset"], r["model"]) == (dataset, model)]
        scales = [v for v in benchmark.FRONTIER if any(r["variant"] == v for r in mine)]
        if len(scales) < 2:
            continue
        # the levels over the seeds every variant shown has, so that a column compares like with like
        shown = [v for v in ("base", *scales) if any(r["variant"] == v for r in mine)]
        seeds = sorted(set.intersection(*({r["seed"] for r in mine if r["variant"] == v} for v in shown)), key=int)
        out.append(f"\n### {dataset} · {model} ({budget(rows, dataset, model, sweep['results'])}; "
                   f"seeds {', '.join(seeds) or 'none in common yet'})\n")
        out.append("| variant | guided_scale | attributes' share | NDCG@10 all | NDCG@10 tail |")
        out.append("|---|---|---|---|---|")
        for variant in shown:
            chosen = [r for r in mine if r["variant"] == variant and r["seed"] in seeds]
            if not chosen:
                continue
            scale = "–" if variant == "base" else f"`{(benchmark.VARIANTS[variant] or {}).get('guided_scale', 'auto')}`"
            share = mean_std(float(r["guided_share"]) for r in chosen if r["guided_share"])
            out.append(f"| {variant} | {scale} | {share} | "
                       f"{mean_std(float(r['test_ndcg@10']) for r in chosen)} | "
                       f"{mean_std(float(r[benchmark.group_column('full', 'tail')]) for r in chosen)} |")
        pairs = [("base", v) for v in scales] + [("guided", v) for v in scales[1:]]
        out.append("\nThe target's rank, paired over the same users and the seeds both variants have "
                   "(geometric mean of the rank ratio, 95% two-level bootstrap interval, share of users "
                   "ranked higher, Wilcoxon p):\n")
        out += comparison_rows(pairs, ["all", "tail"],
                               lambda a, b, g: paired_ranks_over_users(mine, results.parent, a, b, "full", g))
    if not out:
        return ""
    return f"""
## The accuracy-interpretability frontier

How much of each test user's ranking the attributes account for (the variance of the guided part of
the user's top-100 scores over the variance of the scores, averaged over users;
`evaluation.guided_share`) as `guided_scale` grows, against accuracy (full ranking). From the sweep
`{sweep_path}` (`{sweep['results']}`; settings {sweep.get('settings') or {}} over
{sweep['config_files']}), whose `guided-scale*` variants are `guided` with the attributes weighted
k times `auto`:
`python run_recbole_guided.py benchmark --sweep={sweep_path} --variants={','.join(benchmark.FRONTIER[1:])}`.
""" + "\n".join(out) + "\n"


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
    written = report.resolve()
    written = written.relative_to(root) if written.is_relative_to(root) else written
    report_arg = "" if report.resolve() == benchmark.report_path(sweep).resolve() else f" --report={written}"
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
- Command: `python run_recbole_guided.py benchmark --sweep={sweep_path}{report_arg}` (resumable; rerun to continue).
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
    groups = group_tables(rows, sweep["variants"], benchmark.ROOT / sweep["results"], benchmark.sweep_groups(sweep),
                          [tuple(p) for p in sweep.get("paired") or PAIRED])
    if groups:
        text += f"""
## Where item semantics should matter: by user group

Each run also keeps every test user's rank of their target (`{Path(sweep['results']).stem}-ranks/`
beside the CSV, `recbole_guided/evaluation.py`). Groups, from the training split only: **tail** /
**head**: the user's target lies outside / inside the most popular items that together take 80% of
the training interactions; **short** / **long**: the user's training history is at most / above
the median test user's. The sampled rows rank the target against 100 uniformly drawn negatives
(RecBole's `uni100`), evaluated on the same trained models, for comparison with papers that report
sampled metrics; full ranking is the headline.
{groups}"""
    if sweep.get("frontier"):
        text += frontier_section(sweep["frontier"])
    if sweep.get("convergence"):
        text += convergence_section(benchmark.ROOT / sweep["convergence"], rows)
    notes = benchmark.ROOT / sweep["notes"] if sweep.get("notes") else None
    if notes is not None and notes.is_file():  # hand-written reading of the numbers, kept beside the sweep
        text += "\n" + notes.read_text()
    report.parent.mkdir(parents=True, exist_ok=True)
    report.write_text(text)

