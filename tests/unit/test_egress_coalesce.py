"""``egress.worker.coalesce``: results and credits waiting together become one ``report``;
and the Dispatch stream's outgoing messages (``_Stream.requests``) are coalesced batches."""

from __future__ import annotations

import asyncio

from egress.worker import _Stream, coalesce
from petrel.v1 import scheduler_pb2

Request = scheduler_pb2.DispatchRequest


def hello(worker_id: str = "w1") -> Request:
    return Request(hello=scheduler_pb2.WorkerHello(worker_id=worker_id,
                                                   accepts_task_batches=True))


def credit(amount: int) -> Request:
    return Request(credit=amount)


def result(task_id: str) -> Request:
    return Request(result=scheduler_pb2.DeliveryResult(
        task_id=task_id, message_id=f"m-{task_id}", site="route:127.0.0.1:25",
        peer="sink [127.0.0.1]:25"))


def kinds(requests: list[Request]) -> list[str | None]:
    return [r.WhichOneof("kind") for r in requests]


def task_ids(report: scheduler_pb2.DispatchReport) -> list[str]:
    return [r.task_id for r in report.results]


def test_empty() -> None:
    assert coalesce([]) == []


def test_results_kept_in_order_and_credits_summed() -> None:
    requests = [result("a"), credit(1), result("b"), credit(1), result("c"), credit(3)]
    out = coalesce(requests)
    assert kinds(out) == ["report"]
    report = out[0].report
    assert task_ids(report) == ["a", "b", "c"]
    assert report.credit == 5
    assert list(report.results) == [r.result for r in requests if r.HasField("result")]


def test_results_without_credit_make_a_report_with_no_credit() -> None:
    out = coalesce([result("a"), result("b")])
    assert kinds(out) == ["report"]
    assert (task_ids(out[0].report), out[0].report.credit) == (["a", "b"], 0)


def test_credits_alone_are_summed() -> None:
    out = coalesce([credit(2), credit(0), credit(7)])
    assert kinds(out) == ["report"]
    assert (task_ids(out[0].report), out[0].report.credit) == ([], 9)


def test_hello_kept_first_and_untouched() -> None:
    first = hello()
    original = Request()
    original.CopyFrom(first)
    out = coalesce([first, credit(4)])
    assert kinds(out) == ["hello", "report"]
    assert out[0] is first and out[0] == original
    assert out[1].report.credit == 4 and not out[1].report.results


def test_run_without_results_or_credit_is_unchanged() -> None:
    first = hello("w1")
    already = Request(report=scheduler_pb2.DispatchReport(credit=2))
    requests = [first, already]
    out = coalesce(requests)
    assert out == requests
    assert all(a is b for a, b in zip(out, requests, strict=True))


def test_report_takes_the_place_of_the_first_result_or_credit() -> None:
    first, second = hello("w1"), hello("w2")
    out = coalesce([first, credit(2), second, result("a"), credit(1)])
    assert kinds(out) == ["hello", "report", "hello"]
    assert out[0] is first and out[2] is second
    assert (task_ids(out[1].report), out[1].report.credit) == (["a"], 3)

    out = coalesce([result("a"), first, result("b")])
    assert kinds(out) == ["report", "hello"]
    assert task_ids(out[0].report) == ["a", "b"] and out[1] is first


def test_inputs_are_not_modified() -> None:
    requests = [result("a"), credit(1), result("b")]
    copies = [Request() for _ in requests]
    for copy, request in zip(copies, requests, strict=True):
        copy.CopyFrom(request)
    coalesce(requests)
    assert requests == copies


async def test_stream_sends_waiting_requests_as_one_report_after_the_hello() -> None:
    stream = _Stream()
    stream.send(hello())
    stream.send(credit(3))
    stream.send(result("a"))
    stream.send(credit(1))
    sent: list[Request] = []
    messages = stream.requests()
    sent.append(await anext(messages))
    sent.append(await anext(messages))
    assert kinds(sent) == ["hello", "report"]
    assert (task_ids(sent[1].report), sent[1].report.credit) == (["a"], 4)

    # what arrives later travels in a later message
    async def next_message() -> Request:
        return await anext(messages)

    later = asyncio.create_task(next_message())
    await asyncio.sleep(0)
    assert not later.done()
    stream.send(result("b"))
    stream.send(credit(1))
    message = await asyncio.wait_for(later, 5)
    assert (task_ids(message.report), message.report.credit) == (["b"], 1)

    stream.send(result("c"))
    stream.close()
    assert not stream.send(credit(1))
    rest = [m async for m in messages]
    assert kinds(rest) == ["report"] and task_ids(rest[0].report) == ["c"]
