"""A corpus of malformed and odd deliveries, published raw (pika) straight to a processor's
queue: each bad one is rejected once to the queue's dead-letter exchange, each odd but valid
one is handled or answered, nothing is redelivered forever, and afterwards the processor
still answers a good RPC."""

from __future__ import annotations

import codecs
import gzip
import json
from collections import Counter
from typing import Any

import pytest
import pytest_twisted

from postage import MessageHandler, MessageResult, RpcHandler
from postage.twisted import MessageProcessor

pytestmark = pytest.mark.faults

DROP = object()  # an envelope field left out
JSON = "application/json"
BIG = 10 * 1024 * 1024  # a "huge" body
DEEP = 100_000  # a "deeply nested" body


def envelope(case: str, **fields: Any) -> dict[str, Any]:
    """A good envelope for ``item`` (content carries the case's name), with fields replaced
    (or left out with DROP)."""
    body = {"type": "command", "name": "item", "category": "message", "version": 2,
            "fingerprint": {"name": "corpus"}, "content": {"parameters": {"case": case}},
            "_reserved": {}}
    for key, value in fields.items():
        key = key.rstrip("_") if key != "_reserved" else key
        if value is DROP:
            body.pop(key, None)
        else:
            body[key] = value
    return body


def raw(case: str, **fields: Any) -> bytes:
    return json.dumps(envelope(case, **fields)).encode()


def rpc(case: str, name: str = "echo", **fields: Any) -> bytes:
    return raw(case, category="rpc", name=name, **fields)


def corpus(reply_queue: str) -> list[tuple[str, bytes, dict[str, Any], str]]:
    """``(case, body, properties, fate)``; fate is ``dead`` (rejected to the dead-letter
    exchange), ``handled`` (the ``item`` handler ran), ``acked`` (consumed, not dead:
    unanswerable or without a handler) or ``either`` (dead or handled, once)."""
    good = raw("x")
    cases: list[tuple[str, bytes, dict[str, Any], str]] = [
        # -- not a JSON object
        ("not-json", b"hello, world", {}, "dead"),
        ("empty-body", b"", {}, "dead"),
        ("not-utf8", b'{"type": "command", "name": "\xff\xfe", "category": "message"}', {},
         "dead"),
        ("latin1", json.dumps(envelope("café"), ensure_ascii=False).encode("latin-1"), {},
         "dead"),
        ("truncated-json", good[:-7], {}, "dead"),
        ("trailing-garbage", good + b" }{", {}, "dead"),
        ("number-of-5000-digits", raw("x", content={"n": 1}).replace(b'"n": 1',
                                                                    b'"n": 1' + b"7" * 5000),
         {}, "dead"),
        ("json-array", b"[1, 2, 3]", {}, "dead"),
        ("json-string", b'"command"', {}, "dead"),
        ("json-number", b"42", {}, "dead"),
        ("json-null", b"null", {}, "dead"),
        ("json-true", b"true", {}, "dead"),
        # -- missing fields
        ("empty-object", b"{}", {}, "dead"),
        ("no-category", raw("no-category", category=DROP), {}, "dead"),
        ("no-type", raw("no-type", type_=DROP), {}, "dead"),
        ("only-category-and-type", b'{"category": "message", "type": "command"}', {},
         "acked"),
        ("no-name-no-content", raw("x", name=DROP, content=DROP), {}, "acked"),
        # -- wrong types, every field
        ("type-int", raw("type-int", type_=7), {}, "dead"),
        ("type-null", raw("type-null", type_=None), {}, "dead"),
        ("type-list", raw("type-list", type_=["command"]), {}, "dead"),
        ("type-object", raw("type-object", type_={"command": 1}), {}, "dead"),
        ("name-int", raw("name-int", name=7), {}, "dead"),
        ("name-null", raw("name-null", name=None), {}, "dead"),
        ("name-list", raw("name-list", name=["item"]), {}, "dead"),
        ("category-int", raw("category-int", category=1), {}, "dead"),
        ("category-null", raw("category-null", category=None), {}, "dead"),
        ("category-unknown", raw("category-unknown", category="event"), {}, "dead"),
        ("category-upper-case", raw("category-upper-case", category="RPC"), {}, "dead"),
        ("version-3", raw("version-3", version=3), {}, "dead"),
        ("version-text", raw("version-text", version="two"), {}, "dead"),
        ("version-float", raw("version-float", version=2.5), {}, "dead"),
        ("version-null", raw("version-null", version=None), {}, "dead"),
        ("version-list", raw("version-list", version=[2]), {}, "dead"),
        ("fingerprint-string", raw("fingerprint-string", fingerprint="me"), {}, "dead"),
        ("fingerprint-list", raw("fingerprint-list", fingerprint=["me"]), {}, "dead"),
        ("content-string", raw("content-string", content="parameters"), {}, "dead"),
        ("content-list", raw("content-list", content=[1]), {}, "dead"),
        ("content-int", raw("content-int", content=1), {}, "dead"),
        ("content-null", raw("content-null", content=None), {}, "dead"),
        ("reserved-string", raw("reserved-string", _reserved="r"), {}, "dead"),
        ("reserved-list", raw("reserved-list", _reserved=[]), {}, "dead"),
        ("duplicate-key-last-wins", good.replace(b'"type": "command"',
                                                 b'"type": "command", "type": 5'), {}, "dead"),
        # -- valid, but odd
        ("version-string-2", raw("version-string-2", version="2"), {}, "handled"),
        ("no-version", raw("no-version", version=DROP), {}, "handled"),
        ("no-content-type", raw("no-content-type"), {"content_type": None}, "handled"),
        ("odd-headers", raw("odd-headers"),
         {"headers": {"x-odd": {"nested": [1, "two", {"deep": None}]}, "x-big": "h" * 60000}},
         "handled"),
        ("priority-255", raw("priority-255"), {"priority": 255}, "handled"),
        ("name-of-100k", raw("x", name="n" * 100_000), {}, "acked"),
        ("lone-surrogate-name", raw("x", name="\ud800"), {}, "acked"),
        ("unknown-message-name", raw("x", name="nobody-handles-this"), {}, "acked"),
        ("message-handler-raises", raw("x", name="boom"), {}, "acked"),
        ("utf16", json.dumps(envelope("utf16")).encode("utf-16"), {}, "either"),
        ("utf8-bom", codecs.BOM_UTF8 + raw("utf8-bom"), {}, "either"),
        ("nan", raw("nan", content={"parameters": {"case": "nan", "v": float("nan")}}), {},
         "either"),
        ("empty-content-type", raw("empty-content-type"), {"content_type": ""}, "either"),
        ("gzip-encoding-plain-body", raw("gzip-encoding-plain-body"),
         {"content_encoding": "gzip"}, "either"),
        # -- sizes and depths
        ("huge-not-json", b"x" * BIG, {}, "dead"),
        ("huge-envelope", raw("huge-envelope", content={"parameters": {
            "case": "huge-envelope", "blob": "b" * BIG}}), {}, "handled"),
        ("deep-content", b'{"type": "command", "category": "message", "content": '
                         b'{"parameters": ' + b"[" * DEEP + b"]" * DEEP + b"}}", {}, "dead"),
        ("deep-array", b"[" * DEEP + b"]" * DEEP, {}, "dead"),
        ("deep-objects", b'{"a": ' * DEEP + b"1" + b"}" * DEEP, {}, "dead"),
        ("nested-500", raw("nested-500", content={"parameters": {
            "case": "nested-500", "deep": json.loads("[" * 500 + "]" * 500)}}), {}, "handled"),
        # -- content types and encodings
        ("text-plain", raw("text-plain"), {"content_type": "text/plain"}, "dead"),
        ("xml", b"<command name='item'/>", {"content_type": "application/xml"}, "dead"),
        ("pickle", b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94.",
         {"content_type": "application/x-python-pickle"}, "dead"),
        ("msgpack-type", raw("msgpack-type"), {"content_type": "application/msgpack"}, "dead"),
        ("gzip-body", gzip.compress(raw("gzip-body")), {"content_encoding": "gzip"}, "dead"),
        # -- RPC requests the server cannot answer as usual
        ("rpc-without-reply-to", rpc("rpc-without-reply-to"), {"correlation_id": "c0"},
         "acked"),
        ("rpc-without-correlation-id", rpc("rpc-without-correlation-id"),
         {"reply_to": reply_queue}, "acked"),
        ("rpc-reply-to-missing-queue", rpc("rpc-reply-to-missing-queue"),
         {"reply_to": f"{reply_queue}.missing", "correlation_id": "c1"}, "acked"),
        ("rpc-reply-to-bogus-direct", rpc("rpc-reply-to-bogus-direct"),
         {"reply_to": "amq.rabbitmq.reply-to.bogus", "correlation_id": "c2"}, "acked"),
        ("rpc-unknown-name", rpc("rpc-unknown-name", name="nobody"),
         {"reply_to": reply_queue, "correlation_id": "unknown"}, "acked"),
        ("rpc-handler-raises", rpc("rpc-handler-raises", name="boom"),
         {"reply_to": reply_queue, "correlation_id": "boom"}, "acked"),
        ("rpc-without-parameters", rpc("x", content={}),
         {"reply_to": reply_queue, "correlation_id": "noparams"}, "acked"),
        ("rpc-good", rpc("rpc-good"), {"reply_to": reply_queue, "correlation_id": "ok"},
         "acked"),
    ]
    return cases


# the replies that the RPC cases above send to the reply queue, by correlation id
REPLIES = {None: "success", "unknown": "error", "boom": "exception", "noparams": "exception",
           "ok": "success"}


class Target(MessageProcessor):
    def __init__(self, *args: Any, **kwds: Any) -> None:
        super().__init__(*args, **kwds)
        self.handled: Counter[str] = Counter()

    @MessageHandler("command", "item")
    def item(self, content: Any) -> None:
        self.handled[content["parameters"]["case"]] += 1

    @MessageHandler("command", "boom")
    def boom(self, content: Any) -> None:
        raise RuntimeError("a handler that fails (on purpose)")

    @RpcHandler("command", "echo")
    def echo(self, content: Any, reply: Any) -> None:
        reply(MessageResult(content["parameters"]))

    @RpcHandler("command", "boom")
    def rpc_boom(self, content: Any, reply: Any) -> None:
        raise RuntimeError("an RPC handler that fails (on purpose)")


def _dead_lettered(names: Any, broker: Any) -> tuple[dict[str, Any], str]:
    """Queue flags with a dead-letter exchange (fanout) whose queue is returned too."""
    dlx = names.exchange("dlx")
    dead = names.queue("dead")
    broker.declare_exchange(dlx, "fanout")
    broker.declare_queue(dead)
    broker.bind(dead, dlx, "")
    return {"arguments": {"x-dead-letter-exchange": dlx}}, dead


@pytest_twisted.ensureDeferred
async def test_a_malformed_corpus_is_rejected_once_and_the_processor_keeps_answering(
        components, names, broker, tools, figures):
    queue = names.queue("target")
    replies = names.queue("replies")
    flags, dead = _dead_lettered(names, broker)
    broker.declare_queue(queue, **flags)
    broker.declare_queue(replies)
    processor = components.processor(Target, prefetch_count=20,
                                     eqk=[("", [({"name": queue, "flags": flags}, queue)])])
    await tools.within(processor.start(), 30)
    cases = corpus(replies)
    assert len({case for case, *_ in cases}) == len(cases) >= 40
    for case, body, properties, _fate in cases:
        properties = {"content_type": JSON, **properties, "message_id": case}
        broker.publish("", queue, body, **properties)
    fates = {case: fate for case, _, _, fate in cases}
    must_die = {case for case, fate in fates.items() if fate == "dead"}
    must_be_handled = {case for case, fate in fates.items() if fate == "handled"}
    await tools.wait_for(lambda: broker.message_count(dead) >= len(must_die)
                         and must_be_handled <= set(processor.handled)
                         and broker.message_count(replies) >= len(REPLIES), 60,
                         what="the corpus to be rejected, handled and answered")
    await tools.wait_for(lambda: broker.message_count(queue) == 0, 30, what="an empty queue")
    # the processor still answers
    producer = components.producer()
    answer = await tools.within(producer.rpc_echo(n=1, _key=queue, _timeout=10), 60)
    await tools.within(processor.stop(), 30)
    left = broker.message_count(queue)  # nothing unacked, nothing requeued in a loop
    either = {case for case, fate in fates.items() if fate == "either"}
    expected_dead = len(must_die) + len([c for c in either if not processor.handled[c]])
    await tools.wait_for(lambda: broker.message_count(dead) >= expected_dead, 30,
                         what=f"{expected_dead} dead-lettered messages")
    dead_ids = Counter(props.message_id for props, _ in await tools.drain(dead, "dead"))
    answers = {props.correlation_id: json.loads(body)["content"]["type"]
               for props, body in await tools.drain(replies, "replies")}
    figures.add("corpus", kinds=len(cases), rejected_to_dead_letter=sum(dead_ids.values()),
                handled=sum(processor.handled.values()), answered=len(answers),
                left_in_queue=left)
    figures.add("either way", **{case.replace("-", "_"): "handled" if processor.handled[case]
                                 else "rejected" for case in sorted(either)})
    assert answer.value == {"n": 1}
    assert left == 0
    assert must_die <= set(dead_ids), f"not dead-lettered: {sorted(must_die - set(dead_ids))}"
    wrongly_dead = {case for case in dead_ids if fates.get(case) not in ("dead", "either")}
    assert not wrongly_dead, f"dead-lettered, although valid: {sorted(wrongly_dead)}"
    assert all(count == 1 for count in dead_ids.values()), f"rejected again: {dead_ids}"
    assert all(count == 1 for count in processor.handled.values()), processor.handled
    for case in either:  # one or the other, once
        assert (case in dead_ids) != (processor.handled[case] == 1), case
    assert must_be_handled <= set(processor.handled)
    assert answers == REPLIES


@pytest_twisted.ensureDeferred
async def test_a_json_content_type_with_a_charset_is_read(components, names, broker, tools):
    queue = names.queue("target")
    flags, dead = _dead_lettered(names, broker)
    processor = components.processor(Target,
                                     eqk=[("", [({"name": queue, "flags": flags}, queue)])])
    await tools.within(processor.start(), 30)
    broker.publish("", queue, raw("charset"), content_type="application/json; charset=utf-8")
    broker.publish("", queue, raw("after"), content_type=JSON)
    await tools.wait_for(lambda: processor.handled["after"], 30, what="the next message")
    assert processor.handled["charset"] == 1 and broker.message_count(dead) == 0
