"""Model code the engine runs itself: one file per family, written for a flat batch of tokens and a paged KV cache.

(Named `modeling` because `engine.models` already resolves model names to folders.)
"""
