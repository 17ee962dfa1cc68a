"""Why a generation ended, as one ladder of Literal types from the engine to the client.

Each step adds the reasons its layer can give: the engine stops on a stop condition or a length
limit; a worker's chunk may also carry the gateway word filter's "content_filter" (set when it stops
a choice); OpenAI's answer adds "tool_calls" for a tool-mode answer that made calls.
"""

from __future__ import annotations

from typing import Literal

EngineFinishReason = Literal["stop", "length"]
ChunkFinishReason = Literal[EngineFinishReason, "content_filter"]
FinishReason = Literal[ChunkFinishReason, "tool_calls"]
