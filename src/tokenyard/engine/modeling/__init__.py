"""Model code the engine runs itself: one file per family, written for a flat batch of tokens and a paged KV cache.

(Named `modeling` so that it is not taken for `tokenyard.models`, which resolves model names to folders.)
"""
