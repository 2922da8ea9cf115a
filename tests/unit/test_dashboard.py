"""The on-sale dashboard as code: the committed JSON is what the generator
writes, and the metric names are read out of PromQL as Prometheus would."""

from __future__ import annotations

import json

from scripts import dashboard


def test_the_committed_dashboard_is_what_the_generator_writes() -> None:
    assert dashboard.OUTPUT.read_text() == dashboard.render(), "run `make dashboard`"


def test_every_panel_has_a_query_on_the_datasource_variable() -> None:
    document = json.loads(dashboard.render())
    assert [v["name"] for v in document["templating"]["list"]] == ["datasource"]
    for panel in document["panels"]:
        assert panel["targets"], panel["title"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert all(t["datasource"] == panel["datasource"] for t in panel["targets"])


def test_metric_names_are_read_from_promql() -> None:
    expr = (
        'histogram_quantile(0.99, sum by (le, queue) (rate(a_bucket{x="b{c}"}[5m]))) '
        "/ on(job) group_left max without (instance) (b_total offset 1m) > bool 1e3"
    )
    assert dashboard.metric_names(expr) == {"a_bucket", "b_total"}
    assert dashboard.metric_names("max(seat_holds_active)") == {"seat_holds_active"}
    assert dashboard.selectors('a{x="1",y=~"p|q"} + b') == [
        ("a", [("x", "=", "1"), ("y", "=~", "p|q")])
    ]
