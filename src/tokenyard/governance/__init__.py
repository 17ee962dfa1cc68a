"""Governance: tenants, API keys, the principal a request acts as, access limits, the word
filter, billing, quotas, metering, the journal and conversation logs.

Plain Python on top of tokenyard.store, no HTTP: the gateway's middlewares and listeners are thin
calls into these modules. See docs/security.md.
"""
