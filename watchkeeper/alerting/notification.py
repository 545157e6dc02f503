"""What a receiver is asked to send: one group's alerts, as Alertmanager's template data.

`Notification` mirrors Alertmanager's webhook (version 4) body and its template data, so each
receiver renders from the same value and the outbox stores it as JSON:

>>> from watchkeeper.alerting.model import Alert
>>> from watchkeeper.labels import from_dict
>>> a = Alert(from_dict({"alertname": "Down", "job": "api"}), from_dict({"summary": "api down"}), 0)
>>> n = Notification.build("team", "{}:{}", from_dict({"alertname": "Down"}), [a], now_ms=1000)
>>> n.status, n.common_labels, len(n.firing)
('firing', (('alertname', 'Down'), ('job', 'api')), 1)
>>> Notification.from_json(n.to_json()) == n
True
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from watchkeeper.alerting.model import Alert
from watchkeeper.labels import Labels

ZERO_TIME = "0001-01-01T00:00:00Z"


def rfc3339(ms: int | None) -> str:
    if ms is None:
        return ZERO_TIME
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_rfc3339(text: str | None) -> int | None:
    """Milliseconds since the epoch; ``None`` for empty or Go's zero time."""
    if not text or text.startswith("0001-01-01"):
        return None
    t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    if t.tzinfo is None:
        t = t.replace(tzinfo=UTC)
    return int(t.timestamp() * 1000)


@dataclass(frozen=True, slots=True)
class NotifiedAlert:
    status: str
    labels: Labels
    annotations: Labels
    starts_at_ms: int
    ends_at_ms: int | None
    generator_url: str
    fingerprint: str

    def label(self, name: str) -> str:
        return dict(self.labels).get(name, "")

    def annotation(self, name: str) -> str:
        return dict(self.annotations).get(name, "")


def _common(sets: Sequence[Labels]) -> Labels:
    if not sets:
        return ()
    common = set(sets[0])
    for s in sets[1:]:
        common &= set(s)
    return tuple(sorted(common))


@dataclass(frozen=True, slots=True)
class Notification:
    receiver: str
    status: str
    group_key: str
    group_labels: Labels
    common_labels: Labels
    common_annotations: Labels
    alerts: tuple[NotifiedAlert, ...]
    external_url: str = ""
    truncated_alerts: int = 0
    created_at_ms: int = 0

    @classmethod
    def build(
        cls,
        receiver: str,
        group_key: str,
        group_labels: Labels,
        alerts: Sequence[Alert],
        *,
        now_ms: int,
        external_url: str = "",
    ) -> Notification:
        items = tuple(
            NotifiedAlert(
                status=a.status(now_ms=now_ms),
                labels=a.labels,
                annotations=a.annotations,
                starts_at_ms=a.starts_at_ms,
                ends_at_ms=a.ends_at_ms if a.is_resolved(now_ms=now_ms) else None,
                generator_url=a.generator_url,
                fingerprint=a.fingerprint,
            )
            for a in alerts
        )
        firing = any(a.status == "firing" for a in items)
        return cls(
            receiver=receiver,
            status="firing" if firing else "resolved",
            group_key=group_key,
            group_labels=group_labels,
            common_labels=_common([a.labels for a in items]),
            common_annotations=_common([a.annotations for a in items]),
            alerts=items,
            external_url=external_url,
            created_at_ms=now_ms,
        )

    @property
    def firing(self) -> list[NotifiedAlert]:
        return [a for a in self.alerts if a.status == "firing"]

    @property
    def resolved(self) -> list[NotifiedAlert]:
        return [a for a in self.alerts if a.status == "resolved"]

    def webhook_body(self, *, max_alerts: int = 0) -> dict[str, Any]:
        """Alertmanager's webhook payload, version 4 (``max_alerts`` 0 = all)."""
        alerts = self.alerts if max_alerts <= 0 else self.alerts[:max_alerts]
        return {
            "version": "4",
            "groupKey": self.group_key,
            "truncatedAlerts": len(self.alerts) - len(alerts) + self.truncated_alerts,
            "status": self.status,
            "receiver": self.receiver,
            "groupLabels": dict(self.group_labels),
            "commonLabels": dict(self.common_labels),
            "commonAnnotations": dict(self.common_annotations),
            "externalURL": self.external_url,
            "alerts": [
                {
                    "status": a.status,
                    "labels": dict(a.labels),
                    "annotations": dict(a.annotations),
                    "startsAt": rfc3339(a.starts_at_ms),
                    "endsAt": rfc3339(a.ends_at_ms),
                    "generatorURL": a.generator_url,
                    "fingerprint": a.fingerprint,
                }
                for a in alerts
            ],
        }

    def to_json(self) -> str:
        body = self.webhook_body()
        body["createdAtMs"] = self.created_at_ms
        body["alerts"] = [
            {**item, "startsAtMs": a.starts_at_ms, "endsAtMs": a.ends_at_ms}
            for item, a in zip(body["alerts"], self.alerts, strict=True)
        ]
        return json.dumps(body, separators=(",", ":"), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Notification:
        body = json.loads(text)

        def labels(d: dict[str, str]) -> Labels:
            return tuple(sorted(d.items()))

        return cls(
            receiver=body["receiver"],
            status=body["status"],
            group_key=body["groupKey"],
            group_labels=labels(body["groupLabels"]),
            common_labels=labels(body["commonLabels"]),
            common_annotations=labels(body["commonAnnotations"]),
            alerts=tuple(
                NotifiedAlert(
                    status=a["status"],
                    labels=labels(a["labels"]),
                    annotations=labels(a["annotations"]),
                    starts_at_ms=a["startsAtMs"],
                    ends_at_ms=a["endsAtMs"],
                    generator_url=a["generatorURL"],
                    fingerprint=a["fingerprint"],
                )
                for a in body["alerts"]
            ),
            external_url=body["externalURL"],
            truncated_alerts=body["truncatedAlerts"],
            created_at_ms=body["createdAtMs"],
        )
