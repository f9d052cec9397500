"""AWS Bedrock as a backend kind, against the mock playing its runtime.

The mock that demands a key (`mock_b`) plays bedrock-runtime: Converse and
ConverseStream (in AWS event-stream framing) under /model/MODEL/, each call
SigV4-signed with its key as the secret access key, the signature
recomputed and compared by botocore. The router signs with the credentials
of the standard AWS chain (here the environment variables); the official
SDKs are the clients, and every protocol reaches Bedrock through chat.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from openai.types.chat import ChatCompletionFunctionToolParam

from router_core.config_codec import ConfigInvalid
from router_server import aws
from router_server.config_file import load
from router_server.mock_backend import MockBackendProcess
from router_server.process import RouterProcess

from tests.helpers.support import ACME_KEY, BACKEND_SECRET, write_config
from tests.helpers.usage_support import schema_errors, wait_ledger
from tests.system.providers.support import oai, root, served

RouterFactory = Callable[..., RouterProcess]
Mocks = tuple[MockBackendProcess, MockBackendProcess]
MODEL = "anthropic.claude-3-5-sonnet-20240620-v1:0"
CONVERSE = "/model/anthropic.claude-3-5-sonnet-20240620-v1:0/converse"
STREAM = CONVERSE + "-stream"
LOOKUP: ChatCompletionFunctionToolParam = {
    "type": "function",
    "function": {
        "name": "lookup",
        "parameters": {"type": "object", "properties": {"words": {"type": "string"}}},
    },
}


def aws_env(tmp_path: Path, secret: str | None = BACKEND_SECRET) -> dict[str, str]:
    """The standard chain, kept to what the test gives it: no files, no instance role."""
    env = {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
        "AWS_ACCESS_KEY_ID": "",
        "AWS_SECRET_ACCESS_KEY": "",
    }
    if secret is not None:
        env |= {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": secret}
    return env


def bedrock_config(config_data: dict[str, Any], mocks: Mocks) -> dict[str, Any]:
    data = copy.deepcopy(config_data)
    data["backends"]["bedrock"] = {
        "kind": "bedrock",
        "base_url": root(mocks[1]),
        "bedrock": {"region": "us-east-1"},
        "connect_timeout_s": 1,
        "read_timeout_s": 5,
    }
    data["models"]["sonnet"] = {"backends": [{"backend": "bedrock", "model": MODEL}]}
    data["models"]["sonnet-or-local"] = {"backends": [
        {"backend": "bedrock", "model": MODEL},
        {"backend": "mock-a", "model": "mock-gpt", "tier": 1},
    ]}  # fmt: skip
    data["health"] = {**data["health"], "probe_interval_s": 3600}
    return data


@pytest.fixture
def router(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> RouterProcess:
    return start_router(bedrock_config(config_data, mocks), env=aws_env(tmp_path))


def test_chat_is_signed_and_sent_to_converse(
    router: RouterProcess, mocks: Mocks, tmp_path: Path
) -> None:
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="sonnet",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
            max_tokens=4,
        )
    assert reply.choices[0].message.content == "mock token alpha beta"
    assert (reply.model, reply.choices[0].finish_reason) == ("sonnet", "stop")
    assert served(mocks[1], CONVERSE) == 1
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert schema_errors(record) == []
    assert (record["backend"], record["backend_model"]) == ("bedrock", MODEL)
    assert (record["usage"]["completion_tokens"], record["usage"]["estimated"]) == (4, False)
    assert BACKEND_SECRET not in json.dumps(record)


@pytest.mark.parametrize("include_usage", [True, False])
def test_chat_stream_from_event_stream_frames(
    router: RouterProcess, mocks: Mocks, tmp_path: Path, include_usage: bool
) -> None:
    with oai(router) as client:
        chunks = list(
            client.chat.completions.create(
                model="sonnet",
                messages=[{"role": "user", "content": "hi"}],
                max_tokens=5,
                stream=True,
                stream_options={"include_usage": True} if include_usage else None,
            )
        )
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "mock token alpha beta gamma"
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert len([c for c in chunks if c.usage is not None]) == (1 if include_usage else 0)
    assert served(mocks[1], STREAM) == 1
    (record,) = wait_ledger(tmp_path / "router-0-data", 1)
    assert (record["outcome"], record["usage"]["completion_tokens"]) == ("success", 5)


@pytest.mark.parametrize("stream", [False, True])
def test_tool_calls_become_tool_use_and_back(
    router: RouterProcess, mocks: Mocks, stream: bool
) -> None:
    asked: dict[str, Any] = {
        "model": "sonnet",
        "messages": [{"role": "user", "content": "look it up"}],
        "max_tokens": 3,
        "tools": [LOOKUP],
        "tool_choice": "required",
    }
    with oai(router) as client:
        if stream:
            chunks = list(client.chat.completions.create(**asked, stream=True))
            calls = [t for c in chunks if c.choices for t in c.choices[0].delta.tool_calls or ()]
            name = next(t.function.name for t in calls if t.function and t.function.name)
            arguments = "".join(t.function.arguments or "" for t in calls if t.function)
            call_id = next(t.id for t in calls if t.id)
            finish = [c.choices[0].finish_reason for c in chunks if c.choices][-1]
        else:
            reply = client.chat.completions.create(**asked)
            tool_calls = reply.choices[0].message.tool_calls
            assert tool_calls is not None
            (whole,) = tool_calls
            assert whole.type == "function"
            name, arguments = whole.function.name, whole.function.arguments
            call_id, finish = whole.id, reply.choices[0].finish_reason
        assert (name, json.loads(arguments)) == ("lookup", {"words": "mock token alpha"})
        assert finish == "tool_calls"
        answer = client.chat.completions.create(
            model="sonnet",
            max_tokens=2,
            tools=[LOOKUP],
            messages=[
                {"role": "user", "content": "look it up"},
                {"role": "assistant", "content": None, "tool_calls": [
                    {"id": call_id, "type": "function",
                     "function": {"name": "lookup", "arguments": arguments}}]},
                {"role": "tool", "tool_call_id": call_id, "content": "found"},
            ],
        )  # fmt: skip
    assert answer.choices[0].message.content == "mock token"


def test_messages_and_responses_reach_bedrock_through_chat(
    router: RouterProcess, mocks: Mocks
) -> None:
    asked: dict[str, Any] = {"max_tokens": 3, "messages": [{"role": "user", "content": "hi"}]}
    with (
        anthropic.Anthropic(api_key=ACME_KEY, base_url=router.url, max_retries=0) as claude,
        claude.messages.stream(model="sonnet", **asked) as stream,
    ):
        streamed = stream.get_final_message()
    assert streamed.content[0].type == "text"
    assert streamed.content[0].text == "mock token alpha"
    with oai(router) as client:
        response = client.responses.create(model="sonnet", input="hi", max_output_tokens=2)
    assert response.output_text == "mock token"
    assert (served(mocks[1], STREAM), served(mocks[1], CONVERSE)) == (1, 1)


def test_throttling_fails_over(router: RouterProcess, mocks: Mocks) -> None:
    mock_a, bedrock = mocks
    bedrock.configure(error_rate=1.0, error_status=429)
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="sonnet-or-local", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.choices[0].message.content == "mock token"
    assert (served(bedrock, CONVERSE), served(mock_a, "/v1/chat/completions")) == (1, 1)


def test_a_wrong_secret_is_refused_by_the_signature_check_and_fails_over(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    router = start_router(
        bedrock_config(config_data, mocks), env=aws_env(tmp_path, secret="not-the-secret")
    )
    mock_a, bedrock = mocks
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="sonnet-or-local", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.choices[0].message.content == "mock token"
    assert bedrock.stats()["refused_signatures"] == 1
    assert (served(bedrock, CONVERSE), served(mock_a, "/v1/chat/completions")) == (0, 1)


def test_no_credentials_sends_nothing_and_fails_over(
    start_router: RouterFactory, config_data: dict[str, Any], mocks: Mocks, tmp_path: Path
) -> None:
    router = start_router(bedrock_config(config_data, mocks), env=aws_env(tmp_path, secret=None))
    bedrock = mocks[1]
    with oai(router) as client:
        reply = client.chat.completions.create(
            model="sonnet-or-local", messages=[{"role": "user", "content": "hi"}], max_tokens=2
        )
    assert reply.choices[0].message.content == "mock token"
    assert served(bedrock, CONVERSE) == 0
    assert bedrock.stats()["refused_signatures"] == 0  # nothing was sent to refuse


def test_the_mock_checks_signatures_as_aws_does(mocks: Mocks) -> None:
    url = root(mocks[1]) + CONVERSE
    body = json.dumps({"messages": [{"role": "user", "content": [{"text": "hi"}]}]}).encode()

    def signed(secret: str) -> dict[str, str]:
        request = AWSRequest(
            method="POST", url=url, data=body, headers={"content-type": "application/json"}
        )
        SigV4Auth(Credentials("AKIDEXAMPLE", secret), "bedrock", "us-east-1").add_auth(request)
        return dict(request.headers.items())

    unsigned = httpx.post(url, content=body, headers={"content-type": "application/json"})
    assert unsigned.status_code == 403
    assert unsigned.headers["x-amzn-errortype"] == "MissingAuthenticationTokenException"
    assert mocks[1].stats()["refused_signatures"] == 1
    wrong = httpx.post(url, content=body, headers=signed("wrong"))
    assert wrong.status_code == 403
    assert wrong.headers["x-amzn-errortype"] == "InvalidSignatureException"
    # A body changed after signing breaks the signature too.
    tampered = httpx.post(url, content=body.replace(b"hi", b"ho"), headers=signed(BACKEND_SECRET))
    assert tampered.status_code == 403
    good = httpx.post(url, content=body, headers=signed(BACKEND_SECRET))
    assert good.status_code == 200, good.text
    assert good.json()["stopReason"] == "end_turn"


def test_a_missing_extra_is_a_start_up_problem_naming_it(
    config_data: dict[str, Any], mocks: Mocks, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(aws, "available", lambda: False)
    path = write_config(tmp_path / "router.yaml", bedrock_config(config_data, mocks))
    with pytest.raises(ConfigInvalid) as caught:
        load(path, env={"ROUTER_TEST_MOCK_B_KEY": "x"})
    problems = {p.path: p.message for p in caught.value.problems}
    assert "inference-router-server[bedrock]" in problems["backends.bedrock.kind"]
