"""The word filter in the request path: what is screened, what is refused, how answers are filtered."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace

import httpx
import pytest
from fastapi import Request

from tokenyard.config import GatewayConfig, Settings
from tokenyard.errors import ConfigError, ContentFilteredError, InvalidRequestError
from tokenyard.gateway.app import create_app
from tokenyard.gateway.filtering import ContentScreen, FilterAction, OutputGuard, chat_texts
from tokenyard.governance import keys
from tokenyard.governance.config import AuthConfig
from tokenyard.governance.content_filter import WordFilter
from tokenyard.governance.keys import KeySettings
from tokenyard.governance.wordlists import FilterConfig
from tokenyard.protocol.internal import GenerateChunk
from tokenyard.protocol.openai import ChatCompletionRequest, CompletionRequest
from tokenyard.protocol.outcome import RequestOutcome
from tokenyard.store import Store


def new_request(tenant: str | None = None) -> Request:
    request = Request({"type": "http", "method": "POST", "path": "/v1/chat/completions", "headers": []})
    request.state.request_id = "req-1"
    if tenant is not None:
        request.state.principal = SimpleNamespace(tenant=tenant)
    return request


def screen_for(tmp_path: Path, action: str = "mask") -> ContentScreen:
    words = tmp_path / "drugs.txt"
    words.write_text("大麻\n冰毒\n", encoding="utf-8")
    tenant_words = tmp_path / "acme.txt"
    tenant_words.write_text("竞品\n", encoding="utf-8")
    config = FilterConfig(
        word_files=[words],
        output_action=action,  # type: ignore[arg-type]
        tenants={"acme": {"word_files": [tenant_words]}},  # type: ignore[dict-item]
    )
    return ContentScreen(WordFilter.from_config(config))


def chat(*messages: dict[str, object]) -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate({"model": "m", "messages": list(messages)})


def test_every_text_of_a_conversation_is_screened() -> None:
    body = chat(
        {"role": "system", "content": "sys"},
        {"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]},
        {
            "role": "assistant",
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"q": "\\u5927"}'}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "result"},
    )
    texts = list(chat_texts(body))
    assert ("messages[0].content", "sys") in texts
    assert ("messages[1].content[1].text", "b") in texts
    assert ("messages[2].tool_calls[0].function.arguments", '{"q": "\\u5927"}') in texts
    assert ("messages[2].tool_calls[0].function.arguments", "大") in texts  # JSON escapes decoded
    assert ("messages[3].content", "result") in texts


@pytest.mark.parametrize(
    ("message", "param"),
    [
        ({"role": "user", "content": "买大 麻"}, "messages[0].content"),
        ({"role": "user", "content": [{"type": "text", "text": "冰\u200b毒"}]}, "messages[0].content[0].text"),
        (
            {
                "role": "assistant",
                "tool_calls": [
                    {"id": "c", "type": "function", "function": {"name": "buy", "arguments": '{"item": "大麻"}'}}
                ],
            },
            "messages[0].tool_calls[0].function.arguments",
        ),
        ({"role": "tool", "tool_call_id": "c", "content": "库存：冰毒 3 件"}, "messages[0].content"),
    ],
)
def test_a_listed_word_anywhere_is_refused_naming_rule_not_word(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, message: dict[str, object], param: str
) -> None:
    request = new_request()
    with caplog.at_level(logging.WARNING), pytest.raises(ContentFilteredError) as info:
        screen_for(tmp_path).chat(chat(message), request)
    error = info.value.to_dict()["error"]
    assert info.value.status_code == 400
    assert error["code"] == "content_filtered" and error["param"] == param  # type: ignore[index]
    assert "drugs:" in str(error["message"]) and "'drugs'" in str(error["message"])  # type: ignore[index]
    assert "大麻" not in str(error) and "冰毒" not in str(error)
    (action,) = request.state.filter_actions
    assert action.stage == "input" and action.action == "refused" and action.where == param
    assert any(
        ("大麻" in r.getMessage() or "冰毒" in r.getMessage()) and "req-1" in r.getMessage() for r in caplog.records
    )


def test_completion_prompts_in_every_text_form(tmp_path: Path) -> None:
    screen = screen_for(tmp_path)
    with pytest.raises(ContentFilteredError) as info:
        screen.completion(CompletionRequest(model="m", prompt=["fine", "一些冰毒"]), new_request())
    assert info.value.param == "prompt[1]"
    with pytest.raises(ContentFilteredError, match="prompt matches rule drugs:1"):
        screen.completion(CompletionRequest(model="m", prompt="大麻"), new_request())
    with pytest.raises(InvalidRequestError, match="not as token ids"):
        screen.completion(CompletionRequest(model="m", prompt=[1, 2, 3]), new_request())
    assert screen.completion(CompletionRequest(model="m", prompt="这是个问题"), new_request()) is not None


def test_tenant_lists_apply_to_that_tenant_only(tmp_path: Path) -> None:
    screen = screen_for(tmp_path)
    with pytest.raises(ContentFilteredError, match="acme:1"):
        screen.chat(chat({"role": "user", "content": "看看竞品"}), new_request("acme"))
    assert screen.chat(chat({"role": "user", "content": "看看竞品"}), new_request("other")) is not None


def test_without_a_filter_requests_pass_and_record_nothing() -> None:
    request = new_request()
    assert ContentScreen(None).chat(chat({"role": "user", "content": "大麻"}), request) is None
    assert request.state.filter_actions == []


async def chunks_of(parts: list[tuple[int, str, str | None]]) -> AsyncIterator[tuple[int, GenerateChunk]]:
    for count, (index, text, finish) in enumerate(parts, start=1):
        yield index, GenerateChunk(text=text, completion_tokens=count, finish_reason=finish)  # type: ignore[arg-type]


async def run_guard(
    guard: OutputGuard, parts: list[tuple[int, str, str | None]]
) -> tuple[dict[int, str], dict[int, str | None], list[int]]:
    texts: dict[int, str] = {}
    reasons: dict[int, str | None] = {}
    stopped: list[int] = []
    async for index, chunk in guard.filter(chunks_of(parts), stopped.append):
        texts[index] = texts.get(index, "") + chunk.text
        reasons[index] = chunk.finish_reason or reasons.get(index)
    return texts, reasons, stopped


async def test_output_is_masked_per_choice_across_chunks(tmp_path: Path) -> None:
    request = new_request()
    guard = screen_for(tmp_path).chat(chat({"role": "user", "content": "hi"}), request)
    assert guard is not None
    parts = [
        (0, "好的，大", None),
        (1, "冰", None),
        (0, "麻在这", None),
        (1, "毒", None),
        (0, "里", "stop"),
        (1, "", "length"),
    ]
    texts, reasons, stopped = await run_guard(guard, parts)
    assert texts == {0: "好的，**在这里", 1: "**"}
    assert reasons == {0: "stop", 1: "length"}
    assert stopped == []
    actions: list[FilterAction] = request.state.filter_actions
    assert [(a.stage, a.action, a.rule_id, a.where) for a in actions] == [
        ("output", "masked", "drugs:1", "choices[0]"),
        ("output", "masked", "drugs:2", "choices[1]"),
    ]


async def test_stop_ends_the_choice_and_asks_its_worker_to_stop(tmp_path: Path) -> None:
    request = new_request()
    guard = screen_for(tmp_path, "stop").chat(chat({"role": "user", "content": "hi"}), request)
    assert guard is not None
    parts = [
        (0, "好的，大", None),
        (1, "很好", None),
        (0, "麻在", None),
        (0, "这里", None),
        (1, "。", "stop"),
        (0, "", "length"),
    ]
    texts, reasons, stopped = await run_guard(guard, parts)
    assert texts == {0: "好的，", 1: "很好。"}
    assert reasons == {0: "content_filter", 1: "stop"}
    assert stopped == [0]
    assert [a.action for a in request.state.filter_actions] == ["stopped"]


async def test_after_a_stop_the_choice_keeps_counting_tokens(tmp_path: Path) -> None:
    guard = screen_for(tmp_path, "stop").chat(chat({"role": "user", "content": "hi"}), new_request())
    assert guard is not None
    seen = [
        chunk async for _, chunk in guard.filter(chunks_of([(0, "大麻吗", None), (0, "abc", None)]), lambda i: None)
    ]
    assert [(c.text, c.finish_reason, c.completion_tokens) for c in seen] == [("", "content_filter", 1), ("", None, 2)]


def filtered_settings(tmp_path: Path, word_file: Path | None = None) -> Settings:
    if word_file is None:
        word_file = tmp_path / "words.txt"
        word_file.write_text("大麻\n", encoding="utf-8")
    return Settings(gateway=GatewayConfig(controller="http://127.0.0.1:9"), filter=FilterConfig(word_files=[word_file]))


async def test_a_refusal_leaves_the_app_in_openai_shape_and_reaches_the_request_record(tmp_path: Path) -> None:
    app = create_app(filtered_settings(tmp_path))
    outcomes: list[RequestOutcome] = []
    app.state.outcomes.add(outcomes.append)
    body = {"model": "any", "messages": [{"role": "user", "content": "大 麻"}]}
    transport = httpx.ASGITransport(app=app)
    async with app.router.lifespan_context(app), httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
        response = await http.post("/v1/chat/completions", json=body, headers={"X-Request-ID": "filter-1"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "content_filtered"
    assert response.json()["error"]["type"] == "invalid_request_error"
    assert response.headers["x-request-id"] == "filter-1"
    (outcome,) = outcomes
    assert outcome.status == 400
    assert [(a.stage, a.action, a.rule_id) for a in outcome.filter_actions] == [("input", "refused", "words:1")]


def test_a_missing_list_stops_the_gateway_before_it_serves(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"filter\.word_files: cannot read .*missing\.txt"):
        create_app(filtered_settings(tmp_path, tmp_path / "missing.txt"))


async def test_a_tenants_own_list_follows_its_api_key(tmp_path: Path, sqlite_url: str) -> None:
    """With auth on, the tenant comes from the key's principal: acme's list refuses acme, not others."""
    common, own = tmp_path / "common.txt", tmp_path / "acme.txt"
    common.write_text("大麻\n", encoding="utf-8")
    own.write_text("竞品\n", encoding="utf-8")
    settings = Settings(
        gateway=GatewayConfig(controller="http://127.0.0.1:9"),
        auth=AuthConfig(enabled=True),
        filter=FilterConfig(word_files=[common], tenants={"acme": {"word_files": [own]}}),  # type: ignore[dict-item]
    )
    store = Store(sqlite_url)
    store.upgrade()
    try:
        acme = keys.create_key(store, KeySettings(tenant="acme")).key
        other = keys.create_key(store, KeySettings(tenant="other")).key
        app = create_app(settings, store=store)
        body = {"model": "any", "messages": [{"role": "user", "content": "说说竞品"}], "max_tokens": 2}
        transport = httpx.ASGITransport(app=app)
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(transport=transport, base_url="http://gw") as http,
        ):
            refused = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {acme}"})
            passed = await http.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {other}"})
    finally:
        store.close()
    assert refused.status_code == 400 and refused.json()["error"]["code"] == "content_filtered"
    assert "acme:1" in refused.json()["error"]["message"]
    # Past the filter: no controller answers in this test, so the unknown model is what stops it.
    assert passed.status_code == 404 and passed.json()["error"]["code"] == "model_not_found"
