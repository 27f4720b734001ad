#!/usr/bin/env python3
"""Runs every PromQL expression of the Grafana dashboard and the rule file against a live
Prometheus and asserts each returns data for every backend that served traffic.

Dashboard expressions and recording rules must return data. Alert expressions compare those
signals with thresholds and are expected to return nothing on healthy traffic, so for them the
check is that they evaluate without error, and that Prometheus reports every rule group healthy.
Expressions over GPU-only series are skipped (and listed) when no GPU backend served.
Usage: check_promql.py PROMETHEUS_URL DASHBOARD_JSON RULES_YAML
"""
import json
import re
import sys
import urllib.parse
import urllib.request

# Series that exist only on servers with a GPU backend.
GPU_ONLY_METRICS = ("scan_gpu_memory_used_bytes", "scan_transfer_duration_seconds",
                    "scan_backend_fallbacks_total")

# Grafana's interval variables, replaced the way Grafana would for a 1 s scrape interval.
GRAFANA_VARIABLES = {"$__rate_interval": "15s", "$__interval": "5s", "$__range": "1m"}


def query(base, expr):
    url = base + "/api/v1/query?" + urllib.parse.urlencode({"query": expr})
    with urllib.request.urlopen(url, timeout=10) as reply:
        body = json.load(reply)
    if body.get("status") != "success":
        raise RuntimeError(f"query failed: {expr}: {body}")
    return body["data"]["result"]


def dashboard_expressions(path):
    with open(path) as file:
        dashboard = json.load(file)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            yield f"dashboard panel '{panel['title']}'", expr


def rule_expressions(path):
    """(kind, name, expr) from the rules file, read without a YAML library: the file keeps each
    rule's `record:`/`alert:` line before its `expr:` (single line or `|` block)."""
    lines = open(path).read().splitlines()
    kind = name = None
    index = 0
    while index < len(lines):
        line = lines[index]
        match = re.match(r"\s*- (record|alert): (\S+)", line)
        if match:
            kind, name = match.groups()
        match = re.match(r"(\s*)expr: (.*)", line)
        if match and kind:
            indent, value = match.groups()
            if value.strip() == "|":
                block = []
                index += 1
                while index < len(lines) and (not lines[index].strip() or
                                              len(lines[index]) - len(lines[index].lstrip()) > len(indent)):
                    block.append(lines[index].strip())
                    index += 1
                yield kind, name, " ".join(block)
                kind = None
                continue
            yield kind, name, value
            kind = None
        index += 1


def main():
    base, dashboard_path, rules_path = sys.argv[1:4]
    served = {r["metric"]["backend"]
              for r in query(base, 'sum by (backend) (scan_requests_total{code="OK"}) > 0')}
    if not served:
        print("no backend served any request", file=sys.stderr)
        return 1
    gpu_served = any(b.startswith("cuda") for b in served)
    print(f"backends that served: {sorted(served)}")

    failures, checked, skipped = [], 0, []
    must_have_data = list(dashboard_expressions(dashboard_path))
    alert_exprs = []
    for kind, name, expr in rule_expressions(rules_path):
        if kind == "record":
            must_have_data.append((f"recording rule {name}", expr))
        else:
            alert_exprs.append((f"alert {name}", expr))

    for label, expr in must_have_data:
        if not gpu_served and any(metric in expr for metric in GPU_ONLY_METRICS):
            skipped.append(label)
            continue
        checked += 1
        result = query(base, expr)
        if not result:
            failures.append(f"{label}: no data for {expr}")
            continue
        backends = {r["metric"]["backend"] for r in result if "backend" in r["metric"]}
        grouped_by_backend = any("backend" in r["metric"] for r in result)
        # GPU series exist for GPU backends only: those must all be there, the CPU ones cannot.
        expected = ({b for b in served if b.startswith("cuda")}
                    if any(metric in expr for metric in GPU_ONLY_METRICS) else served)
        if grouped_by_backend and not expected <= backends:
            failures.append(f"{label}: missing backends {sorted(expected - backends)} in {expr}")
    for label, expr in alert_exprs:
        checked += 1
        query(base, expr)  # raises on an invalid expression

    with urllib.request.urlopen(base + "/api/v1/rules", timeout=10) as reply:
        groups = json.load(reply)["data"]["groups"]
    for group in groups:
        for rule in group["rules"]:
            if rule.get("health") != "ok":
                failures.append(f"rule {rule['name']}: health {rule.get('health')}: {rule.get('lastError')}")
    firing = [r["name"] for g in groups for r in g["rules"] if r.get("state") == "firing"]
    if firing:
        failures.append(f"alerts firing on healthy traffic: {firing}")

    print(f"checked {checked} expressions; skipped without a GPU backend: {skipped or 'none'}")
    for failure in failures:
        print("FAIL", failure, file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
