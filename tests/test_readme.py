"""The README opens with the two commands, and CI runs the README's test command verbatim."""

from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def readme_commands() -> list[str]:
    block = REPO.joinpath("README.md").read_text().split("```bash\n", 1)[1].split("```", 1)[0]
    return [line for line in block.splitlines() if line and not line.startswith("#")]


def test_readme_opens_with_setup_and_main_job_then_setup_and_tests():
    setup_and_run, setup_and_test = readme_commands()
    assert "pip install torch==2.13.0" in setup_and_run and "run_recbole_guided.py" in setup_and_run
    assert "pytest" in setup_and_test


def test_ci_runs_the_readme_test_command():
    ci_lines = REPO.joinpath(".ci", "run").read_text().splitlines()
    assert readme_commands()[1] in ci_lines
