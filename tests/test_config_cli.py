"""Config resolution and the command line, driven as a user would drive them."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from synthetic import tiny_config

from recbole_guided.config import GuidedConfig
from recbole_guided.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent


def test_plugin_defaults_load_and_user_settings_win(tiny_root, monkeypatch):
    monkeypatch.setattr(sys, "argv", ["pytest", "--hidden_size=999", "junk"])  # never read
    config = GuidedConfig("GuidedBERT4Rec", "tiny", config_dict=tiny_config(tiny_root, guided_scale=2.0),
                          cmd_args=["--guided_norm=minmax"])
    assert config["transform"] == "mask_itemseq"  # from properties/model/GuidedBERT4Rec.yaml
    assert config["hidden_size"] == 16  # config_dict beats the YAML; sys.argv is ignored
    assert config["guided_scale"] == 2.0 and config["guided_norm"] == "minmax"
    assert config["user_guided"] is True and config["missing_items"] == "error"


def test_model_name_from_a_yaml_file(tiny_root, tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text("model: GuidedGRU4Rec\n")
    config = GuidedConfig(None, "tiny", [str(path)], tiny_config(tiny_root))
    assert config["model"] == "GuidedGRU4Rec" and config["embedding_size"] == 16


def test_recbole_models_still_resolve(tiny_root):
    assert GuidedConfig("SASRec", "tiny", config_dict=tiny_config(tiny_root))["model"] == "SASRec"


def test_unknown_model_is_a_clear_error(tiny_root):
    with pytest.raises(ConfigError, match="unknown model 'GuidedFoo'.*GuidedSASRec"):
        GuidedConfig("GuidedFoo", "tiny", config_dict=tiny_config(tiny_root))


def test_bundled_ml100k_is_found_from_any_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = GuidedConfig("GuidedSASRec", "ml-100k")
    assert Path(config["data_path"]) == REPO / "dataset" / "ml-100k"
    assert config["MAX_ITEM_LIST_LENGTH"] == 50 and config["valid_metric"] == "MRR@10"


def write_run_yaml(tiny_root: Path, path: Path, **overrides) -> Path:
    settings = tiny_config(tiny_root, **overrides)
    settings.pop("base_embedding_file")
    path.write_text(yaml.safe_dump(settings))
    return path


def run_cli(*args, cwd):
    return subprocess.run([sys.executable, str(REPO / "run_recbole_guided.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=600, env={**os.environ, "PYTHONPATH": str(REPO)})


def test_cli_trains_baseline_then_guided_and_writes_the_comparison(tiny_root, tmp_path):
    cfg = write_run_yaml(tiny_root, tmp_path / "tiny.yaml", checkpoint_dir=str(tmp_path / "saved"))
    out = tmp_path / "result.json"
    first = run_cli("--model=GuidedSASRec", "--dataset=tiny", f"--config_files={cfg}", "--epochs=2",
                    f"--results_file={out}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    terminal = first.stdout + first.stderr
    # the comparison is logged once, labelled with what was measured, without RecBole's pandas noise
    assert terminal.count("metric              SASRec    GuidedSASRec    change") == 1
    assert "ndcg@5 by group" in terminal and "uni100   tail" in terminal
    assert "paired over users" in terminal and "(p=" in terminal.split("full     all")[1].splitlines()[0]
    assert "test results (tiny, leave-one-out" in terminal and "full ranking over all items)" in terminal
    assert "FutureWarning" not in terminal and "s/epoch" not in terminal
    record = json.loads(out.read_text())
    assert record["model"] == "GuidedSASRec" and record["dataset"] == "tiny" and record["seed"] == 7
    for part in ("baseline", "guided"):
        assert set(record[part]["test_result"]) == {"recall@5", "mrr@5", "ndcg@5"}
        assert record[part]["seconds_per_epoch"] > 0
        groups = record[part]["groups"]
        assert set(groups) == {"full", "uni100"}
        assert set(groups["full"]) == {"all", "tail", "head", "short", "long", "cold", "warm"}
        assert groups["full"]["tail"]["users"] + groups["full"]["head"]["users"] == groups["full"]["all"]["users"] == 24
        assert groups["full"]["all"]["ndcg@5"] == pytest.approx(record[part]["test_result"]["ndcg@5"], abs=1e-4)
    assert record["baseline"]["model"] == "SASRec"

    # Same config again: the base stage is reused, not retrained, and gives the same baseline.
    again = run_cli("--model=GuidedSASRec", "--dataset=tiny", f"--config_files={cfg}", "--epochs=2",
                    f"--results_file={out}", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "base stage: reusing SASRec" in again.stdout + again.stderr
    assert json.loads(out.read_text())["baseline"] == record["baseline"]


def test_cli_missing_item_in_guided_file_names_file_and_item(tiny_root, tmp_path):
    data = tmp_path / "data"
    (data / "tiny").mkdir(parents=True)
    for f in (tiny_root / "tiny").iterdir():
        (data / "tiny" / f.name).write_bytes(f.read_bytes())
    guided = data / "tiny" / "tiny.guided"
    lines = guided.read_text().splitlines()
    dropped = lines.pop(3).split("\t")[0]
    guided.write_text("\n".join(lines) + "\n")
    cfg = write_run_yaml(data, tmp_path / "tiny.yaml", base_embedding_file=str(data / "tiny" / "tiny-base.npz"))
    proc = run_cli("--model=GuidedSASRec", "--dataset=tiny", f"--config_files={cfg}",
                   f"--base_embedding_file={data / 'tiny' / 'tiny-base.npz'}", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert str(guided) in proc.stderr and f"'{dropped}'" in proc.stderr and "1 item(s)" in proc.stderr
