"""Offline checks of kstash's Grafana dashboard and Prometheus alert rules
(run by deploy/validate). promtool and Grafana are not needed: the checks
are structural.

- metrics.txt lists every metric family a node exports (`<family> <type>`);
  tests/it/t89_metrics.rs keeps it in step with a live node's /metrics.
- Every PromQL expression (alert `expr`, panel target `expr`, template
  variable query) parses as far as brackets, quotes and braces go, and every
  metric it names is a sample name of a listed family (a counter's
  `<family>_total`, a histogram's `_bucket`/`_sum`/`_count`, a gauge's own
  name).
- Rules: `groups:` → `name`, `rules:`; each alert has a CamelCase name
  starting with `Kstash`, used once, `expr`, a `for` duration, a `severity`
  label (critical, warning, info) and `summary` and `description`
  annotations; no unknown keys. The alerts kstash documents are all there.
- Dashboard: JSON, `schemaVersion` >= 36, a `uid` and `title`, a Prometheus
  datasource variable that every panel and target uses, unique panel ids,
  `gridPos` inside the 24-column grid, every non-row panel with targets,
  and a panel on each figure kstash documents.

With --fixtures DIR, each DIR/<case>/ holds one broken rules file
(`*.yaml`) or dashboard (`*.json`) and expect.txt with a piece of the error
it must produce; the case passes when it is rejected with that error.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import yaml

from fixtures import run_fixtures

# The alerts README documents; the real rules file must have each.
REQUIRED_ALERTS = {"KstashNoLeader", "KstashNodeSealed", "KstashKeyTermNearLimit", "KstashAuditFailures"}
SEVERITIES = {"critical", "warning", "info"}
RULE_KEYS = {"alert", "expr", "for", "keep_firing_for", "labels", "annotations"}
DURATION = re.compile(r"^([0-9]+(ms|s|m|h|d|w|y))+$")
ALERT_NAME = re.compile(r"^Kstash[A-Z][A-Za-z0-9]*$")

# Metrics the dashboard must show (the figures of issue 15, point 3).
REQUIRED_PANEL_METRICS = {
    "kstash_raft_has_leader", "kstash_raft_leader_changes_total", "kstash_raft_term",
    "kstash_raft_commit_index", "kstash_raft_applied_index", "kstash_raft_proposals_committed_total",
    "kstash_raft_proposals_failed_total", "kstash_raft_proposals_pending",
    "kstash_raft_apply_duration_seconds_bucket", "kstash_raft_log_flush_duration_seconds_bucket",
    "kstash_operations_total", "kstash_barrier_sealed", "kstash_barrier_key_term",
    "kstash_barrier_key_encryptions", "kstash_barrier_key_encryption_limit", "kstash_access_tokens",
    "kstash_audit_failures_total",
}

# PromQL words that are not metric names: functions, aggregations,
# operators and modifiers.
PROMQL_WORDS = {
    "sum", "min", "max", "avg", "count", "stddev", "stdvar", "topk", "bottomk", "quantile",
    "count_values", "group", "by", "without", "on", "ignoring", "group_left", "group_right",
    "bool", "and", "or", "unless", "offset", "atan2", "inf", "nan",
    "abs", "absent", "absent_over_time", "ceil", "changes", "clamp", "clamp_max", "clamp_min",
    "day_of_month", "day_of_week", "delta", "deriv", "exp", "floor", "histogram_quantile",
    "holt_winters", "hour", "idelta", "increase", "irate", "label_join", "label_replace", "ln",
    "log2", "log10", "minute", "month", "predict_linear", "rate", "resets", "round", "scalar",
    "sort", "sort_desc", "sqrt", "time", "timestamp", "vector", "year", "avg_over_time",
    "min_over_time", "max_over_time", "sum_over_time", "count_over_time", "quantile_over_time",
    "stddev_over_time", "stdvar_over_time", "last_over_time", "present_over_time",
    "label_values",
}
IDENT = re.compile(r"[A-Za-z_:][A-Za-z0-9_:]*")
GRAFANA_VAR = re.compile(r"\$(\{[^}]*\}|[A-Za-z_][A-Za-z0-9_]*)")


def load_metrics(path: Path) -> tuple[dict[str, str], set[str]]:
    """The families of metrics.txt and every sample name they export."""
    families: dict[str, str] = {}
    for n, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 2 or parts[1] not in {"counter", "gauge", "histogram"}:
            raise ValueError(f"{path}:{n}: want `<family> counter|gauge|histogram`, got {line!r}")
        families[parts[0]] = parts[1]
    samples = set()
    for name, kind in families.items():
        if kind == "counter":
            samples |= {f"{name}_total", f"{name}_created"}
        elif kind == "histogram":
            samples |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
        else:
            samples.add(name)
    return families, samples


def strip_strings(expr: str) -> str | None:
    """`expr` with every quoted string emptied; None when a quote is open."""
    out, i = [], 0
    while i < len(expr):
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < len(expr) and expr[j] != c:
                j += 2 if expr[j] == "\\" and c != "`" else 1
            if j >= len(expr):
                return None
            out.append('""')
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def metric_names(expr: str) -> tuple[set[str], list[str]]:
    """The metric names `expr` selects, and what is wrong with its shape."""
    problems = []
    text = strip_strings(GRAFANA_VAR.sub("1", expr))
    if text is None:
        return set(), ["a quoted string is not closed"]
    depth = {"(": 0, "[": 0, "{": 0}
    pairs = {")": "(", "]": "[", "}": "{"}
    for c in text:
        if c in depth:
            depth[c] += 1
        elif c in pairs:
            depth[pairs[c]] -= 1
            if depth[pairs[c]] < 0:
                problems.append(f"unbalanced {c!r}")
                break
    if any(depth.values()) and not problems:
        problems.append("unbalanced brackets")
    # Label matchers, ranges and label lists name labels, not metrics.
    text = re.sub(r"\{[^{}]*\}", " ", text)
    text = re.sub(r"\[[^\[\]]*\]", " ", text)
    text = re.sub(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^()]*\)", r"\1 ", text)
    names = set()
    for m in IDENT.finditer(text):
        word = m.group(0)
        before = text[m.start() - 1] if m.start() > 0 else " "
        if before.isdigit() or before == ".":
            continue  # a number's suffix (1e3, 5m)
        after = text[m.end():].lstrip()
        if word in PROMQL_WORDS or after.startswith("("):
            continue
        names.add(word)
    if not names:
        problems.append("selects no metric")
    return names, problems


def check_expr(where: str, expr, samples: set[str], errors: list[str]) -> set[str]:
    if not isinstance(expr, str) or not expr.strip():
        errors.append(f"{where}: expr is missing or empty")
        return set()
    names, problems = metric_names(expr)
    errors += [f"{where}: expr {expr!r}: {p}" for p in problems]
    for name in sorted(names - samples):
        errors.append(f"{where}: unknown metric {name!r} (not exported by kstash: see deploy/monitoring/metrics.txt)")
    return names


def check_rules(path: Path, samples: set[str], require: bool) -> list[str]:
    errors: list[str] = []
    try:
        doc = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        return [f"{path.name}: not YAML: {e}"]
    if not isinstance(doc, dict) or not isinstance(doc.get("groups"), list) or not doc["groups"]:
        return [f"{path.name}: want a top-level `groups:` list"]
    seen: set[str] = set()
    for g, group in enumerate(doc["groups"]):
        gname = group.get("name") if isinstance(group, dict) else None
        if not isinstance(gname, str) or not gname:
            errors.append(f"{path.name}: group {g} has no name")
        rules = group.get("rules") if isinstance(group, dict) else None
        if not isinstance(rules, list) or not rules:
            errors.append(f"{path.name}: group {gname!r} has no rules")
            continue
        for r, rule in enumerate(rules):
            if not isinstance(rule, dict):
                errors.append(f"{path.name}: group {gname!r} rule {r} is not a mapping")
                continue
            name = rule.get("alert")
            where = f"{path.name}: alert {name or r!r}"
            if "record" in rule:
                errors.append(f"{where}: recording rules are not used here")
                continue
            if not isinstance(name, str) or not ALERT_NAME.match(name):
                errors.append(f"{where}: alert name must be CamelCase and start with Kstash")
            elif name in seen:
                errors.append(f"{where}: defined twice")
            seen.add(name)
            unknown = sorted(set(rule) - RULE_KEYS)
            if unknown:
                errors.append(f"{where}: unknown keys {unknown}")
            check_expr(where, rule.get("expr"), samples, errors)
            duration = rule.get("for")
            if duration is None:
                errors.append(f"{where}: missing `for` (how long the condition must hold)")
            elif not isinstance(duration, str) or not DURATION.match(duration):
                errors.append(f"{where}: `for` {duration!r} is no Prometheus duration (e.g. 5m)")
            severity = (rule.get("labels") or {}).get("severity")
            if severity not in SEVERITIES:
                errors.append(f"{where}: labels.severity {severity!r}, want one of {sorted(SEVERITIES)}")
            notes = rule.get("annotations") or {}
            for key in ("summary", "description"):
                if not isinstance(notes.get(key), str) or not notes[key].strip():
                    errors.append(f"{where}: missing annotations.{key}")
    if require:
        missing = sorted(REQUIRED_ALERTS - seen)
        if missing:
            errors.append(f"{path.name}: missing alerts {missing}")
    return errors


def all_panels(panels) -> list:
    out = []
    for p in panels or []:
        if isinstance(p, dict):
            out.append(p)
            out += all_panels(p.get("panels"))
    return out


def check_dashboard(path: Path, samples: set[str], require: bool) -> list[str]:
    errors: list[str] = []
    try:
        dash = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        return [f"{path.name}: not JSON: {e}"]
    if not isinstance(dash, dict):
        return [f"{path.name}: want a JSON object"]
    schema = dash.get("schemaVersion")
    if not isinstance(schema, int) or schema < 36:
        errors.append(f"{path.name}: schemaVersion {schema!r}, want >= 36")
    for key in ("uid", "title"):
        if not isinstance(dash.get(key), str) or not dash[key]:
            errors.append(f"{path.name}: missing {key}")
    variables = ((dash.get("templating") or {}).get("list")) or []
    ds_vars = {v.get("name") for v in variables if v.get("type") == "datasource" and v.get("query") == "prometheus"}
    if not ds_vars:
        errors.append(f"{path.name}: no Prometheus datasource variable (templating.list type datasource, query prometheus)")
    ds_uids = {f"${{{v}}}" for v in ds_vars} | {f"${v}" for v in ds_vars}
    used: set[str] = set()
    for v in variables:
        if v.get("type") == "query":
            q = v.get("query")
            q = q.get("query") if isinstance(q, dict) else q
            # label_values(<selector>, <label>): the label is no metric.
            m = re.fullmatch(r"\s*label_values\((.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*", q or "")
            q = m.group(1) if m else q
            used |= check_expr(f"{path.name}: variable {v.get('name')!r}", q, samples, errors)
    ids = set()
    panels = all_panels(dash.get("panels"))
    if not panels:
        errors.append(f"{path.name}: no panels")
    for p in panels:
        title = p.get("title")
        where = f"{path.name}: panel {title!r}"
        if not isinstance(title, str) or not title:
            errors.append(f"{path.name}: panel {p.get('id')!r} has no title")
        if not p.get("type"):
            errors.append(f"{where}: no type")
        pid = p.get("id")
        if not isinstance(pid, int) or pid in ids:
            errors.append(f"{where}: id {pid!r} missing or used twice")
        ids.add(pid)
        grid = p.get("gridPos") or {}
        if not all(isinstance(grid.get(k), int) for k in "hwxy"):
            errors.append(f"{where}: gridPos needs integer h, w, x, y")
        elif grid["x"] < 0 or grid["w"] < 1 or grid["x"] + grid["w"] > 24:
            errors.append(f"{where}: gridPos x {grid['x']} + w {grid['w']} leaves the 24-column grid")
        if p.get("type") == "row":
            continue
        targets = p.get("targets")
        if not isinstance(targets, list) or not targets:
            errors.append(f"{where}: no targets")
            continue
        sources = [p.get("datasource")] + [t.get("datasource") for t in targets if isinstance(t, dict)]
        for ds in sources:
            if not isinstance(ds, dict) or ds.get("uid") not in ds_uids:
                errors.append(f"{where}: datasource {ds!r} is not the Prometheus variable {sorted(ds_uids)}")
                break
        refs = [t.get("refId") for t in targets]
        if len(set(refs)) != len(refs) or not all(refs):
            errors.append(f"{where}: every target needs its own refId")
        for t in targets:
            used |= check_expr(f"{where} target {t.get('refId')!r}", t.get("expr"), samples, errors)
    if require:
        missing = sorted(REQUIRED_PANEL_METRICS - used)
        if missing:
            errors.append(f"{path.name}: no panel shows {missing}")
    return errors


def check_dir(directory: Path, samples: set[str], require: bool) -> list[str]:
    dashboards = sorted(directory.glob("*.json"))
    rules = sorted(directory.glob("*.yaml")) + sorted(directory.glob("*.yml"))
    errors = []
    if require and (not dashboards or not rules):
        errors.append(f"{directory}: want a dashboard (*.json) and a rules file (*.yaml)")
    for d in dashboards:
        errors += check_dashboard(d, samples, require)
    for r in rules:
        errors += check_rules(r, samples, require)
    return errors


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--metrics", type=Path, required=True, action="append",
                    help="a list of the families a /metrics exports (metrics.txt for the nodes, "
                         "plugin-metrics.txt for the plugin processes); repeat for several")
    ap.add_argument("--fixtures", type=Path, help="directory of broken dashboards and rules to reject")
    ap.add_argument("directory", type=Path, help="the dashboard and rules to check")
    args = ap.parse_args()
    samples: set[str] = set()
    try:
        for path in args.metrics:
            samples |= load_metrics(path)[1]
    except (OSError, ValueError) as e:
        print(f"FAIL {e}")
        return 1

    errors = check_dir(args.directory, samples, require=True)
    if errors:
        print(f"FAIL {args.directory}:")
        for e in errors:
            print(f"  {e}")
        return 1
    names = " and ".join(p.name for p in args.metrics)
    print(f"ok   {args.directory}: the dashboard and the alert rules use only metrics of {names}")
    if args.fixtures is None:
        return 0

    cases = sorted(p for p in args.fixtures.iterdir() if p.is_dir())
    if not cases:
        print(f"FAIL no fixtures under {args.fixtures}")
        return 1
    return run_fixtures(cases, lambda case: check_dir(case, samples, require=False), "broken monitoring fixtures")


if __name__ == "__main__":
    sys.exit(main())
