"""SLOs, uptime probes and reports.

Data flow: ``spec`` (Sloth/OpenSLO) -> ``generate`` (rule groups) -> the rules engine records
``slo:*`` series; ``probes`` write ``probe_*`` series; ``budget`` and ``uptime`` are pure
functions over query results; ``reports`` and ``router`` present them; ``config`` holds the
``slo:`` section of ``watchkeeper.yml``.
"""
