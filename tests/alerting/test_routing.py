from __future__ import annotations

import pytest

from watchkeeper.alerting.config import AlertingConfig, parse_matcher, parse_matchers
from watchkeeper.alerting.routing import Route, build_routes, group_key, match_routes
from watchkeeper.errors import ConfigError
from watchkeeper.labels import MatchOp, from_dict

TREE = """
route:
  receiver: default
  group_by: [alertname]
  group_wait: 30s
  routes:
    - matchers: ['team="db"']
      receiver: db
      group_by: [alertname, cluster]
      continue: true
      routes:
        - matchers: ['severity="page"']
          receiver: db-pager
          group_wait: 0s
    - matchers: ['team=~"db|web"']
      receiver: frontline
      group_by: ['...']
    - match: {team: ops}
      receiver: ops
    - matchers: ['{env="prod", severity!="info"}']
      receiver: prod
receivers:
  - {name: default}
  - {name: db}
  - {name: db-pager}
  - {name: frontline}
  - {name: ops}
  - {name: prod}
"""


@pytest.fixture
def tree() -> Route:
    return build_routes(AlertingConfig.from_yaml(TREE).route)


@pytest.mark.parametrize(
    ("labels", "receivers"),
    [
        ({"alertname": "X"}, ["default"]),
        ({"team": "db"}, ["db", "frontline"]),  # continue: true on the db route
        ({"team": "db", "severity": "page"}, ["db-pager", "frontline"]),  # deepest match, then continue
        ({"team": "web"}, ["frontline"]),
        ({"team": "ops"}, ["ops"]),  # deprecated match:
        ({"env": "prod", "severity": "warning"}, ["prod"]),
        ({"env": "prod", "severity": "info"}, ["default"]),
        ({"env": "prod"}, ["prod"]),  # a missing label is "" and != "info"
    ],
)
def test_routing_tree_picks_receivers(tree: Route, labels: dict[str, str], receivers: list[str]) -> None:
    assert [r.receiver for r in match_routes(tree, from_dict(labels))] == receivers


def test_children_inherit_group_by_and_timings(tree: Route) -> None:
    db = tree.children[0]
    pager = db.children[0]
    assert pager.group_by == ("alertname", "cluster")
    assert (pager.group_wait_ms, pager.group_interval_ms, pager.repeat_interval_ms) == (
        0,
        300_000,
        14_400_000,
    )
    assert db.group_wait_ms == 30_000


def test_group_by_dots_groups_by_every_label(tree: Route) -> None:
    frontline = tree.children[1]
    a = from_dict({"team": "web", "instance": "a"})
    b = from_dict({"team": "web", "instance": "b"})
    assert frontline.group_by_all
    assert group_key(frontline, a) != group_key(frontline, b)
    db = tree.children[0]
    same = [from_dict({"alertname": "X", "cluster": "eu", "instance": i}) for i in "ab"]
    assert (
        group_key(db, same[0]) == group_key(db, same[1]) == '{}/{team="db"}/0:{alertname="X", cluster="eu"}'
    )


def test_matcher_syntax() -> None:
    m = parse_matcher('name =~ "a\\"b.*"')
    assert (m.op, m.name, m.value) == (MatchOp.REGEX, "name", 'a"b.*')
    assert parse_matcher("env!=prod").op is MatchOp.NOT_EQUAL
    assert [str(x) for x in parse_matchers(['{a="1,2", b!~"x"}'])] == ['a="1,2"', 'b!~"x"']
    with pytest.raises(ValueError):
        parse_matcher("no operator")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("route: {receiver: nope}\nreceivers: [{name: a}]", "undefined receiver"),
        ("route: {receiver: a, matchers: ['x=\"1\"']}\nreceivers: [{name: a}]", "root route must not"),
        (
            "route: {receiver: a, routes: [{mute_time_intervals: [night]}]}\nreceivers: [{name: a}]",
            "undefined time interval",
        ),
        ("route: {receiver: a, group_wait: soon}\nreceivers: [{name: a}]", "not a valid duration"),
        ("route: {receiver: a}\nreceivers: [{name: a}, {name: a}]", "duplicate receiver"),
        (
            "route: {receiver: a}\nreceivers: [{name: a, slack_configs: "
            "[{api_url: x, title: '{{ .Status | nope }}'}]}]",
            "No filter named 'nope'",
        ),
        (
            "route: {receiver: a}\nreceivers: [{name: a}]\ntime_intervals: [{name: n, time_intervals: "
            "[{weekdays: [funday]}]}]",
            "funday",
        ),
        (
            "route: {receiver: a}\nreceivers: [{name: a}]\ntime_intervals: [{name: n, time_intervals: "
            "[{location: Mars/Olympus}]}]",
            "Mars",
        ),
    ],
)
def test_config_errors_are_readable(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        AlertingConfig.from_yaml(text)
