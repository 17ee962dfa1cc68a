"""Inference engines: everything that owns model weights, tokenizers and tensors.

The worker talks to an engine only through the small interfaces in `engine.base`, so a faster
engine replaces a simpler one without touching the worker, the gateway or their tests.
"""
