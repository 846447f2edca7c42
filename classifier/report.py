"""Rendering evaluation results: the terminal table, REPORT.md and confusion-matrix PNGs."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping, Sequence

from streams.errors import UnavailableError

from classifier.evaluation import headline

CLASSIFIER_DIR = Path(__file__).resolve().parent
REPORT_PATH = CLASSIFIER_DIR / "REPORT.md"
PNG_PATHS = {
    "category": CLASSIFIER_DIR / "confusion_category.png",
    "severity": CLASSIFIER_DIR / "confusion_severity.png",
}


class PlotUnavailableError(UnavailableError, RuntimeError):
    """matplotlib is not installed, so the confusion-matrix PNGs cannot be drawn."""


def per_class_table(model: Mapping[str, Any], keyword: Mapping[str, Any]) -> str:
    """Markdown table of per-class precision / recall / F1, model beside keyword baseline."""
    kw_rows = {row["label"]: row for row in keyword["per_class"]}
    labels = list(model["labels"]) + [label for label in keyword["labels"] if label not in model["labels"]]
    m_rows = {row["label"]: row for row in model["per_class"]}
    empty = {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    lines = [
        "| class | support | model P | model R | model F1 | keyword P | keyword R | keyword F1 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for label in labels:
        m = m_rows.get(label, empty)
        k = kw_rows.get(label, empty)
        support = max(m["support"], k["support"])
        lines.append(
            f"| {label} | {support} | {m['precision']:.2f} | {m['recall']:.2f} | {m['f1']:.2f} "
            f"| {k['precision']:.2f} | {k['recall']:.2f} | {k['f1']:.2f} |"
        )
    lines.append(
        f"| **macro-F1** | | | | **{model['macro_f1']:.3f}** | | | **{keyword['macro_f1']:.3f}** |"
    )
    return "\n".join(lines)


def summary_table(results: Mapping[str, Any]) -> str:
    """Markdown table of macro-F1 and accuracy for every system and condition."""
    lines = [
        "| condition | system | category macro-F1 | category acc. | severity macro-F1 | severity acc. | fallback rate |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    names = {"model": "model (as shipped, with fallback)", "model_no_fallback": "model alone (no fallback)", "keyword": "keyword baseline"}
    for condition, systems in results.items():
        for system, res in systems.items():
            lines.append(
                f"| {condition} | {names.get(system, system)} | {res['category']['macro_f1']:.3f} | "
                f"{res['category']['accuracy']:.3f} | {res['severity']['macro_f1']:.3f} | "
                f"{res['severity']['accuracy']:.3f} | {res['fallback_rate']:.1%} |"
            )
    return "\n".join(lines)


def terminal_report(results: Mapping[str, Any]) -> str:
    """What `opsloop classifier eval` prints."""
    out = []
    a = results["as_sent"]
    for head in ("category", "severity"):
        out.append(f"\n{head} (held-out services, as sent)")
        out.append(f"{'class':16}{'support':>8}{'model P':>9}{'R':>6}{'F1':>6}{'kw P':>8}{'R':>6}{'F1':>6}")
        kw_rows = {row["label"]: row for row in a["keyword"][head]["per_class"]}
        for row in a["model"][head]["per_class"]:
            k = kw_rows.get(row["label"], {"precision": 0.0, "recall": 0.0, "f1": 0.0})
            out.append(
                f"{row['label']:16}{row['support']:>8}{row['precision']:>9.2f}{row['recall']:>6.2f}{row['f1']:>6.2f}"
                f"{k['precision']:>8.2f}{k['recall']:>6.2f}{k['f1']:>6.2f}"
            )
    out.append("")
    for condition, systems in results.items():
        for system, res in systems.items():
            out.append(
                f"{condition:18} {system:18} category macro-F1 {res['category']['macro_f1']:.3f}   "
                f"severity macro-F1 {res['severity']['macro_f1']:.3f}   fallback {res['fallback_rate']:.1%}"
            )
    return "\n".join(out)


def draw_confusions(results: Mapping[str, Any], paths: Mapping[str, Path] = PNG_PATHS) -> list[Path]:
    """One PNG per head: model and keyword baseline confusion matrices side by side (as sent)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise PlotUnavailableError("install matplotlib to draw the confusion matrices") from exc
    written = []
    a = results["as_sent"]
    for head, path in paths.items():
        panels = [("model (with fallback)", a["model"][head]), ("keyword baseline", a["keyword"][head])]
        size = 5.5 if head == "severity" else 9.5
        fig, axes = plt.subplots(1, 2, figsize=(2 * size, size * 0.9))
        for ax, (title, res) in zip(axes, panels):
            labels = res["labels"]
            matrix = res["confusion"]
            ax.imshow(matrix, cmap="Blues")
            ax.set_xticks(range(len(labels)), labels, rotation=60, ha="right", fontsize=8)
            ax.set_yticks(range(len(labels)), labels, fontsize=8)
            ax.set_xlabel("predicted")
            ax.set_ylabel("true")
            ax.set_title(f"{head}: {title}\nmacro-F1 {res['macro_f1']:.3f}", fontsize=10)
            peak = max(max(row) for row in matrix) or 1
            for i, row in enumerate(matrix):
                for j, value in enumerate(row):
                    if value:
                        ax.text(j, i, str(value), ha="center", va="center", fontsize=7,
                                color="white" if value > peak / 2 else "black")
        fig.tight_layout()
        fig.savefig(path, dpi=80, metadata={"Software": None})
        plt.close(fig)
        written.append(Path(path))
    return written


CONDITION_NAMES = {"as_sent": "as sent", "no_severity_label": "no labels.severity"}


def threshold_section(meta: Mapping[str, Any]) -> list[str]:
    """How the fallback thresholds were chosen, with the cross-validation numbers stored in the artifact."""
    sel = meta.get("threshold_selection") or {}
    if not sel:
        return []
    conditions = sel["conditions"]
    lines = [
        "## Fallback thresholds: how they were chosen",
        "",
        f"On the {sel['n_train_events']} training events ({sel['n_train_services']} services) only: "
        f"{sel['folds']}-fold cross-validation grouped by service gives every training event an out-of-fold "
        "prediction from a model that never saw its service. Each condition is scored as in the held-out "
        "evaluation (as sent; and with labels.severity removed). For every threshold t of the grid "
        f"({sel['grid'][0]:.2f} to {sel['grid'][-1]:.2f} in steps of 0.05) the head answers with the model when its "
        "top probability is at least t and with the keyword rules otherwise; the chosen t maximises macro-F1 "
        "(the metric the issue scores) averaged over the two conditions, the lowest t on a tie. One threshold "
        "serves events with and without the label, hence the average. The test services play no part.",
        "",
        "Out-of-fold macro-F1 on the training services at the chosen thresholds:",
        "",
        "| head | threshold | condition | model as shipped | model alone | keyword rules | fallback rate |",
        "|---|---:|---|---:|---:|---:|---:|",
    ]
    for head in ("category", "severity"):
        rec = sel[head]
        for c in conditions:
            cv = rec["cv"][c]
            lines.append(
                f"| {head} | {rec['threshold']:.2f} | {CONDITION_NAMES.get(c, c)} | {cv['model']:.3f} | "
                f"{cv['model_alone']:.3f} | {cv['keyword']:.3f} | {cv['fallback_rate']:.1%} |"
            )
    lines += [
        "",
        "Out-of-fold macro-F1 against the threshold (model if p ≥ t, else rules; t = 0 is the model alone):",
        "",
        "| head, condition | " + " | ".join(f"{t:.2f}" for t in sel["grid"]) + " |",
        "|---|" + "---:|" * len(sel["grid"]),
    ]
    for head in ("category", "severity"):
        for c in conditions:
            lines.append(f"| {head}, {CONDITION_NAMES.get(c, c)} | " + " | ".join(f"{v:.3f}" for v in sel[head]["curve"][c]) + " |")
    lines += ["", *SELECTION_NOTES, ""]
    return lines


SELECTION_NOTES = [
    "* Before this procedure the thresholds (category 0.35, severity 0.55) maximised *accuracy* on a pooled "
    "condition in which a fixed half of the alerts had lost labels.severity. Macro-F1 on that same pooled "
    "condition picks the same pair; the change of objective to the mean of the two conditions the report "
    "scores moved the severity threshold to 0.65. The category threshold is 0.35 under every variant.",
    "* Other choices checked by the same cross-validation and left alone: the severity head with "
    "`class_weight=\"balanced\"` (for the rare `action` class) and its own C in 3, 10, 30, 100, 300. Each variant, "
    "with its own best threshold, lands within 0.004 of the kept one (unweighted, C = 10) on the mean objective "
    "(the best, balanced with C = 30, is ahead by 0.002), inside the noise of a few dozen `action` events, so the "
    "simpler model stays. Letting the rules win "
    "whenever their fixed tier confidence exceeds the model's probability (no threshold at all) was no better "
    "either (severity 0.960 as sent, 0.780 without the label).",
    "* What the cross-validation says plainly: with labels.severity present the keyword rules are *ahead* of the "
    "model on the training services (0.970 against at best 0.965 at any threshold): the rules copy the stated "
    "severity, which is the labelling rule for alerts, while the model sometimes lets the alert's words "
    "outvote the stated label (most often `info`). The model's severity head earns its keep when the label is missing.",
]


def render_report(
    results: Mapping[str, Any],
    meta: Mapping[str, Any],
    model_version: str,
    test_counts: Mapping[str, int],
    bench: Mapping[str, Any] | None = None,
) -> str:
    """REPORT.md, generated by `opsloop classifier eval` from the numbers it just computed."""
    h = headline(results)
    a = results["as_sent"]
    b = results["no_severity_label"]

    def verdict(model: float, keyword: float) -> str:
        if model > keyword:
            return f"model ahead by {model - keyword:+.3f}"
        if model == keyword:
            return "tie"
        return f"**model behind by {model - keyword:+.3f}**"

    services: Sequence[str] = meta.get("test_services", [])
    lines = [
        "# Incident classifier: evaluation report",
        "",
        "Generated by `opsloop classifier eval` (`python -m classifier.cli eval`); do not edit by hand.",
        f"Model `{model_version}`, scikit-learn {meta.get('sklearn_version')}, training data sha256 "
        f"`{str(meta.get('training_data_sha256', ''))[:16]}…`.",
        "",
        "## Headline: held-out services, events as sent",
        "",
        "| head | model macro-F1 | keyword baseline macro-F1 | |",
        "|---|---:|---:|---|",
        f"| category | **{h['category_macro_f1_model']:.3f}** | {h['category_macro_f1_keyword']:.3f} | "
        f"{verdict(h['category_macro_f1_model'], h['category_macro_f1_keyword'])} |",
        f"| severity | **{h['severity_macro_f1_model']:.3f}** | {h['severity_macro_f1_keyword']:.3f} | "
        f"{verdict(h['severity_macro_f1_model'], h['severity_macro_f1_keyword'])} |",
        "",
        f"Events one system gets right and the other wrong: category {a['model']['only_right']['category']} "
        f"(model only) vs {a['keyword']['only_right']['category']} (keyword only); severity "
        f"{a['model']['only_right']['severity']} vs {a['keyword']['only_right']['severity']}.",
        "",
        "Without `labels.severity` (same events, label removed): severity macro-F1 "
        f"{b['model']['severity']['macro_f1']:.3f} (model) vs {b['keyword']['severity']['macro_f1']:.3f} (keyword); "
        f"category {b['model']['category']['macro_f1']:.3f} vs {b['keyword']['category']['macro_f1']:.3f}.",
        "",
        "\"Model\" is the classifier as shipped: the learned model, with each head falling back to the keyword "
        f"rules below its threshold (category {meta['thresholds']['category']:.2f}, severity "
        f"{meta['thresholds']['severity']:.2f}; chosen to maximise macro-F1 by cross-validation grouped by service on "
        "the training services only, see [Fallback thresholds](#fallback-thresholds-how-they-were-chosen)). "
        "The model alone, without fallback, is listed too.",
        "",
        "## What was measured",
        "",
        f"* Corpus: the {meta.get('n_train', 0) + meta.get('n_test', 0)} labelled events built from "
        "[awesome-prometheus-alerts](https://github.com/samber/awesome-prometheus-alerts) "
        "(\"Awesome Prometheus alerts\" by Samuel Berthe and contributors, CC BY 4.0; 1,155 rules rendered as "
        "Alertmanager events, 15% of them also as a resolved notification) plus the hand-labelled scans, "
        "webhooks and pull requests in `classifier/data/examples.yaml`. Labels come from the rules in "
        "[LABELLING.md](LABELLING.md).",
        f"* Split by service: {meta.get('n_train')} training events, {meta.get('n_test')} test events "
        f"({test_counts.get('rule', 0)} alerts, {test_counts.get('example', 0)} other events) from "
        f"{len(services)} services the model never saw, about a quarter of every group, picked by a salted "
        "hash (`classifier/corpus.py`), not by score:",
        "  " + ", ".join(f"`{s}`" for s in services) + ".",
        "* Macro-F1: unweighted mean of per-class F1 over the classes present in the held-out truth.",
        "* Both systems see exactly the same events.",
        "",
        "## All systems and conditions",
        "",
        summary_table(results),
        "",
        "## Per class, category (as sent)",
        "",
        per_class_table(a["model"]["category"], a["keyword"]["category"]),
        "",
        "![category confusion matrices](confusion_category.png)",
        "",
        "## Per class, severity (as sent)",
        "",
        per_class_table(a["model"]["severity"], a["keyword"]["severity"]),
        "",
        "![severity confusion matrices](confusion_severity.png)",
        "",
        "## Per class, severity without labels.severity",
        "",
        per_class_table(b["model"]["severity"], b["keyword"]["severity"]),
        "",
        *threshold_section(meta),
        "## Choices, and how far to trust these numbers",
        "",
        "* **labels.severity is a feature.** Real alerts nearly always carry it and the rule author's severity is "
        "the ground truth, so with the label present severity is close to a lookup for *both* systems and the "
        "as-sent severity comparison is decided by the few events without a usable label (resolved "
        "notifications, scans, webhooks, pull requests). To keep the model useful when a sender omits the "
        "label, half of the training alerts have it removed, and the no-label condition above measures that.",
        "* **Labels are rules, not human judgement.** Categories of catalogue alerts come from keyword rules on "
        "the rule name plus the service's group (LABELLING.md). The keyword baseline shares some of that "
        "vocabulary, so it is a strong baseline here; on a corpus labelled by people both will score lower.",
        "* **Small classes.** Several classes have fewer than 15 held-out events (see support columns); their "
        "F1 moves by 0.1 or more with one event. `message_broker` is weak for both systems: the held-out "
        "broker service uses words (ledger, bookie, backlog) that no training broker uses.",
        "* **Non-alert events are few and hand-written** (about 170, by the same author as the labelling rules).",
        "* **How often the test split was looked at.** Four times, each after a change decided without it: "
        "(1) once the design had been fixed by 5-fold cross-validation grouped by service on the training "
        "services (category 0.804, severity 0.911 for the model as shipped); (2) after one more change chosen by "
        "that cross-validation: one shared `sev:` token for a severity stated by any sender (alert label, worst "
        "scan finding, webhook urgency) and a marker for closing events (0.804, 0.910); (3) after a tokenizer bug "
        "found by a unit test was fixed (`Http5xxErrorRate` had become one word) (0.802, 0.910); (4) after the "
        "fallback thresholds were re-selected by the macro-F1 procedure above, the fitted model unchanged (0.802, "
        "0.915; without labels.severity 0.798 and 0.790, against 0.793 for severity before). Nothing was tuned on "
        "test scores. The severity lead over the rules after (4), +0.003, is one or two events and within noise; "
        "on this split the model alone (0.924) is still ahead of the model with fallback, the opposite of what "
        "cross-validation on the training services shows, and the thresholds were not moved towards it.",
        "* **Generalising beyond this catalogue.** No keyword rule or feature of the classifier names a service "
        "of the dataset (only the labelling rules do, as a human labeller would). Training "
        "repeats every event with its service identity masked (service and job words, full metric names, metric "
        "namespaces, label values), so the model must also learn from generic words; the split measures exactly "
        "that, on services it never saw. Expect lower scores on alerts written in a different house style.",
        "",
        "## Speed",
        "",
    ]
    if bench:
        lines += [
            f"`python -m classifier.bench` on this machine ({bench.get('cpus', '?')} cores, 1-minute load average "
            f"{bench.get('load_average_1m', '?')} from other work on the machine), {bench.get('events', '?')} events "
            f"rendered from the catalogue, batch size {bench.get('batch_size', '?')}, one process, best of "
            f"{bench.get('repeats', 1)} runs (median in brackets):",
            "",
            "| path | events/s |",
            "|---|---:|",
            f"| model, one event per call | {bench['single_per_s']:,.0f} |",
            f"| model, batched (features included; rules seen before, alerts new) | {bench['batched_per_s']:,.0f} "
            f"({bench.get('batched_median_per_s', 0):,.0f}) |",
            f"| model, batched, cold memo caches | {bench.get('batched_cold_per_s', 0):,.0f} |",
            f"| keyword baseline, batched | {bench['keyword_batched_per_s']:,.0f} "
            f"({bench.get('keyword_batched_median_per_s', 0):,.0f}) |",
            "",
        ]
    else:
        lines += ["Run `python -m classifier.bench` for figures on your machine.", ""]
    lines += [
        "## Reproduce",
        "",
        "```",
        "python -m classifier.cli train   # writes classifier/model/opsloop-classifier.pkl (+ .json)",
        "python -m classifier.cli eval    # prints the tables, rewrites this report and the PNGs",
        "python -m classifier.bench       # single-event and batched predictions per second",
        "```",
        "",
    ]
    return "\n".join(lines)
