"""`opsloop classifier train|eval`: the command-line face of the classifier.

The top-level `opsloop` script dispatches `opsloop classifier ...` to ``main(argv)``;
until then run ``python -m classifier.cli train``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from classifier.corpus import samples_sha256
from classifier.crosssource import leave_one_source_out, threshold_pairs
from classifier.dataset import DatasetNotFoundError
from classifier.evaluation import compact_metrics, evaluate, headline
from classifier.examples import ExampleFormatError
from classifier.model import (
    DEFAULT_MODEL_PATH,
    ModelArtifactError,
    ModelClassifier,
    ModelNotFoundError,
    ModelVersionError,
    load_classifier,
)
from classifier.report import (
    PNG_PATHS,
    RELIABILITY_PNG,
    REPORT_PATH,
    PlotUnavailableError,
    draw_confusions,
    draw_reliability,
    loso_table,
    render_report,
    terminal_report,
)
from classifier.training import load_corpus_split, train_model, with_metrics, write_artifact

BENCH_RESULTS_PATH = Path(__file__).resolve().parent / "bench_results.json"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="opsloop classifier", description="Train and evaluate the incident classifier."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="fit the model on the training services and write the artifact")
    evaluate_ = sub.add_parser("eval", help="score model and keyword baseline on the held-out services")
    for p in (train, evaluate_):
        p.add_argument(
            "--rules",
            help="awesome-prometheus-alerts rules.yml (default: the vendored classifier/data/sources/awesome-prometheus-alerts/rules.yml)",
        )
        p.add_argument("--examples", help="hand-labelled examples YAML (default: classifier/data/examples.yaml)")
        p.add_argument("--model", default=str(DEFAULT_MODEL_PATH), help="artifact path (default: %(default)s)")
    evaluate_.add_argument("--no-report", action="store_true", help="print only; do not rewrite REPORT.md and the PNGs")
    evaluate_.add_argument(
        "--no-loso",
        action="store_true",
        help="skip the leave-one-source-out evaluation (minutes on the whole catalogue: every fold selects its own policy)",
    )
    return parser


def _train(args: argparse.Namespace) -> int:
    run = train_model(args.rules, args.examples)
    results = evaluate(run.classifier, run.test)
    run = with_metrics(run, compact_metrics(results))
    artifact, sidecar = write_artifact(run, args.model)
    h = headline(results)
    print(
        f"trained {run.classifier.version} on {len(run.train)} events; held out {len(run.test)} events "
        f"from {len(run.meta['test_services'])} unseen services"
    )
    d = run.meta.get("decision") or {}
    print(
        f"calibration {run.meta.get('calibration')}; severity: min. confidence {d.get('severity_min_confidence')}, "
        f"below it {d.get('severity_fallback')}, false-page cost {d.get('false_page_cost')}; "
        f"category fallback {d.get('category_fallback')} below {run.meta['thresholds']['category']:.2f}"
    )
    print(
        f"held-out category macro-F1 {h['category_macro_f1_model']:.3f} (keyword {h['category_macro_f1_keyword']:.3f})"
    )
    print(
        f"held-out severity macro-F1 {h['severity_macro_f1_model']:.3f} (keyword {h['severity_macro_f1_keyword']:.3f})"
    )
    print(f"wrote {artifact} ({artifact.stat().st_size:,} bytes) and {sidecar}")
    return 0


def _eval(args: argparse.Namespace) -> int:
    classifier = load_classifier(args.model)
    if not isinstance(classifier, ModelClassifier):  # pragma: no cover - load_classifier(path) never degrades
        print("no model artifact; run `opsloop classifier train` first", file=sys.stderr)
        return 2
    train, test, _ = load_corpus_split(args.rules, args.examples)
    if samples_sha256(train) != classifier.meta.get("training_data_sha256"):
        print(
            "warning: the training data changed since this model was trained; "
            "run `opsloop classifier train` before trusting these numbers",
            file=sys.stderr,
        )
    results = evaluate(classifier, test)
    print(
        f"model {classifier.version} vs keyword baseline on {len(test)} events from "
        f"{len({s.service for s in test})} held-out services (second view)"
    )
    print(terminal_report(results))
    if args.no_loso:
        loso = pairs = None
    else:
        print("\nleave-one-source-out (nested: each fold selects its own calibration and policy) ...", flush=True)
        loso = leave_one_source_out(train + test)
        pairs = threshold_pairs(loso["folds"])
        print(loso_table(loso["summary"]))
    if args.no_report:
        return 0
    try:
        pngs = draw_confusions(results, PNG_PATHS)
        if loso is not None:
            pngs.append(draw_reliability(loso["summary"], RELIABILITY_PNG))
    except PlotUnavailableError as exc:
        print(f"warning: {exc}; PNGs not written", file=sys.stderr)
        pngs = []
    bench = json.loads(BENCH_RESULTS_PATH.read_text()) if BENCH_RESULTS_PATH.is_file() else None
    counts = Counter(s.origin for s in test)
    REPORT_PATH.write_text(render_report(results, classifier.meta, classifier.version, counts, bench, loso, pairs))
    print(f"\nwrote {REPORT_PATH}" + "".join(f", {p}" for p in pngs))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run a classifier subcommand; returns the process exit code."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "train":
            return _train(args)
        return _eval(args)
    except (ModelVersionError, ModelArtifactError, ModelNotFoundError, DatasetNotFoundError, ExampleFormatError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
