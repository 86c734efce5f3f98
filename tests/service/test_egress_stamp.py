"""egress stamps what it sends: the ref header before the stored message and, with a bounce
domain, a VERP return path (real Dispatch stream, spool and SMTP sink)."""

from __future__ import annotations

import email.parser
import email.policy
from collections.abc import Iterator
from pathlib import Path

import pytest

from petrel.correlation import Ref, Verp, decode_ref, parse_verp, ref_header
from tests.service.test_egress_harness import EgressHarness, RecordingSink, make_body, outcomes

SECRET = "a-secret-of-sixteen+"
BOUNCES = "bounces.petrel.test"


@pytest.fixture
def sink() -> Iterator[RecordingSink]:
    with RecordingSink() as running:
        yield running


async def test_ref_header_and_verp_return_path(tmp_path: Path, sink: RecordingSink) -> None:
    body = make_body("stamped")
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address}, bounce_config={
            "ref_header": "X-Petrel-Ref", "ref_secret": SECRET, "domain": BOUNCES}) as harness:
        message_id = await harness.put(body, ["a@dest.test"], "sender@petrel.test")
        task = harness.driver.add("dest.test", ["a@dest.test"], message_id,
                                  "sender@petrel.test", tenant="acme", campaign="spring")
        null_id = await harness.put(body, ["b@dest.test"], "")
        null_task = harness.driver.add("dest.test", ["b@dest.test"], null_id, "")
        results = await harness.driver.wait_results([task, null_task])
    assert [outcomes(r) for r in results] == [
        {"a@dest.test": ("DELIVERED", 250, "2.0.0")}, {"b@dest.test": ("DELIVERED", 250, "2.0.0")}]

    [received] = sink.received_for("a@dest.test")
    ref = Ref(message_id, "acme", "spring")
    assert received.data == ref_header("X-Petrel-Ref", ref, SECRET.encode()) + body
    assert received.sender == f"sender+{message_id}=petrel.test@{BOUNCES}"
    assert parse_verp(received.sender, BOUNCES) == Verp(message_id, "sender@petrel.test")
    parsed = email.parser.BytesParser(policy=email.policy.SMTP).parsebytes(received.data)
    assert decode_ref(str(parsed["X-Petrel-Ref"]), SECRET.encode()) == ref
    assert parsed["Subject"] == "egress stamped"

    [bounce] = sink.received_for("b@dest.test")
    assert bounce.sender in ("", "<>")  # the null sender is never rewritten
    assert bounce.data.startswith(b"X-Petrel-Ref: ")


async def test_verp_off_keeps_the_sender(tmp_path: Path, sink: RecordingSink) -> None:
    async with EgressHarness(tmp_path, routing={"smarthost": sink.address}, bounce_config={
            "ref_header": "X-Petrel-Ref", "domain": BOUNCES, "verp": False}) as harness:
        result = await harness.deliver("dest.test", ["c@dest.test"])
    assert outcomes(result)["c@dest.test"][0] == "DELIVERED"
    [received] = sink.received_for("c@dest.test")
    assert received.sender == "sender@petrel.test"
    token = received.data.split(b"\r\n", 1)[0].removeprefix(b"X-Petrel-Ref: ").decode()
    assert decode_ref(token) == Ref(result.message_id)
