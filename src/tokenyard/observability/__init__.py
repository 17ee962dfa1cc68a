"""Metrics, logs and traces shared by the three tokenyard services.

Each app holds its own `prometheus_client.CollectorRegistry` on `app.state.metrics_registry` (never
the library's global one), so two apps in one process, as in tests, never see each other's series.
Names and their meanings are listed in docs/operations.md; keep them stable: the dashboard, the
alert rules in deploy/monitoring/ and people's own queries depend on them.
"""
