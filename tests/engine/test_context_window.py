"""The one context check: what fits, which field a refusal names, and its one message."""

from __future__ import annotations

import pytest

from tokenyard.engine.context_window import check_context_length
from tokenyard.errors import ContextLengthExceededError


def refusal(*args: int, **names: str) -> ContextLengthExceededError:
    with pytest.raises(ContextLengthExceededError) as caught:
        check_context_length(*args, **names)
    return caught.value


def test_a_request_that_just_fits_passes() -> None:
    check_context_length(3, 7, 10)
    check_context_length(10, 0, 10)  # an embedding input of the full context


def test_too_many_new_tokens_names_the_max_tokens_field() -> None:
    error = refusal(3, 8, 10, max_tokens_param="max_completion_tokens")
    assert (error.status_code, error.code, error.param) == (400, "context_length_exceeded", "max_completion_tokens")
    assert error.message == (
        "This model's maximum context length is 10 tokens. However, you requested 11 tokens "
        "(3 in the prompt, 8 for the completion). Please reduce the length of the prompt or of the completion."
    )


def test_a_prompt_that_leaves_no_room_names_the_prompt_field() -> None:
    assert refusal(10, 1, 10, prompt_param="messages").param == "messages"
    assert refusal(12, 0, 10, prompt_param="input").param == "input"
    assert refusal(9, 5, 10).param == "max_tokens"  # one token would still fit


def test_an_embedding_input_is_named_in_the_message() -> None:
    error = refusal(41, 0, 32, prompt_param="input", where="input 1")
    assert "(41 in input 1, 0 for the completion)" in error.message
