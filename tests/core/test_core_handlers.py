"""Handler decorators and the dispatch table they build (pure: no consumer, no broker)."""

import pytest

from postage import (
    FilterError,
    Handler,
    MessageCommand,
    MessageFilter,
    MessageHandler,
    MessageHandlerFullBody,
    MessageResult,
    MessageStatus,
    RpcCommand,
    RpcHandler,
)
from postage.handlers import DispatchTable, HandlerRegistry, call_handler


def dispatch(owner, message, reply_func=None):
    """Run every handler the owner's table gives for ``message``; return their results."""
    body = message.body
    return [
        call_handler(owner, spec, body, reply_func)
        for spec in type(owner).dispatch_table.lookup(body)
    ]


def attrs(specs):
    return [spec.attr for spec in specs]


class Processor(HandlerRegistry):
    def __init__(self):
        self.calls = []

    @MessageHandler("command", "ping")
    def msg_ping(self, content):
        self.calls.append(("ping", content))
        return "pong"

    @MessageHandlerFullBody("command", "full")
    def msg_full(self, body):
        self.calls.append(("full", body))

    @RpcHandler("command", "echo")
    def rpc_echo(self, content, reply_func):
        reply_func(MessageResult(content["parameters"]))
        self.calls.append(("echo-after-reply", content))

    @RpcHandler("command", "klass")
    class EchoHandler(Handler):
        def call(self):
            self.processor.calls.append(("class", self.data))
            self.reply_func(MessageResult(self.data["parameters"]))
            return "called"

    @MessageHandlerFullBody("status", "busy")
    class BusyHandler(Handler):
        def call(self):
            self.processor.calls.append(("class-full", self.data, self.reply_func))


# Decorators --------------------------------------------------------------------------------


@pytest.mark.parametrize("decorator", [MessageHandler, RpcHandler, MessageHandlerFullBody])
def test_decorator_returns_the_function_unchanged(decorator):
    def handler(self, content):
        return content

    assert decorator("command", "x")(handler) is handler


def test_decorated_method_can_be_called_directly():
    processor = Processor()
    assert processor.msg_ping({"a": 1}) == "pong"
    assert processor.calls == [("ping", {"a": 1})]


def test_decorated_rpc_method_can_be_called_directly():
    replies = []
    Processor().rpc_echo({"parameters": 5}, replies.append)
    assert replies == [MessageResult(5)]


def test_registry_class_gets_a_dispatch_table():
    assert isinstance(Processor.dispatch_table, DispatchTable)
    assert Processor.dispatch_table.keys() == {
        ("message", "command", "ping"),
        ("message", "command", "full"),
        ("rpc", "command", "echo"),
        ("rpc", "command", "klass"),
        ("message", "status", "busy"),
    }


def test_the_mixin_itself_has_an_empty_table():
    assert HandlerRegistry.dispatch_table.keys() == set()


# Calling conventions -----------------------------------------------------------------------


def test_message_handler_gets_the_content():
    processor = Processor()
    results = dispatch(processor, MessageCommand("ping", {"a": 1}))
    assert results == ["pong"]
    assert processor.calls == [("ping", {"parameters": {"a": 1}})]


def test_full_body_handler_gets_the_whole_body():
    processor = Processor()
    message = MessageCommand("full", {"a": 1})
    dispatch(processor, message)
    assert processor.calls == [("full", message.body)]


def test_rpc_handler_gets_content_and_reply_func():
    processor = Processor()
    replies = []
    dispatch(processor, RpcCommand("echo", {"text": "hi"}), replies.append)
    assert replies == [MessageResult({"text": "hi"})]
    assert processor.calls == [("echo-after-reply", {"parameters": {"text": "hi"}})]


def test_handler_class_gets_data_reply_func_and_processor_and_runs_call():
    processor = Processor()
    replies = []
    results = dispatch(processor, RpcCommand("klass", [1, 2]), replies.append)
    assert results == ["called"]
    assert processor.calls == [("class", {"parameters": [1, 2]})]
    assert replies == [MessageResult([1, 2])]


def test_handler_class_under_full_body_gets_the_body_as_data():
    processor = Processor()
    message = MessageStatus("busy")
    dispatch(processor, message)
    assert processor.calls == [("class-full", message.body, None)]


def test_handler_attributes_are_set_by_the_constructor():
    owner = object()
    handler = Handler({"x": 1}, print, owner)
    assert (handler.data, handler.reply_func, handler.processor) == ({"x": 1}, print, owner)


def test_message_with_no_handler_dispatches_to_nothing():
    assert Processor.dispatch_table.lookup(MessageCommand("unknown").body) == []
    assert Processor.dispatch_table.lookup(RpcCommand("unknown").body) == []


def test_rpc_and_message_of_the_same_name_are_kept_apart():
    assert Processor.dispatch_table.lookup(RpcCommand("ping").body) == []
    assert Processor.dispatch_table.lookup(MessageCommand("echo").body) == []


# Many handlers, last RPC handler -----------------------------------------------------------


class Many(HandlerRegistry):
    @MessageHandler("command", "multi")
    def zeta(self, content):
        return "zeta"

    @MessageHandlerFullBody("command", "multi")
    def alpha(self, body):
        return "alpha"

    @MessageHandler("command", "multi")
    def mid(self, content):
        return "mid"

    @RpcHandler("command", "call")
    def first_rpc(self, content, reply_func):
        return "first"

    @RpcHandler("command", "call")
    def second_rpc(self, content, reply_func):
        return "second"


def test_all_message_handlers_of_one_key_are_listed_in_definition_order():
    specs = Many.dispatch_table.message_handlers("command", "multi")
    assert attrs(specs) == ["zeta", "alpha", "mid"]


def test_all_message_handlers_of_one_key_run():
    assert dispatch(Many(), MessageCommand("multi")) == ["zeta", "alpha", "mid"]


def test_only_the_last_rpc_handler_of_a_key_answers():
    assert Many.dispatch_table.rpc_handler("command", "call").attr == "second_rpc"
    assert dispatch(Many(), RpcCommand("call"), print) == ["second"]


def test_one_method_may_serve_several_keys():
    class Twice(HandlerRegistry):
        @MessageHandler("command", "a")
        @MessageHandler("command", "b")
        def both(self, content):
            return "both"

    assert dispatch(Twice(), MessageCommand("a")) == ["both"]
    assert dispatch(Twice(), MessageCommand("b")) == ["both"]


# Inheritance -------------------------------------------------------------------------------


class Base(HandlerRegistry):
    @MessageHandler("command", "base")
    def msg_base(self, content):
        return "base"

    @RpcHandler("command", "ask")
    def rpc_ask(self, content, reply_func):
        return "base-ask"


class Child(Base):
    @MessageHandler("command", "child")
    def msg_child(self, content):
        return "child"


class SiblingA(Base):
    @MessageHandler("command", "only-a")
    def msg_a(self, content):
        return "a"


class SiblingB(Base):
    @MessageHandler("command", "only-b")
    def msg_b(self, content):
        return "b"


class Override(Base):
    @MessageHandler("command", "renamed")
    def msg_base(self, content):
        return "override"


class OverrideRpc(Base):
    @RpcHandler("command", "ask")
    def rpc_ask_again(self, content, reply_func):
        return "child-ask"


def test_subclass_inherits_parent_handlers():
    assert dispatch(Child(), MessageCommand("base")) == ["base"]
    assert dispatch(Child(), MessageCommand("child")) == ["child"]


def test_parent_does_not_see_subclass_handlers():
    assert dispatch(Base(), MessageCommand("child")) == []


def test_sibling_subclasses_do_not_see_each_others_handlers():
    assert dispatch(SiblingA(), MessageCommand("only-b")) == []
    assert dispatch(SiblingB(), MessageCommand("only-a")) == []
    assert dispatch(SiblingA(), MessageCommand("only-a")) == ["a"]
    assert dispatch(SiblingB(), MessageCommand("only-b")) == ["b"]


def test_subclass_method_of_the_same_name_replaces_the_parent_handler():
    assert dispatch(Override(), MessageCommand("base")) == []
    assert dispatch(Override(), MessageCommand("renamed")) == ["override"]
    assert dispatch(Base(), MessageCommand("base")) == ["base"]


def test_subclass_rpc_handler_of_a_parent_key_answers_instead():
    assert dispatch(OverrideRpc(), RpcCommand("ask"), print) == ["child-ask"]
    assert dispatch(Base(), RpcCommand("ask"), print) == ["base-ask"]


def test_overriding_rpc_handler_counts_as_defined_last_in_the_subclass():
    class Parent(HandlerRegistry):
        @RpcHandler("command", "call")
        def first(self, content, reply_func):
            return "parent-first"

        @RpcHandler("command", "call")
        def second(self, content, reply_func):
            return "parent-second"

    class Kid(Parent):
        @RpcHandler("command", "call")
        def first(self, content, reply_func):
            return "kid-first"

    assert dispatch(Parent(), RpcCommand("call"), print) == ["parent-second"]
    assert dispatch(Kid(), RpcCommand("call"), print) == ["kid-first"]


def test_overriding_message_handler_moves_to_the_subclass_place_in_order():
    class Parent(HandlerRegistry):
        @MessageHandler("command", "multi")
        def first(self, content):
            return "parent-first"

        @MessageHandler("command", "multi")
        def second(self, content):
            return "parent-second"

    class Kid(Parent):
        @MessageHandler("command", "multi")
        def first(self, content):
            return "kid-first"

    assert dispatch(Kid(), MessageCommand("multi")) == ["parent-second", "kid-first"]


def test_subclass_of_a_decorated_handler_class_does_not_inherit_its_registration():
    class Outer(HandlerRegistry):
        @MessageHandler("command", "nested")
        class Nested(Handler):
            def call(self):
                return "nested"

        class Plain(Nested):
            def call(self):
                return "plain"

    assert attrs(Outer.dispatch_table.message_handlers("command", "nested")) == ["Nested"]


# without(), wildcard -----------------------------------------------------------------------


def test_without_drops_the_named_attributes():
    table = Many.dispatch_table.without(["alpha", "second_rpc"])
    assert attrs(table.message_handlers("command", "multi")) == ["zeta", "mid"]
    assert table.rpc_handler("command", "call") is None


def test_without_leaves_the_original_table_alone():
    Many.dispatch_table.without(["zeta", "alpha", "mid"])
    assert attrs(Many.dispatch_table.message_handlers("command", "multi")) == [
        "zeta",
        "alpha",
        "mid",
    ]


def test_without_removes_a_key_whose_handlers_are_all_dropped():
    table = Base.dispatch_table.without(["msg_base"])
    assert ("message", "command", "base") not in table.keys()


class Wildcard(HandlerRegistry):
    @MessageHandler("command", None)
    def any_command(self, content):
        return "any"

    @MessageHandler("command", "exact")
    def exact_command(self, content):
        return "exact"

    @RpcHandler("command", None)
    def any_rpc(self, content, reply_func):
        return "any-rpc"

    @RpcHandler("command", "exact")
    def exact_rpc(self, content, reply_func):
        return "exact-rpc"


def test_wildcard_handler_serves_names_without_an_exact_handler():
    assert dispatch(Wildcard(), MessageCommand("whatever")) == ["any"]
    assert dispatch(Wildcard(), RpcCommand("whatever"), print) == ["any-rpc"]


def test_wildcard_handler_is_not_used_when_an_exact_handler_exists():
    assert dispatch(Wildcard(), MessageCommand("exact")) == ["exact"]
    assert dispatch(Wildcard(), RpcCommand("exact"), print) == ["exact-rpc"]


def test_wildcard_handler_is_bound_to_its_type():
    assert dispatch(Wildcard(), MessageStatus("whatever")) == []


# MessageFilter -----------------------------------------------------------------------------


def scale(data, factor, key="x"):
    data["parameters"]["nested"][key] *= factor
    return data


def reject_negative(data):
    if data["parameters"]["nested"]["x"] < 0:
        raise FilterError("negative")
    return data


class FilterOuter(HandlerRegistry):
    """MessageFilter applied above the handler decorator."""

    def __init__(self):
        self.seen = []

    @MessageFilter(scale, 10, key="x")
    @MessageHandler("command", "scaled")
    def scaled(self, content):
        self.seen.append(content)
        return "scaled"

    @MessageFilter(reject_negative)
    @MessageHandler("command", "checked")
    def checked(self, content):
        self.seen.append(content)
        return "checked"

    @MessageFilter(scale, 2)
    @RpcHandler("command", "rpc-scaled")
    def rpc_scaled(self, content, reply_func):
        reply_func(MessageResult(content["parameters"]["nested"]["x"]))


class FilterInner(HandlerRegistry):
    """MessageFilter applied below the handler decorator."""

    def __init__(self):
        self.seen = []

    @MessageHandler("command", "scaled")
    @MessageFilter(scale, 10, key="x")
    def scaled(self, content):
        self.seen.append(content)
        return "scaled"

    @MessageHandler("command", "checked")
    @MessageFilter(reject_negative)
    def checked(self, content):
        self.seen.append(content)
        return "checked"

    @RpcHandler("command", "rpc-scaled")
    @MessageFilter(scale, 2)
    def rpc_scaled(self, content, reply_func):
        reply_func(MessageResult(content["parameters"]["nested"]["x"]))


FILTERED = pytest.mark.parametrize("cls", [FilterOuter, FilterInner], ids=["outer", "inner"])


@FILTERED
def test_filter_transforms_the_data_with_its_arguments(cls):
    processor = cls()
    dispatch(processor, MessageCommand("scaled", {"nested": {"x": 3}}))
    assert processor.seen == [{"parameters": {"nested": {"x": 30}}}]


@FILTERED
def test_filter_works_on_a_deep_copy_of_the_data(cls):
    message = MessageCommand("scaled", {"nested": {"x": 3}})
    dispatch(cls(), message)
    assert message.content == {"parameters": {"nested": {"x": 3}}}


@FILTERED
def test_filter_error_skips_the_handler(cls):
    processor = cls()
    assert dispatch(processor, MessageCommand("checked", {"nested": {"x": -1}})) == [None]
    assert processor.seen == []


@FILTERED
def test_filter_passing_the_data_runs_the_handler(cls):
    processor = cls()
    assert dispatch(processor, MessageCommand("checked", {"nested": {"x": 1}})) == ["checked"]
    assert processor.seen == [{"parameters": {"nested": {"x": 1}}}]


@FILTERED
def test_filter_on_an_rpc_handler_keeps_the_reply_func(cls):
    replies = []
    dispatch(cls(), RpcCommand("rpc-scaled", {"nested": {"x": 4}}), replies.append)
    assert replies == [MessageResult(8)]


# Tables built inside the test --------------------------------------------------------------
# The classes above are built at import; these build theirs while the test runs, so that the
# decorators' and the table's own code is what the test exercises (a mutation tester swaps
# code in after import).

def test_spec_fields_say_how_each_handler_is_called():
    class Built(HandlerRegistry):
        @MessageHandler("command", "plain")
        def plain(self, content):
            return content

        @MessageHandlerFullBody("command", "full")
        def full(self, body):
            return body

        @RpcHandler("command", "call")
        def call(self, content, reply_func):
            return content

        @MessageHandler("command", "klass")
        class Klass(Handler):
            def call(self):
                return self.data

    table = Built.dispatch_table
    (plain,) = table.message_handlers("command", "plain")
    (full,) = table.message_handlers("command", "full")
    (klass,) = table.message_handlers("command", "klass")
    rpc = table.rpc_handler("command", "call")
    assert (plain.attr, plain.full_body, plain.rpc, plain.is_class) == ("plain", False, False,
                                                                        False)
    assert (full.attr, full.full_body, full.rpc, full.is_class) == ("full", True, False, False)
    assert (rpc.attr, rpc.full_body, rpc.rpc, rpc.is_class) == ("call", False, True, False)
    assert (klass.attr, klass.full_body, klass.rpc, klass.is_class) == ("Klass", False, False,
                                                                        True)
    assert table.keys() == {("message", "command", "plain"), ("message", "command", "full"),
                            ("message", "command", "klass"), ("rpc", "command", "call")}


def test_decorated_subclass_of_a_decorated_handler_class_is_dispatched_to_itself():
    """The subclass's decoration is its own: it neither inherits its parent's registration
    nor adds to it."""

    class Built(HandlerRegistry):
        @MessageHandler("command", "parent")
        class Parent(Handler):
            def call(self):
                return "parent"

        @MessageHandler("command", "child")
        class Child(Parent):
            def call(self):
                return "child"

    table = Built.dispatch_table
    assert attrs(table.message_handlers("command", "parent")) == ["Parent"]
    assert attrs(table.message_handlers("command", "child")) == ["Child"]
    owner = Built()
    assert dispatch(owner, MessageCommand("child")) == ["child"]
    assert dispatch(owner, MessageCommand("parent")) == ["parent"]


def test_undecorated_subclass_of_a_decorated_handler_class_is_not_a_handler():
    class Built(HandlerRegistry):
        @MessageHandler("command", "parent")
        class Parent(Handler):
            def call(self):
                return "parent"

        class Plain(Parent):
            pass

    assert attrs(Built.dispatch_table.message_handlers("command", "parent")) == ["Parent"]


def test_message_filter_built_in_the_test_passes_its_arguments():
    def scale(data, factor, key):
        return {key: data[key] * factor}

    def refuse(data):
        raise FilterError("no")

    class Built(HandlerRegistry):
        @MessageHandler("command", "scaled")
        @MessageFilter(scale, 3, key="n")
        def scaled(self, content):
            return content

        @MessageHandler("command", "refused")
        @MessageFilter(refuse)
        def refused(self, content):
            return "ran"

    owner = Built()
    body = MessageCommand("scaled").body
    body["content"] = {"n": 2}
    (spec,) = Built.dispatch_table.lookup(body)
    assert call_handler(owner, spec, body, None) == {"n": 6}
    assert body["content"] == {"n": 2}  # the filter got a copy
    assert dispatch(owner, MessageCommand("refused")) == [None]


def test_a_handler_class_without_call_says_it_needs_one():
    with pytest.raises(NotImplementedError, match=r"^a Handler subclass defines call\(\)$"):
        Handler({}).call()
