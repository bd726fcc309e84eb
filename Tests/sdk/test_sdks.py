"""The official OpenAI and Anthropic Python SDKs, unmodified, against a running gateway.

Run by scripts/test.sh against `portcullis serve` (embedded default, demo model) with a
master key, and a mock upstream for tool calls. Uses pytest.
"""
import json
import os

import anthropic
import openai
import pytest

BASE = os.environ["PORTCULLIS_SDK_BASE"]
KEY = os.environ["PORTCULLIS_SDK_KEY"]


@pytest.fixture
def oai():
    return openai.OpenAI(base_url=f"{BASE}/v1", api_key=KEY, max_retries=0)


@pytest.fixture
def claude():
    return anthropic.Anthropic(base_url=BASE, api_key=KEY, max_retries=0)


def test_openai_chat(oai):
    reply = oai.chat.completions.create(model="demo", messages=[{"role": "user", "content": "hello sdk"}])
    assert reply.choices[0].message.content.endswith("hello sdk")
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.total_tokens == reply.usage.prompt_tokens + reply.usage.completion_tokens


def test_openai_stream_with_usage(oai):
    stream = oai.chat.completions.create(model="demo", messages=[{"role": "user", "content": "stream me"}],
                                         stream=True, stream_options={"include_usage": True})
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.endswith("stream me")
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0


def test_openai_tool_call_stream(oai):
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}]
    stream = oai.chat.completions.create(model="tools", messages=[{"role": "user", "content": "weather?"}],
                                         tools=tools, stream=True)
    arguments = ""
    name = None
    for chunk in stream:
        for call in (chunk.choices[0].delta.tool_calls or []) if chunk.choices else []:
            name = call.function.name or name
            arguments += call.function.arguments or ""
    assert name == "get_weather"
    assert json.loads(arguments) == {"city": "Paris", "unit": "celsius"}


def test_openai_errors(oai):
    with pytest.raises(openai.NotFoundError) as error:
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "x"}])
    assert error.value.code == "model_not_found"
    bad = openai.OpenAI(base_url=f"{BASE}/v1", api_key="wrong", max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        bad.models.list()


def test_openai_models_embeddings_completions(oai):
    assert "demo" in [m.id for m in oai.models.list()]
    assert oai.models.retrieve("demo").id == "demo"
    vectors = oai.embeddings.create(model="demo", input=["a", "b"])
    assert len(vectors.data) == 2 and len(vectors.data[0].embedding) == 64
    completion = oai.completions.create(model="demo", prompt="complete me")
    assert completion.choices[0].text.endswith("complete me")


def test_anthropic_messages(claude):
    message = claude.messages.create(model="demo", max_tokens=64, system="Be nice",
                                     messages=[{"role": "user", "content": "hi claude sdk"}])
    assert message.content[0].text.endswith("hi claude sdk")
    assert message.stop_reason == "end_turn"
    assert message.usage.output_tokens > 0


def test_anthropic_stream(claude):
    with claude.messages.stream(model="demo", max_tokens=64, messages=[{"role": "user", "content": "stream claude"}]) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert text.endswith("stream claude")
    assert final.stop_reason == "end_turn"
    assert final.usage.output_tokens > 0 and final.usage.input_tokens > 0


def test_anthropic_tool_stream(claude):
    tools = [{"name": "get_weather", "input_schema": {"type": "object"}}]
    with claude.messages.stream(model="tools", max_tokens=64, tools=tools,
                                messages=[{"role": "user", "content": "weather?"}]) as stream:
        final = stream.get_final_message()
    block = [b for b in final.content if b.type == "tool_use"][0]
    assert block.name == "get_weather"
    assert block.input == {"city": "Paris", "unit": "celsius"}
    assert final.stop_reason == "tool_use"


def test_anthropic_errors(claude):
    with pytest.raises(anthropic.NotFoundError):
        claude.messages.create(model="nope", max_tokens=5, messages=[{"role": "user", "content": "x"}])
    with pytest.raises(anthropic.BadRequestError):
        claude.messages.create(model="demo", max_tokens=5, messages=[])
