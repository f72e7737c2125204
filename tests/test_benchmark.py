"""The sweep appends one row per run, resumes without redoing runs, and reports honestly."""

import csv
import json

import pytest
import torch
import yaml
from synthetic import tiny_config

from recbole_guided import benchmark
from recbole_guided.benchmark import load_sweep, run_sweep
from recbole_guided.benchmark_report import write_report


def test_sweep_appends_rows_resumes_and_reports(tiny_root, tmp_path, monkeypatch):
    monkeypatch.setattr(benchmark, "ROOT", tmp_path)
    settings = tiny_config(tiny_root, checkpoint_dir=str(tmp_path / "saved"), topk=[10, 20], valid_metric="MRR@10")
    settings.pop("base_embedding_file")
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(settings))
    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "datasets": ["tiny"], "models": ["GuidedGRU4Rec"], "seeds": [1, 2],
        "variants": ["base", "guided", "random-guided"], "config_files": ["tiny.yaml"],
        "settings": {"epochs": 1}, "model_settings": {"GuidedGRU4Rec": {"stopping_step": 5}}, "results": "results.csv",
    }))
    sweep = load_sweep(sweep_file)
    results = run_sweep(sweep)
    with open(results) as f:
        rows = list(csv.DictReader(f))
    assert sorted((r["variant"], r["seed"]) for r in rows) == sorted(
        (v, s) for v in ("base", "guided", "random-guided") for s in ("1", "2"))
    assert all(0 <= float(r["test_mrr@10"]) <= float(r["test_recall@20"]) <= 1 for r in rows)
    # each row records the budget it ran with: the sweep's epochs, the model's own patience
    assert {(r["epochs"], r["stopping_step"], r["threads"]) for r in rows} == {("1", "5", str(torch.get_num_threads()))}

    # Resuming: a finished sweep runs nothing more; deleted rows are the only runs redone. The base
    # stage is reused, from records as an earlier version wrote them (without the budget).
    for record in (tmp_path / "saved" / "base").glob("*.json"):
        old = json.loads(record.read_text())
        record.write_text(json.dumps({k: v for k, v in old.items() if k not in ("epochs", "stopping_step")}))
    # Seed 1 loses only its `base` row, as when a sweep asks for `base` after its Guided runs: the
    # base stage's record gives it back without training anything.
    rows_kept = [r for r in rows if not (r["variant"] in ("base", "random-guided") and r["seed"] == "2")
                 and not (r["variant"] == "base" and r["seed"] == "1")]
    with open(results, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=benchmark.COLUMNS)
        writer.writeheader()
        writer.writerows(rows_kept)
    run_sweep(sweep)
    with open(results) as f:
        again = list(csv.DictReader(f))
    assert len(again) == len(rows) and again[-1]["variant"] == "random-guided" and again[-1]["seed"] == "2"
    assert [(r["variant"], r["epochs"], r["stopping_step"]) for r in again[-2:]] == [
        ("base", "1", "5"), ("random-guided", "1", "5")]
    base_1 = [[r[k] for k in ("test_mrr@10", "test_ndcg@10", "users_tail")] for rs in (rows, again) for r in rs
              if (r["variant"], r["seed"]) == ("base", "1")]
    assert len(base_1) == 2 and base_1[0] == base_1[1]

    report = tmp_path / "benchmarks.md"
    write_report(sweep, sweep_file, report)
    text = report.read_text()
    assert "Sweep status: **complete**" in text and "| guided | 2 |" in text and "p=" in text
    # what ran, read from the sweep's config rather than written as fixed text
    assert "Evaluation: tiny, leave-one-out (last interaction = test" in text and "full ranking over all items" in text
    assert "the `.item` field `(metadata_field not set)`" in text and "ml-100k" not in text.split("## Results")[0]
    # every run kept its users' ranks; the report compares variants user by user, per group
    assert all((tmp_path / r["ranks_file"]).is_file() for r in again) and all(r["users_tail"] != "" for r in again)
    assert "## Where item semantics should matter: by user group" in text
    assert "**sampled: the target against 100 uniformly drawn negatives**" in text
    paired = next(line for line in text.splitlines() if line.startswith("| `guided` vs `base` |"))
    cells = [c.strip() for c in paired.split("|")[2:-1]]  # all, tail, head, short, long
    assert len(cells) == 5 and "(p" in cells[0] and all("(p" in c or c == "–" for c in cells)
    # and by the target's rank, which also counts the users outside the top 10
    ranked = [line for line in text.splitlines() if line.startswith("| `guided` vs `base` |") and "higher (p" in line]
    assert ranked and all(c.strip().startswith("×") or c.strip() == "–" for c in ranked[0].split("|")[2:-1])
    assert "Every run: at most 1 epochs, patience 5." in text and "GuidedGRU4Rec only: {'stopping_step': 5}" in text
    # guided against the ablation it has, with what that ablation tests
    assert "| random-guided | the LLM's content (random vectors in its place) | " in text


def test_budgets_that_would_mix_or_misalign_rows_are_refused(tmp_path):
    from recbole_guided.benchmark_report import results_tables
    from recbole_guided.errors import ConfigError

    row = {c: "0.1" for c in benchmark.COLUMNS} | {"dataset": "ml-100k", "model": "GuidedBERT4Rec",
                                                  "variant": "base", "seed": "1", "epochs": "10", "stopping_step": "3"}
    longer = row | {"seed": "2", "epochs": "30"}
    with pytest.raises(ConfigError, match=r"r.csv: ml-100k GuidedBERT4Rec has runs with different budgets .*'10'.*'30'"):
        results_tables([row, longer], ["base"], "r.csv")
    assert "Every run: at most 10 epochs, patience 3." in results_tables([row], ["base"], "r.csv")

    old = tmp_path / "old.csv"  # written before the budget columns existed
    old.write_text(",".join(c for c in benchmark.COLUMNS if c not in ("epochs", "stopping_step", "threads")) + "\n")
    with pytest.raises(ConfigError, match=r"old.csv: line 1 has columns .*; expected .*Move this file aside"):
        benchmark.append_row(old, row)
    assert len(old.read_text().splitlines()) == 1  # nothing appended

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "datasets": ["tiny"], "models": ["GuidedGRU4Rec"], "seeds": [1], "variants": ["base"], "config_files": [],
        "results": "r.csv", "model_settings": {"GuidedBERT4Rec": {"epochs": 30}}}))
    with pytest.raises(ConfigError, match=r"sweep.yaml: model_settings for \['GuidedBERT4Rec'\], which are not in models"):
        load_sweep(sweep_file)


def test_partial_sweep_filters_must_name_what_the_sweep_has(tmp_path):
    from recbole_guided.benchmark_command import main
    from recbole_guided.errors import ConfigError

    sweep_file = tmp_path / "sweep.yaml"
    sweep_file.write_text(yaml.safe_dump({
        "datasets": ["tiny"], "models": ["GuidedGRU4Rec"], "seeds": [1, 2], "variants": ["base", "guided"],
        "config_files": ["tiny.yaml"], "results": "results.csv"}))
    for flag, why in [("--seeds=3", r"--seeds: \[3\] not in the sweep's seeds \[1, 2\]"),
                      ("--models=GuidedSASRec", r"--models: \['GuidedSASRec'\] not in the sweep's models"),
                      ("--variants=random-guided", r"--variants: \['random-guided'\] not in the sweep's variants")]:
        with pytest.raises(ConfigError, match=why):
            main([f"--sweep={sweep_file}", flag])


def test_each_sweep_writes_its_own_report_by_default(tiny_root, tmp_path, monkeypatch):
    """A sweep without --report must not overwrite another sweep's report (docs/benchmarks.md)."""
    monkeypatch.setattr(benchmark, "ROOT", tmp_path)
    from recbole_guided.benchmark_command import main

    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny_config(tiny_root)))
    sweep = {"datasets": ["tiny"], "models": ["GuidedGRU4Rec"], "seeds": [1], "variants": ["base"],
             "config_files": ["tiny.yaml"], "results": "results/mine.csv"}
    (tmp_path / "own.yaml").write_text(yaml.safe_dump(sweep))
    (tmp_path / "named.yaml").write_text(yaml.safe_dump({**sweep, "report": "docs/named.md"}))
    main([f"--sweep={tmp_path / 'own.yaml'}", "--report_only=True"])
    main([f"--sweep={tmp_path / 'named.yaml'}", "--report_only=True"])
    assert (tmp_path / "results" / "mine.md").is_file() and (tmp_path / "docs" / "named.md").is_file()
    assert not (tmp_path / "docs" / "benchmarks.md").exists()
    assert "--report=" not in (tmp_path / "docs" / "named.md").read_text()  # the default needs no flag


def test_base_row_recorded_once_when_a_parallel_process_records_it_first(tiny_root, tmp_path, monkeypatch):
    """Two sweep processes on one seed (``--variants`` split between them) both run the base stage;
    the one that finishes second must see the other's base row and not write a second one."""
    import recbole_guided.quick_start as quick_start

    monkeypatch.setattr(benchmark, "ROOT", tmp_path)
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
    capped = {"model": "GuidedGRU4Rec", "variant": "base", "seed": "2020", "epochs_trained": "10", "epochs": "10",
              "stopping_step": "3",
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
    assert "| GRU4Rec | 2020 | 10, 3 → 100, 10 | 10 → 31 (21) | 0.0400 → 0.0500 (+25.0%) |" in text
    assert "- GRU4Rec: `python benchmarks/convergence.py --models=GRU4Rec` (commit abc; m)" in text
    assert "BERT4Rec" not in text


def test_frontier_section_sets_the_attributes_share_against_accuracy(tmp_path, monkeypatch):
    import numpy as np

    from recbole_guided.benchmark_report import frontier_section
    from recbole_guided.evaluation import RunRanks

    monkeypatch.setattr(benchmark, "ROOT", tmp_path)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump({
        "datasets": ["d"], "models": ["GuidedSASRec"], "seeds": [1, 2], "config_files": [], "results": "r.csv",
        "variants": ["base", "guided", "guided-scale4"], "frontier": "sweep.yaml"}))
    assert frontier_section("sweep.yaml") == ""  # no runs yet
    users = np.array(["u1", "u2", "u3", "u4"])
    ranks = {"base": [1, 20, 30, 40], "guided": [1, 10, 30, 40], "guided-scale4": [2, 10, 15, 20]}
    rows = []
    for seed in (1, 2):
        for variant, share in (("base", ""), ("guided", "0.0800"), ("guided-scale4", "0.2500")):
            ranks_file = f"r-ranks/{variant}-{seed}.npz"
            (tmp_path / "r-ranks").mkdir(exist_ok=True)
            RunRanks(users, users, {"full": np.array(ranks[variant])},
                     {"all": np.ones(4, bool), "tail": np.array([False, True, True, True])}).write(tmp_path / ranks_file)
            rows.append({"dataset": "d", "model": "GuidedSASRec", "variant": variant, "seed": seed,
                         "test_ndcg@10": 0.05 + seed / 100, "test_tail_ndcg@10": 0.01, "guided_share": share,
                         "epochs": 8, "stopping_step": 3, "ranks_file": ranks_file})
    with open(tmp_path / "r.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    text = frontier_section("sweep.yaml")
    assert "### d · GuidedSASRec (at most 8 epochs, patience 3; seeds 1, 2)" in text
    assert "| guided-scale4 | `auto*4` | 0.2500 ± 0.0000 | 0.0650 ± 0.0071 | 0.0100 ± 0.0000 |" in text
    assert "| base | – | – |" in text and "| guided | `auto` | 0.0800 ± 0.0000 |" in text
    # every rank but the first user's halves, the first doubles: geometric mean (2 * 0.5^3)^(1/4)
    scale4 = next(line for line in text.splitlines() if line.startswith("| `guided-scale4` vs `base` |"))
    assert scale4.split("|")[2].strip().startswith(f"×{(2 * 0.5 ** 3) ** 0.25:.2f}")
    assert scale4.split("|")[3].strip().startswith("×0.50")  # the tail users: all three halve
    assert "| `guided-scale4` vs `guided` |" in text and "--variants=guided-scale2,guided-scale4,guided-scale8" in text


def test_group_tables_pair_the_no_attribute_retrain_with_the_parent_and_with_guided(tmp_path):
    """By default the report sets `reduced-base-only` (the parent's table trained again, no attributes)
    against `base`, and `guided` against it: what retraining does alone, and what the attributes add."""
    import numpy as np

    from recbole_guided.benchmark_report import GROUP_HEAD, group_tables
    from recbole_guided.evaluation import RunRanks

    users = np.array(["u1", "u2", "u3", "u4"])
    ranks = {"base": [4, 20, 30, 40], "reduced-base-only": [2, 10, 15, 20], "guided": [2, 10, 15, 20]}
    tail = np.array([False, True, True, True])
    masks = {"all": np.ones(4, bool), "tail": tail, "head": ~tail, "short": tail, "long": ~tail}
    rows = []
    for seed in (1, 2):
        for variant in ranks:
            ranks_file = f"r-ranks/{variant}-{seed}.npz"
            (tmp_path / "r-ranks").mkdir(exist_ok=True)
            RunRanks(users, users, {"full": np.array(ranks[variant])}, masks).write(tmp_path / ranks_file)
            rows.append({"dataset": "d", "model": "GuidedSASRec", "variant": variant, "seed": str(seed),
                         "ranks_file": ranks_file, **{f"users_{g}": str(int(masks[g].sum())) for g in benchmark.GROUPS},
                         **{benchmark.group_column("full", g): "0.05" for g in GROUP_HEAD}})
    text = group_tables(rows, list(ranks), tmp_path / "r.csv")
    ranked = {line.split("|")[1].strip(): line.split("|")[2:-1] for line in text.splitlines() if "higher (p" in line}
    assert ranked["`reduced-base-only` vs `base`"][0].strip().startswith("×0.50")  # every rank halves
    assert ranked["`guided` vs `reduced-base-only`"][0].strip().startswith("×1.00")  # the attributes add nothing here
    assert ranked["`guided` vs `reduced-base-only`"][1].strip().startswith("×1.00")  # on the tail either
