"""The sender through its Transport seam: what it sends and how it reads each answer, no sockets."""

from __future__ import annotations

import asyncio

from relay.delivery.sender import Sender
from relay.delivery.transport import Reply
from relay.errors import NoAnswer
from relay.store.layout import SealedBatch


class Scripted:
    """A Transport that records each request and answers from a script (a Reply or a NoAnswer)."""

    def __init__(self, *answers: Reply | NoAnswer) -> None:
        self.answers = list(answers)
        self.requests: list[tuple[str, bytes, dict[str, str]]] = []

    async def post(self, url: str, body: bytes, headers: dict[str, str]) -> Reply:
        self.requests.append((url, body, headers))
        answer = self.answers.pop(0)
        if isinstance(answer, NoAnswer):
            raise answer
        return answer


BATCH = SealedBatch(2, b"gzipped", "gzip", 0, 0.0)


def send(*answers: Reply | NoAnswer) -> tuple[Scripted, object]:
    transport = Scripted(*answers)
    delivery = asyncio.run(Sender(transport, "http://up/v1/logs/custom", "k1").send(BATCH))
    return transport, delivery


def test_posts_the_sealed_body_with_key_and_encoding() -> None:
    transport, delivery = send(Reply(200, b'{"errors": []}'))
    url, body, headers = transport.requests[0]
    assert (url, body) == ("http://up/v1/logs/custom", b"gzipped")
    assert headers == {"x-api-key": "k1", "Content-Type": "application/json", "Content-Encoding": "gzip"}
    assert delivery.status == 200 and delivery.error is None and delivery.upstream_errors == []


def test_a_200_reports_the_entries_upstream_skipped() -> None:
    _, delivery = send(Reply(200, b'{"errors": ["entry 1: bad ip"]}'))
    assert delivery.upstream_errors == ["entry 1: bad ip"]


def test_an_error_status_carries_the_detail_and_retry_after() -> None:
    _, delivery = send(Reply(429, b'{"detail": "slow down"}', retry_after="7"))
    assert (delivery.status, delivery.error, delivery.retry_after) == (429, "slow down", "7")


def test_a_non_json_error_body_is_quoted_cut_short() -> None:
    _, delivery = send(Reply(502, b"<html>" + b"x" * 1000))
    assert delivery.status == 502 and delivery.error is not None and len(delivery.error) == 300


def test_no_answer_is_status_none_with_the_reason() -> None:
    _, delivery = send(NoAnswer("timed out"))
    assert delivery.status is None and delivery.error == "timed out"
