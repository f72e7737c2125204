"""The benchmark sweep: models x datasets x seeds x variants, one RecBole config for all.

Every run appends one row to a CSV as soon as it finishes, so an interrupted sweep resumes and
skips what is done. ``benchmark_report`` turns the CSV into ``docs/benchmarks.md``;
``benchmark_command`` is the command line of both.
"""

from __future__ import annotations

import csv
import datetime
from pathlib import Path

import yaml

from recbole_guided.errors import ConfigError
from recbole_guided.evaluation import GROUPS as USER_GROUPS
from recbole_guided.provenance import git_commit

# The sweep file's paths (results, config files, notes) are relative to the working directory,
# as RecBole's dataset/ and saved/ are: run the sweep from the project's root.
ROOT = Path()

# Each variant: the model to run (the Guided model or its parent) and the settings it changes.
VARIANTS = {
    "base": None,  # recorded from the base stage of the Guided runs: the parent as RecBole ships it
    "guided": {"user_guided": True},
    "guided-no-user": {"user_guided": False},
    "reduced-base-only": {"use_guided": False},
    "random-guided": {"guided_source": "random"},
    "metadata-guided": {"guided_source": "metadata"},
    # p_u starts from <dataset>.uguided, written by `score --target=users --adapter=<finetune-llm output>`
    "guided-lora-users": {"user_guided": True, "user_guided_init": "file"},
    # cold items (never in training) the default way (their attributes predict their base part), or
    # the alternatives: the warm items' mean; trained like any other row (RecBole's behaviour)
    "guided-cold-mean": {"user_guided": True, "cold_items": "mean"},
    "guided-cold-train": {"user_guided": True, "cold_items": "train", "missing_items": "mean"},
    # the base part from a text encoder (`embed-items`) instead of the parent's trained table
    "text-base": {"use_guided": False, "base_embedding_file": "{data_path}/{dataset}.text.npz"},
    "text-guided": {"user_guided": True, "base_embedding_file": "{data_path}/{dataset}.text.npz"},
    # the accuracy-interpretability frontier: `guided` with the attributes weighted k times `auto`
    "guided-scale2": {"user_guided": True, "guided_scale": "auto*2"},
    "guided-scale4": {"user_guided": True, "guided_scale": "auto*4"},
    "guided-scale8": {"user_guided": True, "guided_scale": "auto*8"},
}
FRONTIER = ["guided", "guided-scale2", "guided-scale4", "guided-scale8"]  # in order of the attributes' weight
METRICS = ["mrr@10", "ndcg@10", "recall@10", "mrr@20", "ndcg@20", "recall@20", "hit@10"]
GROUPS = ["tail", "head", "short", "long"]  # evaluation.py: the target's popularity, the user's history length
# (a sweep may name others of evaluation.GROUPS, e.g. cold and warm, with its `groups` key)
GROUP_METRICS = ["ndcg@10", "mrr@10", "recall@10"]
SAMPLED = "uni100"  # evaluated on the same trained model, beside full ranking
def group_column(mode: str, group: str, metric: str = "ndcg@10") -> str:
    """The CSV column of a metric by ranking mode and user group (full ranking, all users: ``test_<metric>``)."""
    if mode == "full":
        return f"test_{metric}" if group == "all" else f"test_{group}_{metric}"
    return f"{mode}_{group}_{metric}"


def columns(groups=GROUPS) -> list[str]:
    """The CSV header of a sweep that reports ``groups``."""
    return ["dataset", "model", "variant", "seed", *[f"test_{m}" for m in METRICS], *[f"valid_{m}" for m in METRICS],
            *[f"users_{g}" for g in groups], *[group_column("full", g, m) for g in groups for m in GROUP_METRICS],
            *[group_column(SAMPLED, g, m) for g in ["all", *groups] for m in GROUP_METRICS],
            "guided_share", "seconds_per_epoch", "epochs_trained", "epochs", "stopping_step", "threads", "finished",
            "commit", "ranks_file"]  # the budget each run had, torch's threads, and each test user's rank (evaluation.RunRanks)


COLUMNS = columns()


def sweep_groups(sweep: dict) -> list[str]:
    return list(sweep.get("groups") or GROUPS)


def load_sweep(path) -> dict:
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: sweep file not found")
    sweep = yaml.safe_load(path.read_text())
    for key in ("datasets", "models", "seeds", "variants", "config_files", "results"):
        if key not in sweep:
            raise ConfigError(f"{path}: missing key '{key}'")
    unknown = set(sweep["variants"]) - set(VARIANTS)
    if unknown:
        raise ConfigError(f"{path}: unknown variants {sorted(unknown)}; expected some of {list(VARIANTS)}")
    unknown = set(sweep_groups(sweep)) - set(USER_GROUPS[1:])
    if unknown:
        raise ConfigError(f"{path}: unknown groups {sorted(unknown)}; expected some of {list(USER_GROUPS[1:])}")
    unknown = set(sweep.get("model_settings") or {}) - set(sweep["models"])
    if unknown:
        raise ConfigError(f"{path}: model_settings for {sorted(unknown)}, which are not in models {sweep['models']}")
    return sweep


def report_path(sweep: dict) -> Path:
    """Where a sweep's report goes unless ``--report`` says: its own ``report`` key, else beside its
    results (so that no sweep overwrites another's report by default)."""
    if sweep.get("report"):
        return ROOT / sweep["report"]
    return (ROOT / sweep["results"]).with_suffix(".md")


def run_settings(sweep: dict, model: str, variant: str, seed: int) -> dict:
    """The sweep's settings, then the model's own (e.g. a longer epoch budget), then the variant's."""
    model_settings = (sweep.get("model_settings") or {}).get(model) or {}
    return {**(sweep.get("settings") or {}), **model_settings, **(VARIANTS[variant] or {}), "seed": seed}


def with_dataset(settings: dict, dataset: str, data_path: str = "dataset") -> dict:
    """A variant's file settings name the dataset's own files (``{data_path}/{dataset}.text.npz``)."""
    return {k: v.format(data_path=f"{data_path}/{dataset}", dataset=dataset) if isinstance(v, str) else v
            for k, v in settings.items()}


def done_runs(results: Path) -> set[tuple]:
    if not results.is_file():
        return set()
    with open(results, newline="") as f:
        return {(r["dataset"], r["model"], r["variant"], int(r["seed"])) for r in csv.DictReader(f)}


def append_row(results: Path, row: dict, header: list[str] = COLUMNS) -> None:
    """One finished run, appended and flushed at once (a killed sweep loses at most the run in flight)."""
    results.parent.mkdir(parents=True, exist_ok=True)
    new = not results.is_file()
    if not new:
        with open(results, newline="") as f:
            found = next(csv.reader(f), [])
        if found != header:  # appending under another header would shift every value into the wrong column
            raise ConfigError(f"{results}: line 1 has columns {found}; expected {header}. "
                              "Move this file aside (it was written by another version) and rerun.")
    with open(results, "a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=header, extrasaction="ignore")  # groups the sweep does not report
        if new:
            writer.writeheader()
        writer.writerow(row)
        f.flush()


def _row(dataset, model, variant, seed, result, ranks_file: str = "") -> dict:
    import torch

    row = {"dataset": dataset, "model": model, "variant": variant, "seed": seed,
           "seconds_per_epoch": f"{result['seconds_per_epoch']:.2f}", "epochs_trained": result["epochs_trained"],
           "epochs": result["epochs"], "stopping_step": result["stopping_step"], "threads": torch.get_num_threads(),
           "finished": datetime.datetime.now().isoformat(timespec="seconds"), "commit": git_commit(),
           "ranks_file": ranks_file, "guided_share": "" if result.get("guided_share") is None
           else f"{result['guided_share']:.4f}"}
    for split in ("test", "valid"):
        values = result["test_result" if split == "test" else "best_valid_result"]
        row.update({f"{split}_{m}": values.get(m, "") for m in METRICS})
    groups = result.get("groups") or {}
    for mode in ("full", SAMPLED):
        for group, values in (groups.get(mode) or {}).items():
            if mode == "full" and group == "all":  # RecBole's own test_result above
                continue
            if mode == "full":
                row[f"users_{group}"] = values["users"]
            row.update({group_column(mode, group, m): values.get(m, "") for m in GROUP_METRICS})
    return row


def keep_ranks(results: Path, dataset, model, variant, seed, result) -> str:
    """Copy the run's per-user ranks beside the CSV (the checkpoint's copy lives in saved/)."""
    source = result.get("ranks_file")
    if not source or not Path(source).is_file():
        return ""
    target = results.parent / f"{results.stem}-ranks" / f"{dataset}-{model}-{variant}-seed{seed}.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(Path(source).read_bytes())
    return str(target.relative_to(results.parent))


def run_sweep(sweep: dict, cmd_args=()) -> Path:
    """Run every (dataset, model, seed, variant) not yet in the results CSV."""
    from recbole_guided.quick_start import parent_result, run_recbole_guided

    results = ROOT / sweep["results"]
    header = columns(sweep_groups(sweep))
    config_files = [str(ROOT / f) for f in sweep["config_files"]]
    guided_variants = [v for v in sweep["variants"] if v != "base"]
    if sweep.get("new_items"):
        prepare_new_items(sweep, config_files)
    for dataset in sweep["datasets"]:
        for model in sweep["models"]:  # model-major: the first model's table completes first
            for seed in sweep["seeds"]:
                for variant in guided_variants:
                    if (dataset, model, variant, seed) in done_runs(results):
                        continue
                    settings = with_dataset(run_settings(sweep, model, variant, seed), dataset)
                    result = run_recbole_guided(model, dataset, config_files, settings, cmd_args=cmd_args)
                    # The base stage ran (or was reused) with the same data, split and seed. Read the
                    # CSV again: a parallel sweep process may have recorded it while this run trained.
                    baseline = result["baseline"]  # None when the base part came from a file (text-*)
                    if baseline is not None and base_missing(sweep, results, dataset, model, seed):
                        record_run(results, header, (dataset, model, "base", seed), baseline)
                    record_run(results, header, (dataset, model, variant, seed), result)
                if base_missing(sweep, results, dataset, model, seed):
                    # The seed's Guided variants were all done before `base` was asked for (or none
                    # trains a parent): the base stage alone gives it, reusing its record if it has one.
                    settings = with_dataset(run_settings(sweep, model, "base", seed), dataset)
                    baseline = parent_result(model, dataset, config_files, settings, cmd_args)
                    record_run(results, header, (dataset, model, "base", seed), baseline)
    return results


def base_missing(sweep: dict, results: Path, dataset, model, seed) -> bool:
    """The sweep asks for ``base`` and the CSV has no such row yet (read each time: a parallel
    sweep process may have written it meanwhile)."""
    return "base" in sweep["variants"] and (dataset, model, "base", seed) not in done_runs(results)


def record_run(results: Path, header: list[str], run: tuple, result: dict) -> None:
    """Keep a run's per-user ranks beside the CSV and append its row; ``run``: (dataset, model, variant, seed)."""
    append_row(results, _row(*run, result, keep_ranks(results, *run, result)), header)


def prepare_new_items(sweep: dict, config_files: list[str]) -> None:
    """Make the sweep's new-items dataset (``new_items: {source, share, seed}``) if it is not there."""
    from recbole_guided.atomic_files import AtomicFormat
    from recbole_guided.config import GuidedConfig
    from recbole_guided.new_items import make_new_item_dataset, new_item_dataset_name

    spec = sweep["new_items"]
    share = float(spec.get("share", 0.1))
    if new_item_dataset_name(spec["source"], share) not in sweep["datasets"]:
        raise ConfigError(f"new_items makes {new_item_dataset_name(spec['source'], share)}, which is not in the "
                          f"sweep's datasets {sweep['datasets']}")
    config = GuidedConfig(sweep["models"][0], spec["source"], config_files)
    make_new_item_dataset(Path(config["data_path"]).parent, spec["source"], AtomicFormat.from_config(config),
                          config["TIME_FIELD"], share, int(spec.get("seed", 2020)), out_root=ROOT / "dataset")
