"""The model worker: one model instance behind a typed internal HTTP API.

It registers with the controller, heartbeats its queue and speed, serves generate/embed/count
requests from the gateway, and drains on SIGTERM. Any engine that implements `engine.base` fits.
"""
