"""Governance beside the request path: billing, quotas, metering, the journal and conversation logs.

Plain Python on top of the store; the gateway's middlewares and listeners are thin calls into it.
"""
