"""Event -> bag of prefixed tokens: the classifier's whole view of an event.

Everything here is a pure function of the event dict (no I/O, no clock, no global
state besides memoised word stems), so the same event always yields the same tokens
and replay reproduces the same verdicts. Tokens carry a short prefix naming where they
came from (``n:`` alert-name word, ``w:`` any word, ``m:`` metric name, ...) so the
model can weigh "memory" in an alert name differently from "memory" in a long
description, while the shared ``w:`` bag lets evidence from names, descriptions, metric
names and webhook bodies reinforce each other on unseen services.

The hot path is plain ``re`` and string work: the token lists feed a FeatureHasher,
so there is no vocabulary to load and nothing to fit here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import wraps
from typing import Any, Protocol, TypeGuard, TypeVar, cast
from urllib.parse import unquote_plus

from sklearn.base import BaseEstimator, TransformerMixin

from classifier.vocabulary import CATEGORY_WORDS, DEGRADE_WORDS, IMPACT_WORDS, INFO_WORDS, URGENT_WORDS, WARNING_WORDS
from streams.model.taxonomy import normalize_severity

T = TypeVar("T")
_R = TypeVar("_R", covariant=True)


class Memoized(Protocol[_R]):
    """A function wrapped by :func:`memoize`: callable as before, plus ``cache_clear()``."""

    def __call__(self, *args: Any, **kwargs: Any) -> _R: ...

    def cache_clear(self) -> None: ...


# Longest text read from one field; descriptions past this add little and cost time.
MAX_TEXT_CHARS = 400
# Bounds on walking a webhook body: large GitHub payloads must not stall a batch.
MAX_BODY_CHARS = 65_536
MAX_BODY_NODES = 250
MAX_FINDINGS = 20
SEVERITY_LABEL_REPEAT = 3

_WORD = re.compile(r"[A-Z]{2,}s(?![a-z])|[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+(?:[a-z]+|[A-Z]+(?![a-z]))")
_STOPWORDS = frozenset(
    "a an and are as at be been by for from has have in into is it its of on or "
    "than that the their then there this to was were will with".split()
)
# Labels whose values are identities (hosts, pods, ids), not descriptions.
_NOISY_LABELS = frozenset(
    {
        "instance",
        "pod",
        "pod_name",
        "container_id",
        "id",
        "uid",
        "fingerprint",
        "ip",
        "address",
        "node",
        "hostname",
        "host",
        "endpoint",
        "url",
        "image_id",
        "le",
        "quantile",
    }
)
_PROMQL_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_PROMQL_MATCHERS = re.compile(r"\{([^}]*)\}")
_PROMQL_RANGES = re.compile(r"\[[^\]]*\]")
_PROMQL_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", re.I)
_PROMQL_IDENT = re.compile(r"(?<![\w.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")
_PROMQL_KEYWORDS = frozenset(
    {
        "and",
        "or",
        "unless",
        "bool",
        "offset",
        "by",
        "without",
        "on",
        "ignoring",
        "group_left",
        "group_right",
        "inf",
        "nan",
    }
)
_MATCHER_VALUE = re.compile(r"=~?\s*\"([^\"]*)\"|=~?\s*'([^']*)'")

# Keys of webhook bodies whose values name the event (treated like an alert name).
_TITLE_KEYS = frozenset({"title", "summary", "message", "display_title", "alertname", "subject", "name_display"})
# Keys whose values describe it at length.
_TEXT_KEYS = frozenset(
    {"body", "description", "detail", "details", "output", "text", "reason", "note", "comment", "summary_text"}
)
_SEVERITY_KEYS = frozenset({"severity", "priority", "urgency", "level", "security_severity_level"})
# Alert labels other than ``severity`` that some houses state the severity in.
_SEVERITY_LABEL_KEYS = frozenset({"priority", "urgency", "level", "sev", "severity_level"})
# PagerDuty-style urgencies have only two levels; "high" there means page now.
_URGENCY = {"high": "urgent", "low": "warning"}
# Scanner finding levels onto ours (the worst finding speaks for the scan).
_FINDING_LEVELS = {
    "critical": "urgent",
    "high": "action",
    "medium": "warning",
    "moderate": "warning",
    "low": "info",
    "info": "info",
}
# Event actions / statuses that close or merely update something already known.
_CLOSING = frozenset({"resolved", "acknowledged", "closed", "fixed", "merged", "success", "succeeded", "ok", "clean"})


def _is_mapping(value: Any) -> TypeGuard[Mapping[Any, Any]]:
    """isinstance(value, Mapping), with the common plain-dict case first (ABC checks are slow)."""
    return type(value) is dict or isinstance(value, Mapping)


def memoize(limit: int) -> Callable[[Callable[..., T]], Memoized[T]]:
    """Memoise a pure function in a plain dict that stops growing at ``limit`` entries.

    Not functools.lru_cache: its bookkeeping allocates a tracked list per entry, and a
    worker classifying endless new alerts then spends a noticeable share of its time in
    the garbage collector walking tens of thousands of them. A dict of tuples of
    strings costs the collector nothing. Once full it starts over, so it holds the
    arguments seen lately: a memo that stopped storing when full kept a storm's one-off
    alerts for good and classified everything after it uncached (+40 % CPU per event for
    the decide agent after a 100,000-alert storm). Results never depend on the memo.
    """

    def decorate(fn: Callable[..., T]) -> Memoized[T]:
        cache: dict[Any, T] = {}
        missing = object()

        @wraps(fn)
        def wrapper(*args: Any) -> T:
            key = args if len(args) != 1 else args[0]
            value = cache.get(key, missing)
            if value is missing:
                value = fn(*args)
                if len(cache) >= limit:
                    cache.clear()
                cache[key] = value
            return value  # type: ignore[return-value]

        wrapper.cache_clear = cache.clear  # type: ignore[attr-defined]
        return cast(Memoized[T], wrapper)

    return decorate


def stem(word: str) -> str:
    """Fold common English inflections (failures/failed/failing -> fail) so rare forms share evidence.

    Deliberately crude: it only has to map variants of one word together, not produce
    dictionary forms, and it must be fast and stable forever (model artifacts depend on it).
    """
    w = word
    if len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    for suffix in ("ures", "ure", "ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            return w[: -len(suffix)]
    if w.endswith(("sses", "xes", "ches", "shes")):
        return w[:-2]
    if w.endswith("s") and not w.endswith(("ss", "is", "ous", "tus", "bus")):
        return w[:-1]
    return w


def normalize_word(raw: str) -> str:
    """One raw regex match -> its feature word, or "" when it carries no signal."""
    w = raw.lower()
    if len(w) < 2 or w in _STOPWORDS:
        return ""
    return stem(w)


def _family_tokens() -> dict[str, tuple[str, ...]]:
    """n:/w: word token -> the keyword-family tokens it signals (kn:/kw: category, ks: severity)."""
    table: dict[str, list[str]] = {}
    families = [(c, ws) for c, ws in CATEGORY_WORDS]
    families += [("sev_urgent", URGENT_WORDS), ("sev_warning", WARNING_WORDS), ("sev_info", INFO_WORDS)]
    families += [("sev_impact", IMPACT_WORDS), ("sev_degrade", DEGRADE_WORDS)]
    for family, raw_words in families:
        for raw in raw_words:
            w = normalize_word(raw)
            if not w:
                continue
            for src, dst in (("n:", "kn:"), ("w:", "kw:")):
                extra = table.setdefault(src + w, [])
                if dst + family not in extra:
                    extra.append(dst + family)
    return {tok: tuple(extra) for tok, extra in table.items()}


_FAMILY_TOKENS = _family_tokens()


def with_families(tokens: list[str]) -> tuple[str, ...]:
    """tokens plus the keyword-family tokens their n:/w: words signal."""
    table = _FAMILY_TOKENS
    return (*tokens, *(x for tok in tokens if tok in table for x in table[tok]))


# Memo of raw regex match -> its w: token plus family tokens (or ()). Pure, so it cannot
# change results; bounded so a worker fed endless novel words does not grow forever.
_W_CACHE: dict[str, tuple[str, ...]] = {}
_CACHE_LIMIT = 200_000


def _w_tokens(raw: str) -> tuple[str, ...]:
    toks = _W_CACHE.get(raw)
    if toks is None:
        w = normalize_word(raw)
        toks = with_families(["w:" + w]) if w else ()
        if len(_W_CACHE) < _CACHE_LIMIT:
            _W_CACHE[raw] = toks
    return toks


# Two-word terms whose second word alone would say something else, each read as one word
# with a family of its own: an error budget or a disruption budget is not money
# (KubeAPIErrorBudgetBurn, PodDisruptionBudget, an SLO's "burning error budget"); "not
# ready" and "no leader" are the negation of a healthy word (KubeNodeNotReady, etcdNoLeader).
# A negation starts a word: at the text's start or after a non-letter, or CamelCase after a
# lower-case letter ("cannot ready" is not one).
_COMPOUND = re.compile(
    r"(?i:(error|disruption)[\s_-]?(budget))|(?:(?<![A-Za-z])|(?<=[a-z0-9])(?=[A-Z]))(?i:(not|no)[\s_-]?(ready|leader))"
)


def _joined(m: re.Match[str]) -> str:
    first, second = (m.group(1), m.group(2)) if m.group(1) else (m.group(3), m.group(4))
    return first + second.lower()


def compounds_joined(text: str) -> str:
    """``text`` with each two-word term of ``_COMPOUND`` written as one word (ErrorBudget -> Errorbudget)."""
    lowered = text.lower()
    if "udget" not in lowered and "eady" not in lowered and "eader" not in lowered:
        return text
    return _COMPOUND.sub(_joined, text)


def words(text: str, limit: int = MAX_TEXT_CHARS) -> list[str]:
    """Lower-cased, stemmed words of free text or identifiers (CamelCase and snake_case split)."""
    out = []
    for raw in _WORD.findall(compounds_joined(text[:limit])):
        w = normalize_word(raw)
        if w:
            out.append(w)
    return out


# --- Urgency: thresholds and horizons -------------------------------------------------
# Warning / critical pairs of one rule often differ only in a number: the horizon of a
# predict_linear, a range window, a threshold, "in 7 days" against "in 1 day". These
# tokens put such numbers on coarse, shared scales so one learned weight carries over
# from one rule (and one project) to another.

_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_DURATION_BUCKETS = (
    (60, "1m"),
    (300, "5m"),
    (900, "15m"),
    (3600, "1h"),
    (6 * 3600, "6h"),
    (86400, "1d"),
    (3 * 86400, "3d"),
    (7 * 86400, "7d"),
    (30 * 86400, "30d"),
)
_NUMBER_BUCKETS = ((0.01, "<.01"), (0.05, "<.05"), (0.1, "<.1"), (0.25, "<.25"), (0.5, "<.5"), (1.0, "<1"))
_LARGE_BUCKETS = (
    (5, "<=5"),
    (10, "<=10"),
    (20, "<=20"),
    (50, "<=50"),
    (80, "<=80"),
    (90, "<=90"),
    (95, "<=95"),
    (99, "<=99"),
    (100, "<=100"),
    (1000, "<=1e3"),
)
_RANGE = re.compile(r"\[\s*((?:\d+[smhdwy])+)\s*(?::[^\]]*)?\]")
_DURATION_PART = re.compile(r"(\d+)([smhdwy])")
_COMPARISON = re.compile(r"(>=|<=|==|!=|>|<)\s*(?:bool\s+)?(-?\d+(?:\.\d+)?(?:[eE]-?\d+)?)(?![\w.])")
_BURN = re.compile(r"(\d+(?:\.\d+)?)\s*\*\s*\(?\s*1\s*-")
_ARITH = re.compile(r"^[\d\s.*+()-]+$")
_TEXT_DURATION = re.compile(
    r"(\d+(?:\.\d+)?)\s*(seconds?|secs?|minutes?|mins?|hours?|hrs?|days?|weeks?|months?|[smhdw])\b", re.I
)
_TEXT_PERCENT = re.compile(r"(\d+(?:\.\d+)?)\s*(?:%|percent)")
_TEXT_UNITS = {
    "s": 1,
    "sec": 1,
    "second": 1,
    "m": 60,
    "min": 60,
    "minute": 60,
    "h": 3600,
    "hr": 3600,
    "hour": 3600,
    "d": 86400,
    "day": 86400,
    "w": 604800,
    "week": 604800,
    "month": 2592000,
}


def duration_bucket(seconds: float) -> str:
    """A duration on the shared scale (1m, 5m, 15m, 1h, 6h, 1d, 3d, 7d, 30d, >30d)."""
    for limit, name in _DURATION_BUCKETS:
        if seconds <= limit:
            return name
    return ">30d"


def number_bucket(value: float) -> str:
    """A threshold on a coarse scale; fractions and percentages both land on it."""
    if value < 0:
        return "neg"
    if value == 0:
        return "0"
    if value == 1:
        return "1"
    for limit, name in _NUMBER_BUCKETS:
        if value < limit:
            return name
    for limit, name in _LARGE_BUCKETS:
        if value <= limit:
            return name
    return ">1e3"


def _arith(text: str) -> float | None:
    """Value of a plain arithmetic horizon such as ``3600 * 24 * 5`` (None for anything else)."""
    text = text.strip()
    if not text or len(text) > 60 or not _ARITH.match(text):
        return None
    try:
        value = eval(text, {"__builtins__": {}}, {})  # noqa: S307 - digits, + - * ( ) only, checked above
    except Exception:  # noqa: BLE001 - malformed arithmetic is simply not a horizon
        return None
    return float(value) if isinstance(value, (int, float)) else None


def _predict_linear_horizons(expr: str) -> list[float]:
    """The horizon argument (seconds) of every predict_linear(v[range], horizon) call."""
    out: list[float] = []
    start = 0
    while True:
        i = expr.find("predict_linear", start)
        if i < 0:
            return out
        j = expr.find("(", i)
        if j < 0:
            return out
        depth, comma, k = 0, -1, j
        while k < len(expr):
            ch = expr[k]
            if ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
                if depth == 0:
                    break
            elif ch == "," and depth == 1:
                comma = k
            k += 1
        if comma > 0:
            value = _arith(expr[comma + 1 : k])
            if value is not None and value > 0:
                out.append(value)
        start = k + 1


def _range_seconds(spec: str) -> int:
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART.findall(spec))


def urgency_expr_tokens(expr: str) -> list[str]:
    """hz: predict_linear horizons, rng: smallest / largest range windows, thr: comparisons, burn: factors."""
    out: list[str] = []
    for horizon in _predict_linear_horizons(expr):
        out.append("hz:" + duration_bucket(horizon))
    ranges = [_range_seconds(r) for r in _RANGE.findall(expr)]
    ranges = [r for r in ranges if r > 0]
    if ranges:
        out.append("rngmin:" + duration_bucket(min(ranges)))
        out.append("rngmax:" + duration_bucket(max(ranges)))
    for op, number in _COMPARISON.findall(_PROMQL_STRINGS.sub(" ", expr)):
        try:
            value = float(number)
        except ValueError:
            continue
        out.append(f"thr:{op}{number_bucket(value)}")
    for factor in _BURN.findall(expr):
        out.append("burn:" + number_bucket(float(factor)))
    return out


def urgency_text_tokens(text: str) -> list[str]:
    """tdur: durations ("in 4 hours", "7 days") and tpct: percentages of free text, on the shared scales."""
    out: list[str] = []
    for number, unit in _TEXT_DURATION.findall(text):
        u = unit.lower()
        u = u[:-1] if len(u) > 2 and u.endswith("s") else u
        seconds = _TEXT_UNITS.get(u)
        if seconds is not None:
            out.append("tdur:" + duration_bucket(float(number) * seconds))
    for number in _TEXT_PERCENT.findall(text):
        out.append("tpct:" + number_bucket(float(number)))
    return out


@memoize(32_768)
def text_tokens(text: str, title: bool = False) -> tuple[str, ...]:
    """w: tokens (and n: tokens when the text names the event) of free text, with families.

    Memoised per text: a re-notified alert carries the same summary and description.
    """
    out: list[str] = []
    if title:
        out.extend(with_families(["n:" + w for w in words(text)]))
    cache_get = _W_CACHE.get
    found = _WORD.findall(compounds_joined(text[:MAX_TEXT_CHARS]))
    out.extend([tok for raw in found for tok in (cache_get(raw) or _w_tokens(raw))])
    if any(ch.isdigit() for ch in text[:MAX_TEXT_CHARS]):
        out.extend(urgency_text_tokens(text[:MAX_TEXT_CHARS]))
    return tuple(out)


@memoize(16_384)
def name_tokens(name: str) -> tuple[str, ...]:
    """Tokens of an alert name: its words as n:/w: and adjacent pairs as nb:.

    HostOutOfMemory -> n:host n:out n:memory ...; names repeat constantly in real
    traffic, hence the memo.
    """
    ws = words(name, limit=200)
    toks = [p + w for w in ws for p in ("n:", "w:")]
    toks.extend("nb:" + a + "_" + b for a, b in zip(ws, ws[1:]))
    return with_families(toks)


def name_words(name: str) -> list[str]:
    """Words of an alert name: HostOutOfMemory -> host, out, memory; KubeAPIErrorBudgetBurn -> kube, api, errorbudget, burn."""
    return words(name, limit=200)


def promql_parts(expr: str) -> tuple[list[str], list[str], list[str]]:
    """Metric names, function names and label-matcher values used by a PromQL expression.

    A regex pass rather than a parser: it must never raise on odd or truncated queries,
    and only needs the vocabulary, not the semantics.
    """
    text = expr[:2000]
    matcher_values: list[str] = []
    for block in _PROMQL_MATCHERS.findall(text):
        for dq, sq in _MATCHER_VALUE.findall(block):
            matcher_values.append(dq or sq)
    text = _PROMQL_MATCHERS.sub(" ", _PROMQL_STRINGS.sub(" ", text))
    text = _PROMQL_GROUPING.sub(" ", _PROMQL_RANGES.sub(" ", text))
    metrics: list[str] = []
    functions: list[str] = []
    for ident, call in _PROMQL_IDENT.findall(text):
        low = ident.lower()
        if call:
            functions.append(low)
        elif len(low) >= 2 and low not in _PROMQL_KEYWORDS:
            metrics.append(low)
    return metrics, functions, matcher_values


@memoize(16_384)
def expr_from_generator_url(url: str) -> str:
    """The g0.expr query carried by a Prometheus generator URL ("" when there is none)."""
    start = url.find("g0.expr=")
    if start < 0:
        return ""
    start += len("g0.expr=")
    end = url.find("&", start)
    return unquote_plus(url[start:] if end < 0 else url[start:end])


@memoize(16_384)
def expr_tokens(expr: str) -> tuple[str, ...]:
    """Tokens of a PromQL expression: m: metric, mns: its namespace, fn: functions, w: words.

    Memoised: one rule's expression arrives with every firing of that rule.
    """
    out: list[str] = []
    metrics, functions, matcher_values = promql_parts(expr)
    for metric in metrics:
        out.append("m:" + metric)
        parts = words(metric.replace(":", "_"), limit=200)
        if parts:
            out.append("mns:" + parts[0])
        for w in parts:
            out.append("w:" + w)
    for fn in functions:
        out.append("fn:" + fn)
    for value in matcher_values:
        for w in words(value, limit=80):
            out.append("w:" + w)
    out.extend(urgency_expr_tokens(expr[:2000]))
    return with_families(out)


def _text_tokens(text: Any, out: list[str], title: bool = False) -> None:
    if isinstance(text, str) and text:
        out.extend(text_tokens(text, title))


@memoize(16_384)
def label_value_tokens(value: str) -> tuple[str, ...]:
    """lv: tokens of a descriptive label value (job="node-exporter" -> lv:node lv:exporter)."""
    return tuple("lv:" + w for w in words(value, limit=80) if w.isalpha())


def _level_under(key: str, value: str) -> str | None:
    """Our level for a severity word stated under ``key`` (an urgency has PagerDuty's two levels)."""
    if key == "urgency":
        return _URGENCY.get(value.strip().lower())
    return normalize_severity(value)


def _stated_severity(level: str | None, out: list[str]) -> None:
    """sev:<level> for a severity the sender stated, whatever field it came in.

    One token for every source (alert label, worst scan finding, webhook urgency), so
    what is learned from a thousand alerts carries over to scans and webhooks; repeated
    so that, after log-scaling, the sender's word outweighs the words of the text.
    """
    if level:
        out.extend(("sev:" + level,) * SEVERITY_LABEL_REPEAT)


def _closing(value: Any, out: list[str]) -> None:
    """A strong marker for events that close or acknowledge something (their severity is info)."""
    if isinstance(value, str) and value.lower() in _CLOSING:
        out.extend(("closing:1",) * SEVERITY_LABEL_REPEAT)


@memoize(65_536)
def label_tokens(key: str, value: Any) -> tuple[str, ...]:
    """Tokens of one label pair; memoised because label pairs repeat in nearly every alert."""
    out: list[str] = []
    key_l = key.lower()
    if key_l == "alertname":
        if isinstance(value, str):
            out.extend(name_tokens(value))
    elif key_l == "severity":
        if isinstance(value, str):
            out.append("sevraw:" + value.strip().lower()[:20])
            _stated_severity(normalize_severity(value), out)
    elif key_l == "__name__":
        if isinstance(value, str):
            out.extend(expr_tokens(value))
    else:
        out.append("lk:" + key_l[:40])
        if key_l not in _NOISY_LABELS and isinstance(value, str):
            out.extend(label_value_tokens(value))
            if key_l in _SEVERITY_LABEL_KEYS:
                # another house style's severity label (priority="P1", urgency="high"): stated all the same
                _stated_severity(_level_under(key_l, value), out)
    return tuple(out)


# Label keys whose values are identities: only the key is a feature, so the memo above
# is not filled with one entry per host.
_IDENTITY_KEY_TOKENS: dict[str, tuple[str, ...]] = {}


def _label_tokens(labels: Mapping[str, Any], out: list[str]) -> None:
    identity_keys = _IDENTITY_KEY_TOKENS
    for key, value in labels.items():
        if not isinstance(key, str):
            continue
        toks = identity_keys.get(key)
        if toks is None:
            key_l = key.lower()
            if key_l in _NOISY_LABELS:
                toks = ("lk:" + key_l[:40],)
                if len(identity_keys) < 1024:
                    identity_keys[key] = toks
            else:
                try:
                    toks = label_tokens(key, value)
                except TypeError:  # unhashable value (a list or dict in a label): no value tokens
                    toks = label_tokens(key, None)
        out.extend(toks)


def _finding_tokens(findings: Any, out: list[str]) -> None:
    if not isinstance(findings, list):
        return
    n = len(findings)
    out.append("nf:" + ("0" if n == 0 else "1" if n == 1 else "2-5" if n <= 5 else "6+"))
    rank = {"info": 0, "low": 1, "medium": 2, "moderate": 2, "high": 3, "critical": 4}
    worst = -1
    worst_name = ""
    for finding in findings[:MAX_FINDINGS]:
        if not _is_mapping(finding):
            continue
        sev = finding.get("severity")
        if isinstance(sev, str):
            sev_l = sev.lower()
            out.append("fsev:" + sev_l)
            if rank.get(sev_l, -1) > worst:
                worst, worst_name = rank[sev_l], sev_l
        change = finding.get("change_type")
        if isinstance(change, str):
            out.append("fchg:" + change.lower())
        rule = finding.get("rule")
        if isinstance(rule, str) and rule:
            prefix = re.split(r"[-_. ]", rule.lower(), maxsplit=1)[0]
            out.append("frule:" + prefix)
        resource = finding.get("resource")
        if isinstance(resource, str):
            out.extend(with_families(["w:" + w for w in words(resource, limit=120)]))
        _text_tokens(finding.get("detail"), out)
    if worst_name:
        out.append("fmax:" + worst_name)
        _stated_severity(_FINDING_LEVELS.get(worst_name), out)


def _walk_body(obj: Any, key: str, out: list[str], budget: list[int], depth: int = 0) -> None:
    """Tokens from a decoded webhook body, bounded in nodes and depth."""
    if budget[0] <= 0 or depth > 6:
        return
    budget[0] -= 1
    if _is_mapping(obj):
        for k, v in obj.items():
            if not isinstance(k, str):
                continue
            k_l = k.lower()
            if depth <= 2:
                out.append("bk:" + k_l[:40])
            _walk_body(v, k_l, out, budget, depth + 1)
    elif isinstance(obj, list):
        for item in obj[:10]:
            _walk_body(item, key, out, budget, depth + 1)
    elif isinstance(obj, str):
        if key in _TITLE_KEYS:
            _text_tokens(obj, out, title=True)
        elif key in _TEXT_KEYS:
            _text_tokens(obj, out)
        elif len(obj) <= 40:
            value = obj.strip().lower()
            out.append("bv:" + key[:30] + "=" + value)
            if key in _SEVERITY_KEYS and depth <= 4:
                _stated_severity(_level_under(key, value), out)
            out.extend(text_tokens(value))
    elif isinstance(obj, bool):
        out.append("bv:" + key[:30] + "=" + ("true" if obj else "false"))
    elif isinstance(obj, (int, float)) and key in _SEVERITY_KEYS:
        out.append("bv:" + key[:30] + "=" + str(obj))


def _payload_tokens(payload: Mapping[str, Any], out: list[str]) -> None:
    url = payload.get("generator_url")
    if isinstance(url, str) and url:
        out.extend(expr_tokens(expr_from_generator_url(url)))
    for key in ("expr", "query"):
        expr = payload.get(key)
        if isinstance(expr, str):
            out.extend(expr_tokens(expr))
    scan_type = payload.get("scan_type")
    if isinstance(scan_type, str):
        out.append("scan:" + scan_type.lower())
        status = payload.get("status")
        if isinstance(status, str):
            out.append("scanstatus:" + status.lower())
            _closing(status, out)
        _finding_tokens(payload.get("findings"), out)
    provider = payload.get("provider")
    if isinstance(provider, str):
        out.append("prov:" + provider.lower())
        action = payload.get("action")
        if isinstance(action, str):
            out.append("act:" + action.lower())
        body = payload.get("body_json")
        if isinstance(body, str) and 0 < len(body) <= MAX_BODY_CHARS:
            try:
                decoded = json.loads(body)
            except ValueError:
                out.append("body:invalid")
            else:
                _walk_body(decoded, "", out, [MAX_BODY_NODES])
    timer = payload.get("timer")
    if isinstance(timer, str):
        out.append("tm:" + timer.lower())
        _text_tokens(payload.get("reason"), out)


@memoize(4096)
def envelope_tokens(kind: Any, etype: Any, source: Any) -> tuple[str, ...]:
    """Tokens of the event's kind, type (and its family and action) and source."""
    out: list[str] = []
    if isinstance(kind, str):
        out.append("k:" + kind)
    if isinstance(etype, str):
        out.append("t:" + etype)
        out.append("tp:" + etype.split(".", 1)[0])
        if "." in etype:
            action = etype.rsplit(".", 1)[1]
            out.append("ta:" + action)
            _closing(action, out)
    if isinstance(source, str):
        out.append("src:" + source)
    return tuple(out)


_TEXT_ANNOTATIONS = frozenset({"summary", "description", "message", "title"})
_ANNOTATION_KEY_TOKENS: dict[str, str] = {}


def event_tokens(event: Mapping[str, Any]) -> list[str]:
    """All feature tokens of one event. Tolerates missing or mistyped fields."""
    kind, etype, source = event.get("kind"), event.get("type"), event.get("source")
    try:
        out = list(envelope_tokens(kind, etype, source))
    except TypeError:  # an unhashable kind / type / source: treat it as absent
        out = list(envelope_tokens(*(v if isinstance(v, str) else None for v in (kind, etype, source))))
    labels = event.get("labels")
    if _is_mapping(labels):
        _label_tokens(labels, out)
    annotations = event.get("annotations")
    if _is_mapping(annotations):
        key_tokens = _ANNOTATION_KEY_TOKENS
        for key, value in annotations.items():
            if isinstance(key, str):
                tok = key_tokens.get(key)
                if tok is None:
                    tok = "ak:" + key.lower()[:40]
                    if len(key_tokens) < 1024:
                        key_tokens[key] = tok
                out.append(tok)
                if key in _TEXT_ANNOTATIONS and isinstance(value, str) and value:
                    out.extend(text_tokens(value))
    payload = event.get("payload")
    if _is_mapping(payload):
        _payload_tokens(payload, out)
    return out


def tokens_batch(events: Iterable[Mapping[str, Any]]) -> list[list[str]]:
    """Tokens of a batch of events, in order (no tokens for something that is not a mapping)."""
    return [event_tokens(e) if _is_mapping(e) else [] for e in events]


class EventTokenizer(TransformerMixin, BaseEstimator):  # type: ignore[misc]  # scikit-learn ships no type information
    """Stateless pipeline step: events (dicts) -> token lists for a FeatureHasher.

    Nothing is learned, so fitting is a no-op and the step pickles to almost nothing.
    """

    def fit(self, X: Sequence[Mapping[str, Any]], y: Any = None) -> EventTokenizer:
        return self

    def transform(self, X: Sequence[Mapping[str, Any]]) -> list[list[str]]:
        return tokens_batch(X)

    def __sklearn_tags__(self):  # type: ignore[no-untyped-def]
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.requires_fit = False
        return tags


def clear_caches() -> None:
    """Empty the memo caches (for cold-start benchmarks and tests); results never depend on them."""
    _W_CACHE.clear()
    _IDENTITY_KEY_TOKENS.clear()
    for fn in (
        name_tokens,
        expr_tokens,
        expr_from_generator_url,
        text_tokens,
        label_value_tokens,
        label_tokens,
        envelope_tokens,
    ):
        fn.cache_clear()
