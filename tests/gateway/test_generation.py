"""GenerationService and ResumingStream over fake workers: fan-out to one worker, failover before the
first token, resuming a broken stream elsewhere without a gap, stopping and timing out."""

from __future__ import annotations

import asyncio

import pytest

from tests.gateway.fakes import FakeRouter, FakeWorker, FakeWorkers, service
from tokenyard.errors import NoHealthyWorkerError, RequestTimeoutError, UpstreamError, WorkerError
from tokenyard.gateway.generation import GenerationService
from tokenyard.protocol.internal import GenerateRequest, ResumeState


def requests(n: int) -> list[GenerateRequest]:
    return [GenerateRequest(request_id=f"c-{i}", model="m", prompt="p") for i in range(n)]


def by_choice(request: GenerateRequest) -> list[str]:
    return [request.request_id[-1], "x"]


def parts(svc: GenerationService) -> tuple[FakeRouter, FakeWorkers]:
    assert isinstance(svc.router, FakeRouter) and isinstance(svc.workers, FakeWorkers)
    return svc.router, svc.workers


async def test_choices_fan_out_to_one_worker_and_are_collected_whole() -> None:
    w0, w1 = FakeWorker("w0", answer=by_choice), FakeWorker("w1")
    results = await service(w0, w1).run("m", requests(3))
    assert [r.text for r in results] == ["0x", "1x", "2x"]
    assert {(r.finish_reason, r.completion_tokens, r.prompt_tokens, r.worker) for r in results} == {
        ("stop", 2, 4, "w0")
    }
    assert not w1.opened


async def test_a_failed_open_moves_every_choice_to_the_next_worker() -> None:
    w0 = FakeWorker("w0", refuse=WorkerError("refused"), refused_id="c-1")
    w1 = FakeWorker("w1", answer=by_choice)
    svc = service(w0, w1)
    router, workers = parts(svc)
    results = await svc.run("m", requests(3))
    assert [r.text for r in results] == ["0x", "1x", "2x"] and {r.worker for r in results} == {"w1"}
    assert all(s.closed for s in workers.streams if s.worker_id == "w0")  # none left open on w0
    assert router.reported == ["w0"] and router.count("tokenyard_gateway_retries_total") == 1


async def test_a_bad_request_is_the_clients_answer_not_a_retry() -> None:
    w0, w1 = FakeWorker("w0", refuse=UpstreamError(400, "invalid_request_error", "bad")), FakeWorker("w1")
    with pytest.raises(UpstreamError):
        await service(w0, w1).run("m", requests(2))
    assert not w1.opened


async def test_a_broken_stream_resumes_on_another_worker_without_gap_or_duplicate() -> None:
    w0, w1 = FakeWorker("w0", break_after=2), FakeWorker("w1")
    svc = service(w0, w1)
    router, _ = parts(svc)
    (result,) = await svc.run("m", requests(1))
    assert result.text == "Hello!" and result.completion_tokens == 3 and result.finish_reason == "stop"
    assert result.worker == "w1"
    assert w1.opened[0].resume == ResumeState(token_ids=[100, 101], text_sent="Hello")
    assert router.reported == ["w0"] and router.count("tokenyard_gateway_resumed_streams_total") == 1


async def test_a_stream_broken_before_its_first_token_is_sent_again_as_it_was() -> None:
    w0, w1 = FakeWorker("w0", break_after=0), FakeWorker("w1")
    (result,) = await service(w0, w1).run("m", requests(1))
    assert result.text == "Hello!" and w1.opened[0].resume is None


async def test_resuming_stops_after_max_attempts_workers() -> None:
    workers = [FakeWorker(f"w{i}", break_after=1) for i in range(3)]
    with pytest.raises(WorkerError):
        await service(*workers, max_attempts=2).run("m", requests(1))
    assert not workers[2].opened


async def test_no_worker_left_to_resume_on_is_the_error_the_client_hears() -> None:
    with pytest.raises(NoHealthyWorkerError):
        await service(FakeWorker("w0", break_after=1)).run("m", requests(1))


async def test_a_stopped_choice_aborts_once_and_ends_quietly() -> None:
    w0, w1 = FakeWorker("w0", break_after=1), FakeWorker("w1")
    svc = service(w0, w1)
    _, workers = parts(svc)
    (stream,) = await svc.open("m", requests(1))
    texts = []
    async for chunk in stream.chunks():
        texts.append(chunk.text)
        stream.stop()
        stream.stop()
    await asyncio.sleep(0)  # the abort is sent in the background
    assert texts == ["Hel"] and not w1.opened  # the break after a stop is the worker obeying it
    assert workers.aborted == [("http://w0", "c-0")]


async def test_the_request_timeout_closes_and_aborts_unfinished_choices() -> None:
    svc = service(FakeWorker("w0", delay=5.0), timeout=0.05)
    _, workers = parts(svc)
    streams = await svc.open("m", requests(2))
    with pytest.raises(RequestTimeoutError):
        await svc.collect(streams)
    await asyncio.sleep(0)
    assert all(s.closed for s in workers.streams)
    assert sorted(workers.aborted) == [("http://w0", "c-0"), ("http://w0", "c-1")]


async def test_a_finished_choice_is_not_aborted_when_closed() -> None:
    svc = service(FakeWorker("w0"))
    _, workers = parts(svc)
    await svc.run("m", requests(2))
    await asyncio.sleep(0)
    assert workers.aborted == [] and all(s.closed for s in workers.streams)
