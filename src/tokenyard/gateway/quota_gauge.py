"""Keeps `tokenyard_tenant_quota_usage_ratio` current, for the TokenyardTenantNearQuota alert.

Every few seconds, off the request path, the share of each tenant quota's limit used this period is
read from the counters (SQL or Redis: settled usage plus reservations in flight) and set on the
gauge. Reading on a timer rather than after every call keeps the hot path free of extra queries;
the alert waits a minute anyway. A store that cannot be reached leaves the last values in place.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client import Gauge

from tokenyard.governance.quotas import QuotaService

logger = logging.getLogger(__name__)
QUOTA_GAUGE_SECONDS = 15.0


def report_once(quotas: QuotaService, gauge: Gauge) -> int:
    """Set the gauge from the counters now; how many series were set."""
    shares = quotas.tenant_usage()
    for tenant, kind, share in shares:
        gauge.labels(tenant, kind).set(share)
    return len(shares)


async def keep_quota_gauge(quotas: QuotaService, gauge: Gauge, interval: float = QUOTA_GAUGE_SECONDS) -> None:
    """Refresh the gauge every `interval` seconds until cancelled."""
    while True:
        try:
            await asyncio.to_thread(report_once, quotas, gauge)
        except Exception as exc:  # an outage must not end the loop: the next round tries again
            logger.warning("quota usage not read for the metrics: %s", type(exc).__name__)
        await asyncio.sleep(interval)
