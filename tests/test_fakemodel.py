"""The fake model server: every endpoint, streaming and not, driven with urllib/http.client."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from aimterm.testing import FakeModel, ToolCall, default_reply

LAUNCHER = Path(__file__).parent / "fakemodel_server.py"
REPO = Path(__file__).resolve().parent.parent


# --- helpers ------------------------------------------------------------------------------------


def _request(
    fm: FakeModel,
    path: str,
    body: Any = None,
    method: str | None = None,
    headers: dict[str, str] | None = None,
) -> urllib.request.Request:
    data = json.dumps(body).encode() if body is not None else None
    hdrs = {"Content-Type": "application/json", **(headers or {})}
    return urllib.request.Request(fm.url + path, data=data, headers=hdrs, method=method)


def call(fm: FakeModel, path: str, body: Any = None, method: str | None = None, **kw: Any) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(_request(fm, path, body, method, **kw), timeout=10) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else None
    except urllib.error.HTTPError as err:
        with err:
            return err.code, json.loads(err.read())


def parse_sse(lines: Iterator[bytes]) -> list[tuple[str | None, str]]:
    events: list[tuple[str | None, str]] = []
    event: str | None = None
    data: list[str] = []
    for raw in lines:
        line = raw.decode().rstrip("\r\n")
        if line == "":
            if data:
                events.append((event, "\n".join(data)))
            event, data = None, []
        elif line.startswith(":"):
            continue
        else:
            name, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if name == "event":
                event = value
            elif name == "data":
                data.append(value)
    if data:
        events.append((event, "\n".join(data)))
    return events


def stream(fm: FakeModel, path: str, body: Any) -> tuple[list[tuple[str | None, Any]], float, str]:
    """POST and parse the SSE answer: ([(event, json-or-[DONE])], seconds to first byte, content type)."""
    t0 = time.monotonic()
    with urllib.request.urlopen(_request(fm, path, body), timeout=10) as resp:
        first = resp.readline()
        ttfb = time.monotonic() - t0
        ctype = resp.headers.get("Content-Type", "")

        def lines() -> Iterator[bytes]:
            yield first
            yield from resp

        events = parse_sse(lines())
    out = [(ev, data if data == "[DONE]" else json.loads(data)) for ev, data in events]
    return out, ttfb, ctype


def chat_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-fake",
        "messages": [{"role": "system", "content": "You are aider."}, {"role": "user", "content": prompt}],
        **extra,
    }


def responses_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "model": "gpt-5-codex",
        "instructions": "You are Codex.",
        "stream": True,
        "input": [
            {
                "type": "message",
                "role": "user",
                "content": [
                    {
                        "type": "input_text",
                        "text": "<environment_context>\n  <cwd>/w</cwd>\n</environment_context>",
                    }
                ],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": prompt}]},
        ],
        **extra,
    }


def anthropic_body(content: Any, **extra: Any) -> dict[str, Any]:
    return {
        "model": "claude-fake",
        "max_tokens": 1024,
        "system": [{"type": "text", "text": "You are Claude Code."}],
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def gemini_body(prompt: str, **extra: Any) -> dict[str, Any]:
    return {
        "contents": [
            {"role": "user", "parts": [{"text": "This is the Gemini CLI. We are setting up the context."}]},
            {"role": "model", "parts": [{"text": "Got it. Thanks for the context!"}]},
            {"role": "user", "parts": [{"text": prompt}]},
        ],
        "systemInstruction": {"parts": [{"text": "You are Gemini CLI."}]},
        **extra,
    }


@pytest.fixture
def fm() -> Iterator[FakeModel]:
    with FakeModel() as server:
        yield server
    assert server.errors == []


# --- OpenAI chat completions --------------------------------------------------------------------


def test_chat_completions_non_streaming(fm: FakeModel) -> None:
    status, data = call(fm, "/v1/chat/completions", chat_body("fix the bug in foo.py"))
    assert status == 200
    assert data["object"] == "chat.completion"
    choice = data["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"] == {"role": "assistant", "content": fm.expected_reply("fix the bug in foo.py")}
    assert (
        data["usage"]["total_tokens"] == data["usage"]["prompt_tokens"] + data["usage"]["completion_tokens"]
    )
    rec = fm.requests[-1]
    assert (rec.api, rec.endpoint, rec.streamed, rec.prompt) == (
        "openai-chat",
        "chat",
        False,
        "fix the bug in foo.py",
    )
    assert rec.method == "POST" and rec.path == "/v1/chat/completions" and rec.body == rec.json


def test_chat_completions_streaming_with_usage(fm: FakeModel) -> None:
    prompt = "please explain what this repository does in a few words"
    body = chat_body(prompt, stream=True, stream_options={"include_usage": True})
    events, _, ctype = stream(fm, "/chat/completions", body)
    assert ctype.startswith("text/event-stream")
    assert events[-1] == (None, "[DONE]")
    chunks = [d for _, d in events[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"]["role"] == "assistant"
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])
    assert text == fm.expected_reply(prompt) == default_reply(prompt)
    assert len([c for c in chunks if c["choices"] and c["choices"][0]["delta"].get("content")]) >= 3
    finals = [c for c in chunks if c["choices"] and c["choices"][0]["finish_reason"]]
    assert [c["choices"][0]["finish_reason"] for c in finals] == ["stop"]
    assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["completion_tokens"] > 0
    assert fm.requests[-1].streamed is True


def test_chat_streaming_without_usage_has_no_usage_chunk(fm: FakeModel) -> None:
    events, _, _ = stream(fm, "/v1/chat/completions", chat_body("hi", stream=True))
    chunks = [d for _, d in events[:-1]]
    assert all(c["choices"] for c in chunks) and all("usage" not in c for c in chunks)
    assert chunks[-1]["choices"][0]["finish_reason"] == "stop"


def test_replies_are_deterministic_across_servers() -> None:
    answers = []
    for _ in range(2):
        with FakeModel() as server:
            answers.append(call(server, "/v1/chat/completions", chat_body("same prompt"))[1])
    assert answers[0]["choices"] == answers[1]["choices"]
    assert answers[0]["choices"][0]["message"]["content"] == default_reply("same prompt")
    assert default_reply("same prompt").startswith("FAKE-REPLY ")


def test_custom_reply_and_chunk_words() -> None:
    with FakeModel(reply=lambda p: p.upper() + " done", stream_chunk_words=1) as server:
        events, _, _ = stream(server, "/v1/chat/completions", chat_body("a b c", stream=True))
        pieces = [d["choices"][0]["delta"].get("content") for _, d in events[1:-2]]
        assert pieces == ["A", " B", " C", " done"]
        assert server.expected_reply("a b c") == "A B C done"


def test_models_list(fm: FakeModel) -> None:
    status, data = call(fm, "/v1/models")
    assert status == 200 and data["object"] == "list" and len(data["data"]) == 1
    assert data["data"][0]["id"] == "fake-model"
    assert data["models"][0]["name"] == "models/fake-model"
    status, one = call(fm, "/v1/models/other")
    assert status == 200 and one["id"] == "other"
    assert [r.endpoint for r in fm.requests] == ["models", "models"]


# --- OpenAI responses API -----------------------------------------------------------------------

TEXT_EVENTS = [
    "response.created",
    "response.in_progress",
    "response.output_item.added",
    "response.content_part.added",
    "response.output_text.delta",
    "response.output_text.done",
    "response.content_part.done",
    "response.output_item.done",
    "response.completed",
]


def test_responses_streaming(fm: FakeModel) -> None:
    prompt = "rename the helper function and update all the callers"
    events, _, _ = stream(fm, "/v1/responses", responses_body(prompt))
    kinds = [ev for ev, _ in events]
    deduped = [k for i, k in enumerate(kinds) if i == 0 or kinds[i - 1] != k]
    assert deduped == TEXT_EVENTS
    assert kinds.count("response.output_text.delta") >= 3
    assert all(ev == data["type"] for ev, data in events)
    assert [d["sequence_number"] for _, d in events] == list(range(len(events)))
    item_id = events[2][1]["item"]["id"]
    deltas = [d for ev, d in events if ev == "response.output_text.delta"]
    for d in deltas:
        assert (d["item_id"], d["output_index"], d["content_index"]) == (item_id, 0, 0)
    reply = fm.expected_reply(prompt)
    assert "".join(d["delta"] for d in deltas) == reply
    by_type = {ev: d for ev, d in events}
    assert by_type["response.output_text.done"]["text"] == reply
    assert by_type["response.content_part.done"]["part"] == {
        "type": "output_text",
        "text": reply,
        "annotations": [],
    }
    done_item = by_type["response.output_item.done"]["item"]
    assert done_item["type"] == "message" and done_item["status"] == "completed"
    completed = events[-1][1]["response"]
    assert completed["status"] == "completed" and completed["output"] == [done_item]
    usage = completed["usage"]
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"] > 0
    assert events[0][1]["response"]["id"] == completed["id"]
    rec = fm.requests[-1]
    assert rec.api == "openai-responses" and rec.prompt == prompt and rec.streamed


def test_responses_non_streaming(fm: FakeModel) -> None:
    status, data = call(fm, "/v1/responses?x=1", responses_body("hello codex", stream=False))
    assert status == 200 and data["object"] == "response" and data["status"] == "completed"
    assert data["output"][0]["content"][0]["text"] == fm.expected_reply("hello codex")
    assert data["usage"]["output_tokens"] > 0
    assert fm.requests[-1].streamed is False


def test_responses_string_input(fm: FakeModel) -> None:
    status, data = call(fm, "/responses", {"model": "m", "input": "plain string"})
    assert data["output"][0]["content"][0]["text"] == default_reply("plain string")


# --- Anthropic messages -------------------------------------------------------------------------


def test_anthropic_streaming(fm: FakeModel) -> None:
    prompt = "add a docstring to every public function"
    events, _, _ = stream(fm, "/v1/messages?beta=true", anthropic_body(prompt, stream=True))
    kinds = [ev for ev, _ in events]
    assert kinds[:3] == ["message_start", "content_block_start", "ping"]
    assert kinds[-3:] == ["content_block_stop", "message_delta", "message_stop"]
    assert set(kinds[3:-3]) == {"content_block_delta"} and len(kinds[3:-3]) >= 3
    assert all(ev == data["type"] for ev, data in events)
    start = events[0][1]["message"]
    assert start["role"] == "assistant" and start["content"] == [] and start["usage"]["input_tokens"] > 0
    assert events[1][1]["content_block"] == {"type": "text", "text": ""}
    deltas = [d["delta"] for ev, d in events if ev == "content_block_delta"]
    assert {d["type"] for d in deltas} == {"text_delta"}
    assert "".join(d["text"] for d in deltas) == fm.expected_reply(prompt)
    msg_delta = events[-2][1]
    assert msg_delta["delta"]["stop_reason"] == "end_turn" and msg_delta["usage"]["output_tokens"] > 0
    rec = fm.requests[-1]
    assert rec.path == "/v1/messages" and rec.query == {"beta": "true"} and rec.api == "anthropic"


def test_anthropic_non_streaming_and_count_tokens(fm: FakeModel) -> None:
    status, data = call(fm, "/v1/messages", anthropic_body("hello claude"))
    assert status == 200 and data["type"] == "message" and data["stop_reason"] == "end_turn"
    assert data["content"] == [{"type": "text", "text": fm.expected_reply("hello claude")}]
    status, count = call(fm, "/v1/messages/count_tokens?beta=true", anthropic_body("hello claude"))
    assert status == 200 and isinstance(count["input_tokens"], int) and count["input_tokens"] > 0
    assert fm.requests[-1].endpoint == "count_tokens"


def test_root_head_and_get(fm: FakeModel) -> None:
    with urllib.request.urlopen(urllib.request.Request(fm.url + "/", method="HEAD"), timeout=5) as resp:
        assert resp.status == 200 and resp.read() == b""
    status, _ = call(fm, "/")
    assert status == 200
    assert [(r.method, r.endpoint) for r in fm.requests] == [("HEAD", "root"), ("GET", "root")]


# --- Gemini -------------------------------------------------------------------------------------

GEM = "/v1beta/models/gemini-2.5-pro"


def test_gemini_generate_content(fm: FakeModel) -> None:
    status, data = call(fm, GEM + ":generateContent", gemini_body("list the files"))
    assert status == 200
    cand = data["candidates"][0]
    assert cand["content"] == {"role": "model", "parts": [{"text": fm.expected_reply("list the files")}]}
    assert cand["finishReason"] == "STOP"
    assert data["usageMetadata"]["totalTokenCount"] > 0
    rec = fm.requests[-1]
    assert rec.api == "gemini" and not rec.streamed and rec.prompt == "list the files"


def test_gemini_stream_sse(fm: FakeModel) -> None:
    prompt = "write a haiku about terminals and ptys please"
    events, _, ctype = stream(fm, GEM + ":streamGenerateContent?alt=sse", gemini_body(prompt))
    assert ctype.startswith("text/event-stream") and len(events) >= 3
    assert all(ev is None for ev, _ in events)
    cands = [d["candidates"][0] for _, d in events]
    assert "".join(c["content"]["parts"][0]["text"] for c in cands) == fm.expected_reply(prompt)
    assert [c.get("finishReason") for c in cands] == [None] * (len(cands) - 1) + ["STOP"]
    assert all(c["content"]["role"] == "model" for c in cands)
    assert all("usageMetadata" in d for _, d in events)
    assert fm.requests[-1].streamed and fm.requests[-1].query["alt"] == "sse"


def test_gemini_stream_json_array(fm: FakeModel) -> None:
    with urllib.request.urlopen(
        _request(fm, GEM + ":streamGenerateContent", gemini_body("array please")), timeout=5
    ) as r:
        data = json.loads(r.read())
    assert isinstance(data, list) and len(data) >= 1
    text = "".join(d["candidates"][0]["content"]["parts"][0]["text"] for d in data)
    assert text == fm.expected_reply("array please")
    assert data[-1]["candidates"][0]["finishReason"] == "STOP"


def test_gemini_count_tokens_and_models(fm: FakeModel) -> None:
    status, data = call(fm, GEM + ":countTokens", gemini_body("x"))
    assert status == 200 and data["totalTokens"] > 0
    status, models = call(fm, "/v1beta/models")
    assert status == 200 and models["models"][0]["name"].startswith("models/")
    assert fm.requests[-1].api == "gemini"


def test_gemini_router_json_call(fm: FakeModel) -> None:
    body = gemini_body("refactor the parser", generationConfig={"responseMimeType": "application/json"})
    _, data = call(fm, "/v1beta/models/gemini-2.5-flash-lite:generateContent", body)
    answer = json.loads(data["candidates"][0]["content"]["parts"][0]["text"])
    assert answer == {"reasoning": "simple", "model_choice": "flash"}
    assert fm.requests[-1].endpoint == "json" and fm.requests[-1].answer_kind == "json"

    schema = {
        "type": "object",
        "properties": {
            "reasoning": {"type": "string"},
            "model_choice": {"type": "string", "enum": ["pro", "flash"]},
            "next_speaker": {"type": "string", "enum": ["user", "model"]},
            "score": {"type": "integer"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
        },
        "required": ["reasoning", "model_choice"],
    }
    body = gemini_body(
        "x", generationConfig={"responseMimeType": "application/json", "responseJsonSchema": schema}
    )
    _, data = call(fm, "/v1beta/models/m:generateContent", body)
    answer = json.loads(data["candidates"][0]["content"]["parts"][0]["text"])
    assert answer == {
        "reasoning": "simple",
        "model_choice": "flash",
        "next_speaker": "user",
        "score": 1,
        "ok": False,
        "tags": [],
    }

    gemini_schema = {"type": "OBJECT", "properties": {"verdict": {"type": "STRING", "enum": ["A", "B"]}}}
    body = gemini_body("x", generationConfig={"responseSchema": gemini_schema})
    events, _, _ = stream(fm, "/v1beta/models/m:streamGenerateContent?alt=sse", body)
    assert len(events) == 1
    assert json.loads(events[0][1]["candidates"][0]["content"]["parts"][0]["text"]) == {"verdict": "A"}


# --- think delay --------------------------------------------------------------------------------


def test_think_delay() -> None:
    think = 0.4
    with FakeModel(think_s=think) as server:
        t0 = time.monotonic()
        call(server, "/v1/chat/completions", chat_body("slow"))
        assert think <= time.monotonic() - t0 < think + 3
        for path, body in [
            ("/v1/messages", anthropic_body("slow", stream=True)),
            ("/v1/responses", responses_body("slow")),
            (GEM + ":streamGenerateContent?alt=sse", gemini_body("slow")),
        ]:
            _, ttfb, _ = stream(server, path, body)
            assert think <= ttfb < think + 3, path
        # Not for HEAD/GET/token counting.
        t0 = time.monotonic()
        call(server, "/v1/messages/count_tokens", anthropic_body("x"))
        call(server, "/v1/models")
        with urllib.request.urlopen(urllib.request.Request(server.url + "/", method="HEAD"), timeout=5):
            pass
        assert time.monotonic() - t0 < think


def test_request_is_recorded_while_thinking() -> None:
    with FakeModel(think_s=0.5) as server:
        started = time.monotonic()
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
        with sock:
            body = json.dumps(chat_body("busy")).encode()
            sock.sendall(
                b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            recs = server.wait_for_requests(1, timeout=5)
            assert recs[0].prompt == "busy" and time.monotonic() - started < 0.5


# --- prompt extraction --------------------------------------------------------------------------


def test_chat_prompt_from_content_parts_and_last_user(fm: FakeModel) -> None:
    body = {
        "model": "m",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "I added these files to the chat: foo.py"},
            {"role": "assistant", "content": "Ok."},
            {
                "role": "user",
                "content": [{"type": "text", "text": "  second "}, {"type": "text", "text": "part"}],
            },
        ],
    }
    _, data = call(fm, "/v1/chat/completions", body)
    assert fm.requests[-1].prompt == "second\npart"
    assert data["choices"][0]["message"]["content"] == default_reply("second\npart")


def test_anthropic_block_lists(fm: FakeModel) -> None:
    content = [
        {"type": "text", "text": "<system-reminder>\nAs you answer, use this context.\n</system-reminder>"},
        {"type": "text", "text": "  what does main.py do?  ", "cache_control": {"type": "ephemeral"}},
    ]
    _, data = call(fm, "/v1/messages", anthropic_body(content))
    assert fm.requests[-1].prompt == "what does main.py do?"
    assert data["content"][0]["text"] == default_reply("what does main.py do?")


def test_anthropic_tool_result_message_is_not_the_prompt(fm: FakeModel) -> None:
    body = anthropic_body("run the tests")
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "3 passed"},
                {"type": "text", "text": "<system-reminder>todo list empty</system-reminder>"},
            ],
        },
    ]
    _, data = call(fm, "/v1/messages", body)
    rec = fm.requests[-1]
    assert rec.prompt == "run the tests" and rec.tool_result is True
    assert data["content"][0]["text"] == default_reply("run the tests")


def test_anthropic_text_after_a_tool_result_is_a_new_prompt(fm: FakeModel) -> None:
    # Claude Code, after a refused tool call, sends the next prompt in the tool result's message.
    fm.tool_calls["edit a"] = ToolCall(kind="edit", path="/w/a.txt", content="x")
    body = anthropic_body("run the tests")
    body["messages"] += [
        {"role": "assistant", "content": [{"type": "tool_use", "id": "t1", "name": "Bash", "input": {}}]},
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "t1", "content": "rejected", "is_error": True},
                {"type": "text", "text": "<system-reminder>todo list empty</system-reminder>"},
                {"type": "text", "text": "please edit a now"},
            ],
        },
    ]
    body["tools"] = [{"name": "Write", "input_schema": {"type": "object", "properties": {
        "file_path": {"type": "string"}, "content": {"type": "string"}}}}]
    call(fm, "/v1/messages", body)
    rec = fm.requests[-1]
    assert rec.prompt == "please edit a now" and rec.tool_result is False
    assert rec.answer_kind == "tool_call" and rec.tool_args == {"file_path": "/w/a.txt", "content": "x"}


def test_gemini_last_user_content_and_function_response(fm: FakeModel) -> None:
    body = gemini_body("first question")
    body["contents"] += [
        {"role": "model", "parts": [{"text": "answer"}]},
        {"role": "user", "parts": [{"text": "second"}, {"text": "question"}]},
    ]
    call(fm, GEM + ":generateContent", body)
    assert fm.requests[-1].prompt == "second\nquestion" and not fm.requests[-1].tool_result
    body["contents"] += [
        {"role": "model", "parts": [{"functionCall": {"name": "ls", "args": {}}}]},
        {"role": "user", "parts": [{"functionResponse": {"name": "ls", "response": {"output": "a b"}}}]},
    ]
    call(fm, GEM + ":generateContent", body)
    assert fm.requests[-1].prompt == "second\nquestion" and fm.requests[-1].tool_result


def test_responses_skips_environment_context(fm: FakeModel) -> None:
    body = responses_body("do it", stream=False)
    body["input"].append(
        {
            "type": "message",
            "role": "user",
            "content": [{"type": "input_text", "text": "<environment_context>x</environment_context>"}],
        }
    )
    call(fm, "/v1/responses", body)
    assert fm.requests[-1].prompt == "do it"


@pytest.mark.parametrize(
    "wrapped",
    [
        "<user-prompt>summarise the README</user-prompt>",
        "Human: summarise the README\n\nAssistant:",
        "Context: foo.py\n\n  summarise   the\nREADME  ",
    ],
)
def test_wrapped_prompts_with_known_prompts(wrapped: str) -> None:
    known = "summarise the README"
    with FakeModel(prompts=["summarise", known, "other prompt"]) as server:
        expected = server.expected_reply(known)
        assert expected == default_reply(known)
        assert server.expected_reply(wrapped) == expected
        assert server.find_prompt(wrapped) == known
        cases: list[tuple[str, dict[str, Any], Callable[[Any], Any]]] = [
            ("/v1/chat/completions", chat_body(wrapped), lambda d: d["choices"][0]["message"]["content"]),
            (
                "/v1/messages",
                anthropic_body([{"type": "text", "text": wrapped}]),
                lambda d: d["content"][0]["text"],
            ),
            (
                "/v1/responses",
                responses_body(wrapped, stream=False),
                lambda d: d["output"][0]["content"][0]["text"],
            ),
            (
                GEM + ":generateContent",
                gemini_body(wrapped),
                lambda d: d["candidates"][0]["content"]["parts"][0]["text"],
            ),
        ]
        for path, body, get in cases:
            _, data = call(server, path, body)
            assert get(data) == expected, path
            assert server.requests[-1].prompt == known
            assert server.requests[-1].user_text == wrapped.strip()


def test_unknown_prompt_falls_back_to_text() -> None:
    with FakeModel(prompts=["known"]) as server:
        assert server.find_prompt("  something else ") == "something else"
        assert server.expected_reply("something else") == default_reply("something else")


# --- scripted tool calls ------------------------------------------------------------------------

EDIT = ToolCall(kind="edit", path="notes.txt", content="hello\n")
SHELL = ToolCall(kind="shell", command="echo hi")


def _schema(**props: str) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {k: {"type": v} for k, v in props.items()},
        "required": list(props),
    }


def test_tool_calls_openai_chat() -> None:
    tools = [
        {"type": "function", "function": {"name": "read_file", "parameters": _schema(path="string")}},
        {
            "type": "function",
            "function": {"name": "write_file", "parameters": _schema(path="string", content="string")},
        },
    ]
    with FakeModel(tool_calls={"make notes": EDIT}) as server:
        _, data = call(server, "/v1/chat/completions", chat_body("please make notes", tools=tools))
        choice = data["choices"][0]
        assert choice["finish_reason"] == "tool_calls" and choice["message"]["content"] is None
        tc = choice["message"]["tool_calls"][0]
        assert tc["type"] == "function" and tc["function"]["name"] == "write_file"
        assert json.loads(tc["function"]["arguments"]) == {"path": "notes.txt", "content": "hello\n"}
        rec = server.requests[-1]
        assert rec.tools == ["read_file", "write_file"] and rec.answer_kind == "tool_call"
        assert rec.tool_name == "write_file"

        events, _, _ = stream(
            server, "/v1/chat/completions", chat_body("please make notes", tools=tools, stream=True)
        )
        chunks = [d for _, d in events[:-1]]
        calls = [
            c["choices"][0]["delta"]["tool_calls"][0]
            for c in chunks
            if "tool_calls" in c["choices"][0]["delta"]
        ]
        assert calls[0]["function"]["name"] == "write_file" and calls[0]["id"].startswith("call_")
        assert json.loads("".join(c["function"]["arguments"] for c in calls)) == {
            "path": "notes.txt",
            "content": "hello\n",
        }
        assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"

        body = chat_body("please make notes", tools=tools)
        body["messages"] += [
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": tc["id"], "type": "function", "function": tc["function"]}],
            },
            {"role": "tool", "tool_call_id": tc["id"], "content": "ok"},
        ]
        _, data = call(server, "/v1/chat/completions", body)
        assert data["choices"][0]["message"]["content"] == server.expected_reply("please make notes")
        assert server.requests[-1].tool_result is True


def test_tool_calls_responses_api_codex_shapes() -> None:
    tools = [
        {"type": "function", "name": "shell", "parameters": _schema(command="array", workdir="string")},
        {"type": "custom", "name": "apply_patch", "description": "patch", "format": {"type": "grammar"}},
    ]
    with FakeModel(tool_calls={"note": EDIT, "greet": SHELL}) as server:
        events, _, _ = stream(server, "/v1/responses", responses_body("greet me", tools=tools))
        kinds = [ev for ev, _ in events]
        assert kinds[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
        assert kinds[-2:] == ["response.output_item.done", "response.completed"]
        assert "response.function_call_arguments.done" in kinds
        item = events[-2][1]["item"]
        assert (
            item["type"] == "function_call"
            and item["name"] == "shell"
            and item["call_id"].startswith("call_")
        )
        assert json.loads(item["arguments"]) == {"command": ["bash", "-lc", "echo hi"]}
        deltas = [d for ev, d in events if ev == "response.function_call_arguments.delta"]
        assert "".join(d["delta"] for d in deltas) == item["arguments"]
        assert all(d["item_id"] == item["id"] for d in deltas)
        assert events[-1][1]["response"]["output"] == [item]

        events, _, _ = stream(server, "/v1/responses", responses_body("write a note", tools=tools))
        item = events[-2][1]["item"]
        assert item["type"] == "custom_tool_call" and item["name"] == "apply_patch"
        assert item["input"] == "*** Begin Patch\n*** Add File: notes.txt\n+hello\n*** End Patch\n"
        assert "response.custom_tool_call_input.delta" in [ev for ev, _ in events]

        body = responses_body("greet me", tools=tools)
        body["input"] += [
            {"type": "function_call", "call_id": "c1", "name": "shell", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "c1", "output": "hi"},
        ]
        events, _, _ = stream(server, "/v1/responses", body)
        assert events[-1][1]["response"]["output"][0]["content"][0]["text"] == server.expected_reply(
            "greet me"
        )


def test_tool_calls_anthropic_claude_shapes() -> None:
    tools = [
        {"name": "TodoWrite", "input_schema": _schema(todos="array")},
        {"name": "Bash", "input_schema": _schema(command="string", description="string")},
        {
            "name": "Edit",
            "input_schema": _schema(file_path="string", old_string="string", new_string="string"),
        },
        {"name": "Write", "input_schema": _schema(file_path="string", content="string")},
    ]
    system = [
        {
            "type": "text",
            "text": "Here is useful information:\nWorking directory: /tmp/proj\nIs git repo: yes",
        }
    ]
    with FakeModel(tool_calls={"note": EDIT, "greet": SHELL}) as server:
        events, _, _ = stream(
            server,
            "/v1/messages?beta=true",
            anthropic_body("write a note", tools=tools, system=system, stream=True),
        )
        block = events[1][1]["content_block"]
        assert block["type"] == "tool_use" and block["name"] == "Write" and block["input"] == {}
        deltas = [d["delta"] for ev, d in events if ev == "content_block_delta"]
        assert {d["type"] for d in deltas} == {"input_json_delta"}
        args = json.loads("".join(d["partial_json"] for d in deltas))
        assert args == {"file_path": "/tmp/proj/notes.txt", "content": "hello\n"}
        assert [d for ev, d in events if ev == "message_delta"][0]["delta"]["stop_reason"] == "tool_use"

        _, data = call(server, "/v1/messages", anthropic_body("greet", tools=tools))
        assert data["stop_reason"] == "tool_use"
        use = data["content"][0]
        assert use["type"] == "tool_use" and use["name"] == "Bash" and use["id"].startswith("toolu_")
        assert use["input"] == {"command": "echo hi", "description": "Run echo hi"}

        body = anthropic_body("greet", tools=tools)
        body["messages"] += [
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use["id"], "content": "hi"}]},
        ]
        _, data = call(server, "/v1/messages", body)
        assert data["content"] == [{"type": "text", "text": server.expected_reply("greet")}]


def test_tool_calls_gemini_shapes() -> None:
    tools = [
        {
            "functionDeclarations": [
                {"name": "read_file", "parametersJsonSchema": _schema(absolute_path="string")},
                {"name": "write_file", "parametersJsonSchema": _schema(file_path="string", content="string")},
                {
                    "name": "run_shell_command",
                    "parameters": _schema(command="string", description="string", directory="string"),
                },
            ]
        }
    ]
    call_edit = ToolCall(kind="edit", path="/abs/notes.txt", content="x\n")
    with FakeModel(tool_calls={"note": call_edit, "greet": SHELL}) as server:
        events, _, _ = stream(
            server, GEM + ":streamGenerateContent?alt=sse", gemini_body("a note", tools=tools)
        )
        assert len(events) == 1
        cand = events[0][1]["candidates"][0]
        assert cand["content"]["parts"] == [
            {
                "functionCall": {
                    "name": "write_file",
                    "args": {"file_path": "/abs/notes.txt", "content": "x\n"},
                }
            }
        ]
        assert cand["finishReason"] == "STOP"
        assert server.requests[-1].tools == ["read_file", "write_file", "run_shell_command"]

        _, data = call(server, GEM + ":generateContent", gemini_body("greet", tools=tools))
        fc = data["candidates"][0]["content"]["parts"][0]["functionCall"]
        assert fc == {
            "name": "run_shell_command",
            "args": {"command": "echo hi", "description": "Run echo hi"},
        }

        body = gemini_body("greet", tools=tools)
        body["contents"] += [
            {"role": "model", "parts": [{"functionCall": fc}]},
            {
                "role": "user",
                "parts": [{"functionResponse": {"name": fc["name"], "response": {"output": "hi"}}}],
            },
        ]
        events, _, _ = stream(server, GEM + ":streamGenerateContent?alt=sse", body)
        text = "".join(d["candidates"][0]["content"]["parts"][0]["text"] for _, d in events)
        assert text == server.expected_reply("greet")


def test_tool_call_without_fitting_tool_answers_text() -> None:
    tools = [{"type": "function", "function": {"name": "search_web", "parameters": _schema(q="string")}}]
    with FakeModel(tool_calls={"greet": SHELL}) as server:
        _, data = call(server, "/v1/chat/completions", chat_body("greet", tools=tools))
        content = data["choices"][0]["message"]["content"]
        assert "no declared tool fits a shell call" in content and "search_web" in content
        assert server.requests[-1].answer_kind == "text"
        _, data = call(server, "/v1/chat/completions", chat_body("greet"))
        assert "declared: none" in data["choices"][0]["message"]["content"]


def test_tool_call_kind_is_validated() -> None:
    with pytest.raises(ValueError):
        ToolCall(kind="delete")


# --- errors, addresses, lifecycle ----------------------------------------------------------------


def test_unknown_paths_are_404_and_recorded(fm: FakeModel) -> None:
    status, data = call(fm, "/v1/embeddings", {"input": "x"})
    assert status == 404 and data["error"]["type"] == "not_found_error" and data["error"]["code"] == 404
    status, _ = call(fm, "/nothing/here")
    assert status == 404
    status, _ = call(fm, "/v1/chat/completions", method="DELETE")
    assert status == 404
    assert [(r.method, r.path, r.endpoint, r.status) for r in fm.requests] == [
        ("POST", "/v1/embeddings", "not_found", 404),
        ("GET", "/nothing/here", "not_found", 404),
        ("DELETE", "/v1/chat/completions", "not_found", 404),
    ]
    assert fm.requests[0].body == {"input": "x"}


def test_bad_json_is_400(fm: FakeModel) -> None:
    req = urllib.request.Request(fm.url + "/v1/messages", data=b"{not json", method="POST")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=5)
    with info.value:
        assert info.value.code == 400
    assert fm.requests[-1].endpoint == "bad_request" and fm.requests[-1].status == 400


def test_listens_only_on_loopback(fm: FakeModel) -> None:
    assert fm.url == f"http://127.0.0.1:{fm.port}"
    assert fm.address == ("127.0.0.1", fm.port)
    listening = [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.status == psutil.CONN_LISTEN and c.laddr.port == fm.port
    ]
    assert [c.laddr.ip for c in listening] == ["127.0.0.1"]


def test_keep_alive_chunked_request_body_and_stop_joins() -> None:
    server = FakeModel().start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
        body = json.dumps(chat_body("chunked body")).encode()
        conn.request(
            "POST",
            "/v1/chat/completions",
            body=iter([body[:10], body[10:]]),
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        with conn.getresponse() as resp:
            data = json.loads(resp.read())
        assert data["choices"][0]["message"]["content"] == default_reply("chunked body")
        conn.request("GET", "/v1/models")  # same connection (keep-alive)
        with conn.getresponse() as resp:
            assert resp.status == 200
            resp.read()
        t0 = time.monotonic()
        server.stop()  # an idle keep-alive connection is still open
        assert time.monotonic() - t0 < 3
        assert not [t for t in server._threads if t.is_alive()]
        conn.close()
    finally:
        server.stop()
    with pytest.raises(RuntimeError):
        _ = server.url


def test_client_disconnect_mid_stream_is_quiet(capfd: pytest.CaptureFixture[str]) -> None:
    with FakeModel(chunk_delay_s=0.05, stream_chunk_words=1) as server:
        long_prompt = " ".join(f"word{i}" for i in range(40))
        for path, body in [
            ("/v1/messages", anthropic_body(long_prompt, stream=True)),
            ("/v1/chat/completions", chat_body(long_prompt, stream=True)),
        ]:
            conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=5)
            conn.request("POST", path, body=json.dumps(body), headers={"Content-Type": "application/json"})
            resp = conn.getresponse()
            assert resp.readline().strip()
            resp.close()
            conn.close()
        time.sleep(0.5)
        status, _ = call(server, "/v1/chat/completions", chat_body("still alive"))
        assert status == 200
    assert server.errors == []
    out, err = capfd.readouterr()
    assert "Traceback" not in err and err == ""


def test_stop_during_think_is_prompt() -> None:
    server = FakeModel(think_s=30).start()
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    with sock:
        body = json.dumps(chat_body("never answered")).encode()
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        server.wait_for_requests(1, timeout=5)
        t0 = time.monotonic()
        server.stop()
        assert time.monotonic() - t0 < 3


def test_launcher_prints_url_and_serves() -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, str(LAUNCHER), "--port", "0", "--prompt", "hello"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=str(REPO),
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        assert line.startswith("listening on http://127.0.0.1:")
        url = line.split()[-1]
        req = urllib.request.Request(
            url + "/v1/messages",
            data=json.dumps(anthropic_body("<p>hello</p>")).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert json.loads(resp.read())["content"][0]["text"] == default_reply("hello")
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == ""


# --- SDKs, when installed -----------------------------------------------------------------------


def test_openai_sdk_if_installed(fm: FakeModel) -> None:
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=fm.url + "/v1", api_key="x", max_retries=0)
    try:
        out = client.chat.completions.create(model="m", messages=[{"role": "user", "content": "sdk prompt"}])
        assert out.choices[0].message.content == fm.expected_reply("sdk prompt")
        pieces = client.chat.completions.create(
            model="m",
            messages=[{"role": "user", "content": "sdk prompt"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        text = "".join(c.choices[0].delta.content or "" for c in pieces if c.choices)
        assert text == fm.expected_reply("sdk prompt")
        if hasattr(client, "responses"):
            events = list(client.responses.create(model="m", input="sdk prompt", stream=True))
            assert events[-1].type == "response.completed"
            assert events[-1].response.output[0].content[0].text == fm.expected_reply("sdk prompt")
    finally:
        client.close()


def test_anthropic_sdk_if_installed(fm: FakeModel) -> None:
    anthropic = pytest.importorskip("anthropic")
    client = anthropic.Anthropic(base_url=fm.url, api_key="x", max_retries=0)
    try:
        with client.messages.stream(
            model="m", max_tokens=64, messages=[{"role": "user", "content": "sdk"}]
        ) as s:
            text = "".join(s.text_stream)
        assert text == fm.expected_reply("sdk")
    finally:
        client.close()
