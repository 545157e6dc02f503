"""Alerting: Alertmanager-semantics notification pipeline.

The data flow, module by module::

    model (Alert) -> dispatcher.receive -> routing (route tree) -> grouping (aggregation groups, timers)
      -> tick: timeintervals / silences / inhibition -> notification log + outbox (store, one transaction)
      -> outbox (worker: retries, backoff, Retry-After, dead letter) -> receivers/* -> delivery (HTTP, SMTP)

``runner`` runs the flush and delivery threads (and the Redis leader lease), ``api`` serves
Alertmanager's v2 API, ``service`` wires them for the server, ``cli`` is ``watchkeeper test notify``.
Rule evaluation calls ``Dispatcher.receive(alerts, now_ms)`` (see `model.AlertSink`).
"""
