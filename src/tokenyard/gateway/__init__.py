"""The gateway: OpenAI's HTTP API in front of the controller and workers.

Per endpoint a serving class turns an OpenAI request into worker calls and back into a response
or an SSE stream (vLLM's shape); routes are thin and fetch their serving object from app.state.
"""
