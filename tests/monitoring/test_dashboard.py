"""monitoring/grafana/ledger-dashboard.json: valid JSON for Grafana 10/11, a Prometheus data source
variable and a ledger variable, and PromQL that selects only the metrics that
monitoring/postgres_exporter/queries.yaml defines (test_exporter.py checks the exporter serves them)."""

from __future__ import annotations

import json
import re

import pytest

from monitoringtest import (DASHBOARD_JSON, dashboard_expressions, dashboard_metric_names,
                            dashboard_panels, defined_metrics, label_values_selector,
                            promql_metric_names)

# Grafana 10.0 writes schemaVersion 38, 10.4 and 11.0 write 39, 11.3 writes 40, 12 writes 41.
SCHEMA_VERSIONS = range(38, 42)


@pytest.fixture(scope="module")
def dashboard() -> dict:
    with open(DASHBOARD_JSON, encoding="utf-8") as f:
        return json.load(f)


def variables(dashboard) -> dict[str, dict]:
    return {v["name"]: v for v in dashboard["templating"]["list"]}


def test_it_is_a_dashboard_for_grafana_10_and_11(dashboard):
    assert dashboard["schemaVersion"] in SCHEMA_VERSIONS
    assert dashboard["title"] and dashboard["uid"]
    # Imported dashboards get an id of their own.
    assert dashboard.get("id") is None
    panels = dashboard_panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), ids
    # Panels fit the 24-column grid and do not overlap.
    boxes = []
    for panel in panels:
        g = panel["gridPos"]
        assert g["x"] >= 0 and g["w"] > 0 and g["x"] + g["w"] <= 24 and g["h"] > 0, panel["title"]
        boxes.append((panel["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for i, (a, ax0, ay0, ax1, ay1) in enumerate(boxes):
        for b, bx0, by0, bx1, by1 in boxes[i + 1:]:
            assert ax1 <= bx0 or bx1 <= ax0 or ay1 <= by0 or by1 <= ay0, (a, b)


def test_the_data_source_is_a_variable_every_query_uses(dashboard):
    datasource = variables(dashboard)["datasource"]
    assert datasource["type"] == "datasource" and datasource["query"] == "prometheus"
    for panel in dashboard_panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
    for variable in variables(dashboard).values():
        if variable["type"] == "query":
            assert variable["datasource"]["uid"] == "${datasource}", variable["name"]


def test_the_ledger_variable_lists_the_exported_ledgers(dashboard):
    ledger = variables(dashboard)["ledger"]
    assert ledger["type"] == "query" and ledger["multi"] and ledger["includeAll"]
    query = ledger["query"]["query"] if isinstance(ledger["query"], dict) else ledger["query"]
    assert re.fullmatch(r"label_values\(ledger_records(\{.*\})?, ledger\)", query), query
    # The variables it narrows by come first, so Grafana resolves them before it.
    names = [v["name"] for v in dashboard["templating"]["list"]]
    assert names.index("server") < names.index("datname") < names.index("ledger")


def test_every_expression_uses_only_metrics_the_query_file_defines(dashboard):
    defined = defined_metrics()
    for expr in dashboard_expressions(dashboard):
        names = promql_metric_names(label_values_selector(expr))
        assert names, f"no metric found in {expr!r}"
        assert names <= set(defined), (expr, sorted(names - set(defined)))
        for opening, closing in ["()", "{}", "[]"]:
            assert expr.count(opening) == expr.count(closing), expr
    assert dashboard_metric_names(dashboard) <= set(defined)


def test_every_panel_follows_the_variables(dashboard):
    """Each selector of a metric labelled by ledger filters by $ledger (and by $server and
    $datname); those with only a database label filter by these two."""
    defined = defined_metrics()
    for panel in dashboard_panels(dashboard):
        for target in panel.get("targets", []):
            for metric, matchers in re.findall(r"\b(ledger_[a-z_]+)\{([^}]*)\}", target["expr"]):
                labels = defined[metric][1]
                wanted = ['server=~"$server"', 'datname=~"$datname"']
                if "ledger" in labels:
                    wanted.append('ledger=~"$ledger"')
                for matcher in wanted:
                    assert matcher in matchers, (panel["title"], target["expr"])
            assert re.search(r"\bledger_[a-z_]+\{", target["expr"]), (panel["title"], target["expr"])


def test_the_dashboard_shows_what_an_operator_watches(dashboard):
    exprs = [t["expr"] for p in dashboard_panels(dashboard) for t in p.get("targets", [])]
    joined = "\n".join(exprs)
    assert re.search(r"rate\(ledger_appends_total\{[^}]*\}\[5m\]\)", joined)
    assert any("by (kind)" in e and "ledger_refusals_total" in e for e in exprs)
    assert "ledger_unanchored_records{" in joined
    assert "ledger_checkpoint_age_seconds{" in joined
    assert "ledger_verify_problems{" in joined
    assert re.search(r"time\(\) - [^\n]*ledger_verify_last_run_timestamp_seconds\{", joined)
    titles = {p["title"] for p in dashboard_panels(dashboard)}
    assert {"Append rate", "Refusals by kind", "Unanchored records", "Checkpoint age",
            "Verification problems", "Time since last verification"} <= titles


@pytest.mark.parametrize("expr, names", [
    ('sum by (kind) (rate(ledger_refusals_total{ledger=~"$ledger"}[5m]))', {"ledger_refusals_total"}),
    ('time() - max by (ledger) (ledger_verify_last_run_timestamp_seconds{server=~"$server"})',
     {"ledger_verify_last_run_timestamp_seconds"}),
    ("count(ledger_records > 0 unless on (server, datname, ledger) ledger_checkpoint_age_seconds)",
     {"ledger_records", "ledger_checkpoint_age_seconds"}),
    ("ledger_record{kind='x'} offset 5m * 1e3 + ledger_chains[$__rate_interval]",
     {"ledger_record", "ledger_chains"}),
    ("sum(rate(ledger_appends_total[5m])) by (datname) / ignoring(x) group_left(y) ledger_retired",
     {"ledger_appends_total", "ledger_retired"}),
])
def test_the_metric_name_reader_finds_every_selected_metric(expr, names):
    """The reader the checks above rest on: it finds misspelt names too (ledger_record)."""
    assert promql_metric_names(expr) == names
