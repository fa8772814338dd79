"""The forwarder's two calls to the hub (STOW-RS, PS3.18 §10.5; the completion signal) as
outcomes, over httpx's mock transport: what each answer of the hub, and each failure to get
one, becomes — and the reason an operator reads in ``last_error``."""

from __future__ import annotations

import json
from collections.abc import Callable, Generator

import httpx
import pytest

from aifi.gateway.forward import HubClient, Part
from aifi.oauth_client import TokenError

PARTS = [Part("2.25.1", b"first instance"), Part("2.25.2", b"second instance")]
Handler = Callable[[httpx.Request], httpx.Response]


def client(handler: Handler, auth: httpx.Auth | None = None) -> HubClient:
    return HubClient(
        httpx.Client(base_url="http://hub.test", transport=httpx.MockTransport(handler), auth=auth)
    )


def store_response(referenced: list[str], failed: list[tuple[str, int]]) -> bytes:
    module: dict[str, object] = {}
    if referenced:
        module["00081199"] = {
            "vr": "SQ",
            "Value": [{"00081155": {"vr": "UI", "Value": [uid]}} for uid in referenced],
        }
    if failed:
        module["00081198"] = {
            "vr": "SQ",
            "Value": [
                {
                    "00081155": {"vr": "UI", "Value": [uid]},
                    "00081197": {"vr": "US", "Value": [code]},
                }
                for uid, code in failed
            ],
        }
    return json.dumps(module).encode()


def test_one_multipart_related_request_with_every_part() -> None:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, content=store_response(["2.25.1", "2.25.2"], []))

    outcomes = client(handler).store(PARTS)
    assert [o.delivered for o in outcomes] == [True, True]
    (request,) = seen
    assert request.method == "POST" and request.url.path == "/dicomweb/studies"
    assert request.headers["accept"] == "application/dicom+json"
    content_type = request.headers["content-type"]
    assert content_type.startswith('multipart/related; type="application/dicom"; boundary=')
    boundary = content_type.split("boundary=")[1].encode()
    body = request.content
    assert body.startswith(b"--" + boundary + b"\r\nContent-Type: application/dicom\r\n\r\n")
    assert body.count(b"--" + boundary + b"\r\n") == 2
    assert body.endswith(b"second instance\r\n--" + boundary + b"--\r\n")
    assert b"\r\n\r\nfirst instance\r\n--" + boundary in body


def test_a_partial_answer_gives_each_instance_its_fate() -> None:
    body = store_response(["2.25.1"], [("2.25.2", 0xA700)])
    outcomes = client(lambda r: httpx.Response(202, content=body)).store(PARTS)
    stored, busy = outcomes
    assert stored.delivered
    assert not busy.delivered and busy.retryable and "0xA700" in busy.reason


def test_a_refusal_for_good_carries_the_failure_reason_and_warning() -> None:
    body = store_response([], [("2.25.1", 0xC411), ("2.25.2", 0xC411)])
    headers = {"Warning": "299 hub: Patient Identity Removed (0012,0062) is not YES"}
    outcomes = client(lambda r: httpx.Response(409, content=body, headers=headers)).store(PARTS)
    assert len(outcomes) == len(PARTS)  # one for each instance
    for outcome in outcomes:
        assert not outcome.delivered and not outcome.retryable
        assert "0xC411" in outcome.reason and "Patient Identity Removed" in outcome.reason
        assert "the hub at http://hub.test" in outcome.reason


@pytest.mark.parametrize("status", [408, 429, 503, 504])
def test_transient_statuses_are_retried(status: int) -> None:
    response = httpx.Response(status, headers={"Retry-After": "30"})
    outcomes = client(lambda r: response).store(PARTS)
    assert len(outcomes) == len(PARTS)  # one for each instance
    assert all(o.retryable and not o.delivered for o in outcomes)
    assert all(f"HTTP {status}" in o.reason and "Retry-After: 30" in o.reason for o in outcomes)


@pytest.mark.parametrize("status", [500, 502])
def test_a_failing_hub_or_proxy_is_retried_not_blamed_on_the_instances(status: int) -> None:
    outcomes = client(lambda r: httpx.Response(status, text="Bad Gateway")).store(PARTS)
    assert len(outcomes) == len(PARTS)  # one for each instance
    assert all(o.retryable and not o.delivered for o in outcomes)
    assert all(f"failed on STOW-RS (HTTP {status}" in o.reason for o in outcomes)


@pytest.mark.parametrize(
    ("status", "words"), [(401, "credentials"), (403, "dicomweb.write and worklist.requester")]
)
def test_401_and_403_are_retried_and_say_what_to_fix(status: int, words: str) -> None:
    outcomes = client(lambda r: httpx.Response(status)).store(PARTS)
    assert len(outcomes) == len(PARTS)  # one for each instance
    assert all(o.retryable and f"HTTP {status}" in o.reason and words in o.reason for o in outcomes)
    signal = client(lambda r: httpx.Response(status)).complete("2.25.9")
    assert signal.retryable and not signal.done and words in signal.reason


@pytest.mark.parametrize(
    ("error", "words"),
    [
        (httpx.ConnectError("connection refused"), "cannot reach the hub at http://hub.test"),
        (httpx.ReadTimeout("slow"), "did not answer STOW-RS in time (ReadTimeout)"),
    ],
)
def test_no_answer_is_retried(error: Exception, words: str) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise error

    outcomes = client(handler).store(PARTS)
    assert len(outcomes) == len(PARTS)  # one for each instance
    assert all(o.retryable and words in o.reason for o in outcomes)


def test_a_token_endpoint_refusal_is_retried_with_the_reason() -> None:
    class Refused(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response]:
            raise TokenError("token request refused (401) invalid_client: unknown client")
            yield request

    outcomes = client(lambda r: httpx.Response(200), auth=Refused()).store(PARTS)
    assert len(outcomes) == len(PARTS)  # one for each instance
    assert all(o.retryable and "invalid_client" in o.reason for o in outcomes)
    assert all("--credentials" in o.reason for o in outcomes)


def test_the_completion_signal_answers() -> None:
    paths: list[str] = []

    def answer(status: int) -> Handler:
        def handler(request: httpx.Request) -> httpx.Response:
            paths.append(request.url.path)
            return httpx.Response(status, json={"status": "x"})

        return handler

    done = client(answer(202)).complete("2.25.7")
    assert done.done and paths == ["/api/v1/studies/2.25.7/complete"]
    unknown = client(answer(404)).complete("2.25.7")
    assert not unknown.done and not unknown.retryable and "no such study" in unknown.reason
    busy = client(answer(503)).complete("2.25.7")
    assert busy.retryable and "HTTP 503" in busy.reason
    broken = client(answer(500)).complete("2.25.7")
    assert broken.retryable and "HTTP 500" in broken.reason
    refused = client(answer(400)).complete("2.25.7")
    assert not refused.retryable and "HTTP 400" in refused.reason


def test_nothing_to_store_sends_nothing() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        raise AssertionError("no request expected")

    assert client(handler).store([]) == []
