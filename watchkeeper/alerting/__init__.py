"""Alerting: Alertmanager-semantics notification pipeline.

The data flow, module by module::

    model (Alert) -> dispatcher.receive -> routing (route tree) -> inhibition / silences / timeintervals
      -> grouping (aggregation groups and their timers) -> outbox (SQL, retries) -> receivers/* -> HTTP/SMTP

Rule evaluation calls ``Dispatcher.receive(alerts, now_ms)`` (see `model.AlertSink`).
"""
