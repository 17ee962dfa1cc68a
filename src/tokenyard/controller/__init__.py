"""The controller: a soft-state registry of workers, health by heartbeat expiry, and dispatch.

Workers register and heartbeat with their whole `WorkerStatus`, so the registry (registry.py) is
rebuilt from the next round of heartbeats after a controller restart; nothing is persisted. Queue
lengths come from the workers' own reports, never from counters the controller keeps and forgets to
decrement (a FastChat bug). dispatch.py holds the policies that pick one healthy worker per
request; app.py exposes both over HTTP; main.py runs it.
"""
