"""``run_recbole_guided.py benchmark``: run the sweep (resumable), then write its report.

    python run_recbole_guided.py benchmark   (the evidence sweep, benchmarks/configs/ml-100k-5seeds.yaml)
    python run_recbole_guided.py benchmark --sweep=benchmarks/configs/ml-100k.yaml --report_only=True   (its `report`: docs/benchmarks-3seeds-smollm2.md)
"""

from __future__ import annotations

import argparse
from pathlib import Path

from recbole_guided.benchmark import ROOT, load_sweep, report_path, run_sweep
from recbole_guided.benchmark_report import write_report
from recbole_guided.errors import ConfigError


def _part_of(sweep: dict, key: str, given: str | None, kind) -> list:
    """The comma-separated ``--<key>`` value (all of the sweep's when absent), each one of the sweep's."""
    chosen = [kind(v) for v in given.split(",")] if given else sweep[key]
    unknown = [v for v in chosen if v not in sweep[key]]
    if unknown:
        raise ConfigError(f"--{key}: {unknown} not in the sweep's {key} {sweep[key]}")
    return chosen


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="run_recbole_guided.py benchmark")
    parser.add_argument("--sweep", default=str(ROOT / "benchmarks" / "configs" / "ml-100k-5seeds.yaml"))
    parser.add_argument("--report_only", default="False", choices=["True", "False"])
    parser.add_argument("--report", default=None,
                        help="the report's path (default: the sweep's `report`, else its results CSV with .md)")
    parser.add_argument("--variants", default=None, help="comma separated: run only these variants now, in this order")
    parser.add_argument("--seeds", default=None, help="comma separated: run only these seeds now (e.g. one per process)")
    parser.add_argument("--models", default=None, help="comma separated: run only these models now")
    args, overrides = parser.parse_known_args(argv)
    sweep = load_sweep(args.sweep)
    if args.report_only == "False":
        only = _part_of(sweep, "variants", args.variants, str)
        # in the order given, and 'base' (recorded from the Guided runs' base stage) whenever the sweep has it
        variants = only + (["base"] if "base" in sweep["variants"] and "base" not in only else [])
        seeds = _part_of(sweep, "seeds", args.seeds, int)
        models = _part_of(sweep, "models", args.models, str)
        run_sweep({**sweep, "variants": variants, "seeds": seeds, "models": models}, cmd_args=overrides)
    report = Path(args.report) if args.report else report_path(sweep)
    write_report(sweep, args.sweep, report)
    print(f"report written to {report}")
    return 0
