"""tokenyard: self-hosted, OpenAI-compatible serving for large language models.

Three layers, as FastChat drew them: a controller that registers workers and dispatches requests,
workers that each hold one model instance, and a gateway that speaks OpenAI's HTTP API.
"""

__version__ = "0.1.0"
