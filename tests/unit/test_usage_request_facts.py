"""read_request: facts from JSON and multipart bodies, and the include_usage rewrite."""

from __future__ import annotations

import json

import pytest

from meshproxy_core.errors import BadRequest
from meshproxy_core.usage.request_facts import read_request

JSON = "application/json"


def test_chat_stream_without_include_usage_is_rewritten() -> None:
    body = b'  {"model":"gpt-4o","stream":true,"messages":[{"role":"user","content":"\\u00e9"}]}'
    facts, sent = read_request("openai", "chat.completions", JSON, body)
    assert facts.model == "gpt-4o"
    assert facts.stream
    assert facts.strip_usage_chunk
    obj = json.loads(sent)
    assert obj["stream_options"] == {"include_usage": True}
    assert {k: v for k, v in obj.items() if k != "stream_options"} == json.loads(body)
    # Every byte the client sent is still there, in order.
    assert sent.replace(b'"stream_options":{"include_usage":true},', b"") == body


def test_chat_stream_with_include_usage_is_untouched() -> None:
    body = b'{"model":"m","stream":true,"stream_options":{"include_usage":true}}'
    facts, sent = read_request("openai", "chat.completions", JSON, body)
    assert sent is body
    assert not facts.strip_usage_chunk


@pytest.mark.parametrize(
    "options",
    [{"include_obfuscation": False}, {"include_usage": False, "include_obfuscation": False}, None],
)
def test_chat_stream_options_other_keys_preserved(options) -> None:
    body = json.dumps({"model": "m", "stream": True, "stream_options": options}).encode()
    facts, sent = read_request("openai", "chat.completions", JSON, body)
    assert facts.strip_usage_chunk
    expected = dict(options or {})
    expected["include_usage"] = True
    assert json.loads(sent)["stream_options"] == expected


def test_chat_without_stream_is_untouched() -> None:
    body = b'{"model":"m","stream":false}'
    facts, sent = read_request("openai", "chat.completions", JSON, body)
    assert sent is body
    assert not facts.stream
    assert not facts.strip_usage_chunk


def test_responses_stream_is_never_rewritten() -> None:
    body = b'{"model":"m","stream":true}'
    facts, sent = read_request("openai", "responses", JSON, body)
    assert sent is body
    assert facts.stream
    assert not facts.strip_usage_chunk


def test_speech_facts() -> None:
    body = json.dumps(
        {"model": "tts-1", "input": "héllo 👋", "response_format": "mp3", "stream_format": "sse"}
    ).encode()
    facts, _ = read_request("openai", "audio.speech", JSON, body)
    assert facts.input_characters == 7
    assert facts.response_format == "mp3"
    assert facts.stream_format == "sse"


def test_input_characters_only_for_speech() -> None:
    facts, _ = read_request("openai", "embeddings", JSON, b'{"model":"e","input":"abc"}')
    assert facts.input_characters == 0


def test_image_facts_and_defaults() -> None:
    body = b'{"model":"dall-e-3","n":2,"size":"1792x1024","quality":"hd"}'
    facts, _ = read_request("openai", "images.generations", JSON, body)
    assert (facts.model, facts.n, facts.size, facts.quality) == ("dall-e-3", 2, "1792x1024", "hd")
    facts, _ = read_request("openai", "images.generations", JSON, b'{"n":"x","model":5}')
    assert facts.n == 1
    assert facts.model is None


def test_empty_body_gives_default_facts() -> None:
    facts, sent = read_request("anthropic", "messages.batches", None, b"")
    assert sent == b""
    assert facts.endpoint == "messages.batches"
    assert facts.model is None


def test_extra_facts_are_passed_through() -> None:
    facts, _ = read_request(
        "anthropic", "messages.batches.results", None, b"", batch_id="b", public_base_url="u"
    )
    assert facts.batch_id == "b"
    assert facts.public_base_url == "u"


@pytest.mark.parametrize("body", [b"{not json", b"[1,2]", b'"str"', b"\xff\xfe"])
def test_bad_json_is_refused_without_echo(body: bytes) -> None:
    with pytest.raises(BadRequest) as info:
        read_request("openai", "chat.completions", JSON, body)
    assert info.value.status == 400
    assert info.value.provider == "openai"
    assert body.decode("latin-1") not in info.value.message


def multipart(fields: dict[str, str], boundary: str = "XyZ") -> tuple[str, bytes]:
    parts = [
        f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="a.wav"\r\n'
        "Content-Type: audio/wav\r\n\r\n".encode()
        + b"RIFF\x00\x01model\r\n--notaboundary"
        + b"\r\n"
    ]
    for name, value in fields.items():
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n'
            f"{value}\r\n".encode()
        )
    parts.append(f"--{boundary}--\r\n".encode())
    return f"multipart/form-data; boundary={boundary}", b"".join(parts)


def test_multipart_fields() -> None:
    content_type, body = multipart(
        {"model": "whisper-1", "response_format": "verbose_json", "stream": "True"}
    )
    facts, sent = read_request("openai", "audio.transcriptions", content_type, body)
    assert sent is body
    assert facts.model == "whisper-1"
    assert facts.response_format == "verbose_json"
    assert facts.stream


def test_multipart_image_fields() -> None:
    content_type, body = multipart({"model": "dall-e-2", "n": "3", "size": "256x256"})
    facts, _ = read_request("openai", "images.variations", content_type, body)
    assert (facts.model, facts.n, facts.size) == ("dall-e-2", 3, "256x256")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("multipart/form-data", b"--x\r\n\r\n"),  # no boundary
        ("multipart/form-data; boundary=XyZ", b"--XyZ\r\nContent-Disposition: form-data"),
        ("multipart/form-data; boundary=XyZ", b"garbage that is not multipart at all"),
    ],
)
def test_bad_multipart_is_refused(content_type: str, body: bytes) -> None:
    with pytest.raises(BadRequest):
        read_request("openai", "audio.transcriptions", content_type, body)
