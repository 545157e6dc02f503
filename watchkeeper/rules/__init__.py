"""Prometheus rule files: loading, evaluation, alert state, promtool's checks and unit tests.

The data flow, module by module::

    model.py (rule files -> RuleGroup)      template.py + template_funcs.py (Go templates)
        -> evaluation.py (one group at one timestamp; state.py steps each alert, no I/O)
        -> manager.py (clock, store writes, persistence.py, notify.py -> AlertSink)
        <- watchkeeper/scheduler.py (one APScheduler job per group)
    api.py (/api/v1/rules, /api/v1/alerts), metrics.py (self-metrics)
    check.py (``check rules``), unit_tests.py + histograms.py (``test rules``)
"""
