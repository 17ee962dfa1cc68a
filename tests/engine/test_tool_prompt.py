"""Tools and tool turns in the prompt: the template's own way when it has one, else tokenyard's default."""

from __future__ import annotations

from pathlib import Path

from transformers import AutoTokenizer

from tokenyard.engine.tokenizer import HFPromptTokenizer
from tokenyard.engine.tool_prompt import template_messages, template_supports_tools
from tokenyard.protocol.internal import ChatMessage, FunctionTool, ToolCall

TOOLS = [FunctionTool(name="get_time", description="The time now", parameters={"type": "object"})]
CALL = ToolCall(id="call_1", name="get_time", arguments='{"zone": "UTC"}')
CONVERSATION = [
    ChatMessage(role="system", content="Be brief."),
    ChatMessage(role="user", content="Time?"),
    ChatMessage(role="assistant", content="", tool_calls=[CALL]),
    ChatMessage(role="tool", content="12:00", tool_call_id="call_1"),
]
NATIVE = "{% for m in messages %}{{ m.role }}{% endfor %}{% if tools %}{{ tools | tojson }}{% endif %}"


def test_which_templates_render_tools_themselves() -> None:
    assert template_supports_tools(NATIVE)
    assert template_supports_tools({"default": "x", "tool_use": "y"})
    assert not template_supports_tools("{% for m in messages %}{{ m.content }}{% endfor %}")
    assert not template_supports_tools(None)


def test_without_template_support_tools_join_the_system_message_and_results_become_user_turns() -> None:
    rendered, tools = template_messages(CONVERSATION, TOOLS, native=False)
    assert tools is None
    assert [m["role"] for m in rendered] == ["system", "user", "assistant", "user"]
    assert rendered[0]["content"].startswith("Be brief.\n\n# Tools")
    assert '{"type": "function", "function": {"name": "get_time"' in rendered[0]["content"]
    assert rendered[2]["content"] == '<tool_call>\n{"name": "get_time", "arguments": {"zone": "UTC"}}\n</tool_call>'
    assert rendered[3]["content"] == "<tool_response>\n12:00\n</tool_response>"


def test_a_conversation_without_a_system_message_gets_one() -> None:
    rendered, _ = template_messages(CONVERSATION[1:2], TOOLS, native=False)
    assert rendered[0]["role"] == "system" and rendered[0]["content"].startswith("# Tools")


def test_a_native_template_gets_openai_shapes_with_parsed_arguments() -> None:
    rendered, tools = template_messages(CONVERSATION, TOOLS, native=True)
    assert tools == [{"type": "function", "function": {"name": "get_time", "description": "The time now",
                                                       "parameters": {"type": "object"}}}]  # fmt: skip
    assert rendered[2]["tool_calls"] == [
        {"id": "call_1", "type": "function", "function": {"name": "get_time", "arguments": {"zone": "UTC"}}}
    ]
    assert rendered[3] == {"role": "tool", "content": "12:00", "tool_call_id": "call_1"}


def test_the_tiny_models_chatml_prompt_lists_the_tools(tiny_chat_model_dir: Path) -> None:
    tokenizer = HFPromptTokenizer(AutoTokenizer.from_pretrained(tiny_chat_model_dir))
    text = tokenizer.decode(tokenizer.encode_chat(CONVERSATION, tools=TOOLS))
    assert "<tools>" in text and "get_time" in text and "<tool_response>" in text
    assert tokenizer.decode(tokenizer.encode_chat(CONVERSATION[:2])).count("Tools") == 0
