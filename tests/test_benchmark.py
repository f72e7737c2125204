"""The sweep appends one row per run, resumes without redoing runs, and reports honestly."""

import csv

import yaml
from synthetic import tiny_config

from recbole_guided import benchmark
from recbole_guided.benchmark import load_sweep, run_sweep
from recbole_guided.benchmark_report import write_report


def test_sweep_appends_rows_resumes_and_reports(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "REPO_ROOT", tmp_path)
    settings = tiny_config(tiny_root, checkpoint_dir=str(tmp_path / "saved"), topk=[10, 20], valid_metric="MRR@10")
    settings.pop("base_embedding_file")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(settings))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "datasets": ["tiny"], "models": ["GuidedGRU4Rec"], "seeds": [1, 2],
        "variants": ["base", "guided", "random-guided"], "config_files": ["tiny.yaml"],
        "settings": {"epochs": 1}, "results": "results.csv",
    }))
    sweep = load_sweep(sweep_file)
    results = run_sweep(sweep)
    with open(results) as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["variant"], r["seed"]) for r in rows) == sorted(
        (v, s) for v in ("base", "guided", "random-guided") for s in ("1", "2"))
    assert all(0 <= float(r["test_mrr@10"]) <= float(r["test_recall@20"]) <= 1 for r in rows)

    # Resuming: a finished sweep runs nothing more; a deleted row is the only run redone.
    rows_kept = [r for r in rows if not (r["variant"] == "random-guided" and r["seed"] == "2")]
    with open(results, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=benchmark.COLUMNS)
        writer.writeheader()
        writer.writerows(rows_kept)
    run_sweep(sweep)
    with open(results) as f:
        again = list(csv.DictReader(f))
    assert len(again) == len(rows) and again[-1]["variant"] == "random-guided" and again[-1]["seed"] == "2"

    report = tmp_path / "benchmarks.md"
    monkeypatch.setattr("recbole_guided.benchmark_report.REPO_ROOT", tmp_path)
    write_report(sweep, sweep_file, report)
    text = report.read_text()
    assert "Sweep status: **complete**" in text and "| guided | 2 |" in text and "p=" in text
    # guided against the ablation it has, with what that ablation tests
    assert "| random-guided | the LLM's content (random vectors in its place) | " in text


def test_partial_sweep_filters_must_name_what_the_sweep_has(tmp_path):
    import pytest

    from recbole_guided.errors import ConfigError

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "datasets": ["tiny"], "models": ["GuidedGRU4Rec"], "seeds": [1, 2], "variants": ["base", "guided"],
        "config_files": ["tiny.yaml"], "results": "results.csv"}))
    for flag, why in [("--seeds=3", r"--seeds: \[3\] not in the sweep's seeds \[1, 2\]"),
                      ("--models=GuidedSASRec", r"--models: \['GuidedSASRec'\] not in the sweep's models"),
                      ("--variants=random-guided", r"--variants: \['random-guided'\] not in the sweep's variants")]:
        with pytest.raises(ConfigError, match=why):
            benchmark.main([f"--sweep={sweep_file}", flag])


def test_base_row_recorded_once_when_a_parallel_process_records_it_first(tiny_root, tmp_path, monkeypatch):
    """Two sweep processes on one seed (``--variants`` split between them) both run the base stage;
    the one that finishes second must see the other's base row and not write a second one."""
    import recbole_guided.quick_start as quick_start

    monkeypatch.setattr(benchmark, "REPO_ROOT", tmp_path)
    settings = tiny_config(tiny_root, checkpoint_dir=str(tmp_path / "saved"), topk=[10, 20], valid_metric="MRR@10")
    settings.pop("base_embedding_file")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(settings))
    sweep = {"datasets": ["tiny"], "models": ["GuidedGRU4Rec"], "seeds": [1], "variants": ["base", "guided"],
             "config_files": ["tiny.yaml"], "settings": {"epochs": 1}, "results": "results.csv"}
    real_run = quick_start.run_recbole_guided

    def run_while_another_process_records_base(*args, **kwargs):
        result = real_run(*args, **kwargs)
        benchmark.append_row(tmp_path / "results.csv",
                             benchmark._row("tiny", "GuidedGRU4Rec", "base", 1, result["baseline"]))
        return result

    monkeypatch.setattr(quick_start, "run_recbole_guided", run_while_another_process_records_base)
    with open(run_sweep(sweep)) as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["variant"] for r in rows) == ["base", "guided"]


def test_convergence_section_sets_capped_base_against_uncapped(tmp_path):
    import json

    from recbole_guided.benchmark_report import convergence_section

    metrics = ("mrr@10", "ndcg@10", "recall@10", "recall@20")
    capped = {"model": "GuidedGRU4Rec", "variant": "base", "seed": "2020", "epochs_trained": "10",
              **{f"test_{m}": "0.04" for m in metrics}}
    other_variant = {**capped, "variant": "guided", "test_mrr@10": "0.9"}
    assert convergence_section(tmp_path / "missing.json", [capped]) == ""
    run = {"model": "GRU4Rec", "seed": 2020, "budget": {"epochs": 100, "stopping_step": 10},
           "epochs_trained": 31, "best_epoch": 20, "test": dict.fromkeys(metrics, 0.05),
           "command": "python benchmarks/convergence.py --models=GRU4Rec", "commit": "abc", "machine": "m"}
    no_row = {**run, "model": "BERT4Rec"}  # the sweep has no base row for it yet
    path = tmp_path / "convergence.json"
    path.write_text(json.dumps({"runs": {"GRU4Rec-seed2020": run, "BERT4Rec-seed2020": no_row}}))
    text = convergence_section(path, [other_variant, capped])
    assert "| GRU4Rec | 2020 | 100, 10 | 10 → 31 (21) | 0.0400 → 0.0500 (+25.0%) |" in text
    assert "- GRU4Rec: `python benchmarks/convergence.py --models=GRU4Rec` (commit abc; m)" in text
    assert "BERT4Rec" not in text
