"""Installed like a library: the built wheel, in a fresh venv, from another working directory,
finds its model YAMLs, schemas and the bundled ml-100k, and trains a Guided model."""

import json
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

RUN = """
import json, recbole_guided
from recbole_guided import run_recbole_guided
from recbole_guided.llm.schema import AttributeSchema
result = run_recbole_guided(model="GuidedSASRec", dataset="ml-100k", config_dict={
    "epochs": 1, "MAX_ITEM_LIST_LENGTH": 5, "train_batch_size": 4096, "eval_batch_size": 4096,
    "show_progress": False})
print(json.dumps({"package": recbole_guided.__file__, "schema": str(AttributeSchema.load("movies").source),
                  "test": result["test_result"], "baseline": result["baseline"]["model"],
                  "evaluation": result["evaluation"]}))
"""


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_trains_from_another_directory(tmp_path):
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "-q",
                    "-w", str(tmp_path / "wheel"), str(REPO)], check=True, capture_output=True, timeout=300)
    wheel = next((tmp_path / "wheel").glob("recbole_guided-*.whl"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                               capture_output=True, text=True, check=True).stdout.strip())
    # The dependencies (torch, RecBole...) come from this environment's site-packages; the
    # plugin itself only from the wheel (this environment's editable install is not processed).
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "-q", str(wheel)],
                   check=True, capture_output=True, timeout=300)
    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run([python, "-c", RUN], cwd=work, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert Path(out["package"]).is_relative_to(site) and Path(out["schema"]).is_relative_to(site)
    assert out["baseline"] == "SASRec" and set(out["test"]) >= {"mrr@10", "ndcg@10", "recall@10"}
    assert out["evaluation"].startswith("ml-100k, leave-one-out")
    assert (work / "saved" / "base").is_dir() and (work / "log").is_dir()  # RecBole's folders, where the user runs
