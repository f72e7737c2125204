"""Every bad input gets a clear error from the command line (exit 2, no traceback); interrupted
scoring loses nothing. One test per row of docs/reliability.md."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from synthetic import make_dataset, tiny_config

from recbole_guided.cli import main
from recbole_guided.data_files import BaseEmbeddings

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def work(tmp_path, monkeypatch):
    """A fresh copy of the tiny dataset and a YAML config naming it; cwd is the temp folder."""
    make_dataset(tmp_path)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump({**tiny_config(tmp_path), "dataset": "tiny"}))
    monkeypatch.chdir(tmp_path)
    return tmp_path


def train(work, *extra, model="GuidedSASRec"):
    return main([f"--model={model}", f"--config_files={work / 'tiny.yaml'}", *extra])


def fails_with(capsys, rc, *fragments):
    err = capsys.readouterr().err
    assert rc == 2, err
    assert err.startswith("error: ") and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err
    return err


def guided(work) -> Path:
    return work / "tiny" / "tiny.guided"


def edit_line(path: Path, lineno: int, fn) -> None:
    lines = path.read_text().splitlines()
    lines[lineno - 1] = fn(lines[lineno - 1])
    path.write_text("\n".join(lines) + "\n")


# --- guided file ---------------------------------------------------------------------------------

def test_guided_file_missing(work, capsys):
    guided(work).unlink()
    fails_with(capsys, train(work), "tiny.guided: guided file not found")


def test_guided_file_unreadable(work, capsys):
    guided(work).write_bytes(b"\xff\xfe\x00\x01binary")
    fails_with(capsys, train(work), "tiny.guided: cannot read guided file")


def test_guided_file_wrong_header(work, capsys):
    edit_line(guided(work), 1, lambda line: line.replace("item_id:token", "movie:token"))
    fails_with(capsys, train(work), "tiny.guided, line 1", "expected 'item_id:token'")


def test_guided_file_non_numeric_cell(work, capsys):
    edit_line(guided(work), 3, lambda line: line.rsplit("\t", 1)[0] + "\thigh")
    fails_with(capsys, train(work), "tiny.guided, line 3", "complexity is 'high' is not a number; expected a float")


def test_guided_file_empty_cell(work, capsys):
    edit_line(guided(work), 4, lambda line: line.rsplit("\t", 1)[0] + "\t")
    fails_with(capsys, train(work), "tiny.guided, line 4", "complexity is empty; expected a float")


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_guided_file_nan_or_infinite(work, capsys, value):
    edit_line(guided(work), 2, lambda line: line.rsplit("\t", 1)[0] + f"\t{value}")
    fails_with(capsys, train(work), "tiny.guided, line 2", f"complexity is {value}; expected a finite float")


def test_guided_file_duplicate_item(work, capsys):
    lines = guided(work).read_text().splitlines()
    guided(work).write_text("\n".join(lines + [lines[1]]) + "\n")
    token = lines[1].split("\t")[0]
    fails_with(capsys, train(work), f"duplicate item_id '{token}' (first on line 2)")


def test_guided_file_missing_dataset_items(work, capsys):
    lines = guided(work).read_text().splitlines()
    guided(work).write_text("\n".join(lines[:1] + lines[3:]) + "\n")
    gone = [line.split("\t")[0] for line in lines[1:3]]
    err = fails_with(capsys, train(work), "2 item(s) of the dataset are missing", "missing_items")
    assert all(repr(t) in err for t in gone)


def test_guided_file_attributes_not_matching_the_schema(work, capsys):
    fails_with(capsys, train(work, "--guided_attributes=movies"),
               "tiny.guided, line 1: guided attributes ['tension', 'humour', 'romance', 'complexity'] "
               "do not match the schema", "movies.yaml")


def test_items_not_in_the_dataset_are_ignored_with_a_count(work, capsys, caplog):
    with open(guided(work), "a") as f:
        f.write("not-an-item\t1\t2\t3\t4\nneither\t1\t2\t3\t4\n")
    with caplog.at_level(logging.INFO):
        assert train(work) == 0
    assert any("2 item(s) not in the dataset were ignored" in r.getMessage() for r in caplog.records)


# --- base embedding file ---------------------------------------------------------------------------

def base_file(work, tokens, vectors) -> Path:
    path = work / "custom-base.npz"
    np.savez(path, tokens=np.asarray(tokens, dtype=str), vectors=vectors)
    return path


def tiny_base(work) -> BaseEmbeddings:
    return BaseEmbeddings.read(work / "tiny" / "tiny-base.npz")


def test_base_file_missing(work, capsys):
    fails_with(capsys, train(work, "--base_embedding_file=nowhere.npz"), "nowhere.npz: base embedding file not found")


def test_base_file_wrong_shape(work, capsys):
    base = tiny_base(work)
    path = base_file(work, base.tokens, base.vectors[:-1])
    fails_with(capsys, train(work, f"--base_embedding_file={path}"), "custom-base.npz: 'vectors' has shape (29, 24), expected (30, dim)")


def test_base_file_fewer_dimensions_than_the_base_part(work, capsys):
    base = tiny_base(work)
    path = base_file(work, base.tokens, base.vectors[:, :5])
    fails_with(capsys, train(work, f"--base_embedding_file={path}"), "the base part needs 12 dimensions but the base embeddings have only 5")


def test_base_file_with_nan(work, capsys):
    base = tiny_base(work)
    vectors = base.vectors.copy()
    vectors[3, 1] = np.nan
    fails_with(capsys, train(work, f"--base_embedding_file={base_file(work, base.tokens, vectors)}"),
               "1 vector(s) hold NaN or infinite values", f"first item '{base.tokens[3]}'")


def test_base_file_duplicate_tokens(work, capsys):
    base = tiny_base(work)
    tokens = list(base.tokens)
    tokens[5] = tokens[4]
    fails_with(capsys, train(work, f"--base_embedding_file={base_file(work, tokens, base.vectors)}"),
               f"duplicate token '{tokens[4]}'")


# --- attribute schema (through the score command) -----------------------------------------------------

SCHEMA = {"domain": "movies", "framing": "You are a clerk.", "item_template": "{title}, genres: {class}",
          "scale": {"min": 1, "max": 9},
          "attributes": [{"name": "tension", "description": "suspense", "low": "calm", "high": "thrilling"},
                         {"name": "humor", "description": "fun", "low": "serious", "high": "hilarious"}]}


def score_with_schema(work, schema: dict) -> int:
    path = work / "schema.yaml"
    path.write_text(yaml.safe_dump(schema))
    return main(["score", "--dataset=tiny", f"--data_path={work}", f"--attributes={path}", "--llm=nowhere"])


def test_schema_missing_keys(work, capsys):
    schema = {k: v for k, v in SCHEMA.items() if k != "scale"}
    fails_with(capsys, score_with_schema(work, schema), "schema.yaml: missing key(s) ['scale']")
    schema = {**SCHEMA, "attributes": [{"name": "tension", "description": "suspense"}]}
    fails_with(capsys, score_with_schema(work, schema), "attribute #1 (tension): missing key(s) ['low', 'high']")


def test_schema_duplicate_attribute_names(work, capsys):
    schema = {**SCHEMA, "attributes": SCHEMA["attributes"] + [SCHEMA["attributes"][0]]}
    fails_with(capsys, score_with_schema(work, schema), "attribute #3: duplicate attribute name 'tension'")


def test_schema_empty_attribute_list(work, capsys):
    fails_with(capsys, score_with_schema(work, {**SCHEMA, "attributes": []}), "'attributes' is empty")


def test_schema_template_field_not_in_the_item_file(work, capsys):
    schema = {**SCHEMA, "item_template": "{title} ({release_year})"}
    fails_with(capsys, score_with_schema(work, schema), "item_template uses field(s) ['release_year']",
               "tiny.item does not have")


# --- models, options, checkpoints --------------------------------------------------------------------

def test_unknown_model_name(work, capsys):
    fails_with(capsys, train(work, model="GuidedSASRecc"), "unknown model 'GuidedSASRecc'", "GuidedSASRec")


def test_both_parts_of_the_refined_embedding_off(work, capsys):
    fails_with(capsys, train(work, "--use_base=False", "--use_guided=False"), "use_base and use_guided are both False")


def test_checkpoint_of_another_model_or_dataset(work, capsys):
    assert train(work, model="GuidedGRU4Rec") == 0
    [gru] = (work / "saved").glob("GuidedGRU4Rec-*.pth")
    fails_with(capsys, train(work, f"--resume_file={gru}"), "made for model GuidedGRU4Rec, not GuidedSASRec")
    make_dataset(work, "other", n_items=25)
    other = yaml.safe_load((work / "tiny.yaml").read_text())
    other.update(dataset="other", base_embedding_file=str(work / "other" / "other-base.npz"))
    (work / "other.yaml").write_text(yaml.safe_dump(other))
    rc = main(["--model=GuidedGRU4Rec", f"--config_files={work / 'other.yaml'}", f"--resume_file={gru}"])
    fails_with(capsys, rc, "made for dataset tiny with 31 item ids, not other")


def test_checkpoint_carrying_a_pickled_object_is_refused(work, capsys):
    path = work / "evil.pth"
    torch.save({"format": "recbole-guided/1", "payload": Path("x")}, path)  # any class: code on load
    fails_with(capsys, train(work, f"--resume_file={path}"), "evil.pth: refused to load", "pickled Python objects")


def test_dataset_folder_missing(work, capsys):
    fails_with(capsys, train(work, "--dataset=shop"), "dataset 'shop': no folder", "shop.inter", "set data_path")


def test_guided_file_with_another_field_separator(work, capsys):
    path = guided(work)
    path.write_text(path.read_text().replace("\t", ","))
    fails_with(capsys, train(work), "tiny.guided, line 1: header cell", "field_separator '\\t'")


def test_bad_option_value_fails_before_any_file_is_read(work, capsys):
    guided(work).unlink()  # would be reported if anything were read first
    fails_with(capsys, train(work, "--guided_source=llm"), "guided_source 'llm' unknown; expected one of")


def test_process_keys_in_a_config_file_are_refused(work, capsys):
    config = work / "tiny.yaml"
    config.write_text(config.read_text() + "nproc: 2\n")  # starts no process: said, not ignored
    fails_with(capsys, train(work), "nproc/world_size are not config keys", "--nproc=2")


def test_impossible_process_layout(work, capsys):
    fails_with(capsys, train(work, "--nproc=2", "--world_size=1"), "nproc 2, world_size 1, group_offset 0")


def test_model_with_its_own_trainer_is_refused_before_training(work, capsys):
    fails_with(capsys, main(["--model=S3Rec", f"--config_files={work / 'tiny.yaml'}"]),
               "S3Rec trains with RecBole's S3RecTrainer", "run_recbole")
    assert not (work / "saved").exists()


def test_resume_file_of_another_model_is_refused_before_the_base_stage(work, capsys):
    path = work / "other.pth"
    from recbole_guided.compat import save_checkpoint

    save_checkpoint(path, model="GuidedGRU4Rec", dataset="tiny", item_tokens=[])
    fails_with(capsys, train(work, f"--resume_file={path}"), "made for model GuidedGRU4Rec, not GuidedSASRec")
    assert not (work / "saved" / "base").exists()


def test_errors_reach_a_real_shell_without_a_traceback(work):
    proc = subprocess.run([sys.executable, str(REPO / "run_recbole_guided.py"), "--model=Nope",
                           f"--config_files={work / 'tiny.yaml'}"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "unknown model 'Nope'" in proc.stderr and "Traceback" not in proc.stderr


# --- interrupted scoring ------------------------------------------------------------------------------

def score_command(data: Path, llm: Path, cache: Path) -> list[str]:
    schema = data / "schema.yaml"
    schema.write_text(yaml.safe_dump({**SCHEMA, "attributes": SCHEMA["attributes"] * 1}))
    return [sys.executable, str(REPO / "run_recbole_guided.py"), "score", "--dataset=big", f"--data_path={data}",
            f"--attributes={schema}", f"--llm={llm}", "--batch_size=1", f"--cache={cache}", "--no_progress"]


def test_killed_scoring_run_resumes_and_equals_an_uninterrupted_run(tmp_path):
    from tiny_llm import build_tiny_llm

    llm = build_tiny_llm(tmp_path / "llm")
    for name in ("once", "killed"):
        make_dataset(tmp_path / name, "big", n_items=300, n_users=40, per_user=20)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    once = subprocess.run(score_command(tmp_path / "once", llm, tmp_path / "once.jsonl"), env=env,
                          capture_output=True, text=True, timeout=600)
    assert once.returncode == 0, once.stderr

    cache, output = tmp_path / "killed.jsonl", tmp_path / "killed" / "big" / "big.guided"
    output.unlink()  # make_dataset wrote a synthetic one: the scorer must make its own
    proc = subprocess.Popen(score_command(tmp_path / "killed", llm, cache), env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and (not cache.exists() or len(cache.read_text().splitlines()) < 40):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(cache.read_text().splitlines())
    assert 40 <= done < 300, "the run must be killed mid-way"
    assert not output.exists() and not list(output.parent.glob(".big.guided.*"))  # nothing half-written

    rerun = subprocess.run(score_command(tmp_path / "killed", llm, cache), env=env,
                           capture_output=True, text=True, timeout=600)
    assert rerun.returncode == 0, rerun.stderr
    assert f"{300 - done} items scored now" in rerun.stderr or f"{301 - done} items scored now" in rerun.stderr
    assert output.read_bytes() == (tmp_path / "once" / "big" / "big.guided").read_bytes()


def test_atomic_writes_leave_an_ordinary_file_or_nothing(tmp_path):
    from recbole_guided.atomic_files import atomic_path

    old = os.umask(0o022)
    try:
        with atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("{}")
        assert (tmp_path / "out.json").stat().st_mode & 0o777 == 0o644  # not mkstemp's 0600
        with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.json") as tmp:
            tmp.write_text("half")
            raise RuntimeError("interrupted")
    finally:
        os.umask(old)
    assert (tmp_path / "out.json").read_text() == "{}" and len(list(tmp_path.iterdir())) == 1
