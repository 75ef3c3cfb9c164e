"""Node failures on the private cluster: a confirmed stream to a quorum queue while the first
listed node is killed (0 lost, duplicates counted, time to resume); RPC while the server's
node, then the caller's node, goes down; a quorum leader moving under a consumer; a killed
node rejoining; a node restarted with persistent messages on a durable queue (0 lost).

Each test prints its figures (``N published, K cuts, 0 lost, D duplicates, resumed in S s``).
"""

from __future__ import annotations

import itertools
import json
import time

import pytest
import pytest_twisted
from twisted.internet import defer

from postage import Exchange, Fingerprint, MessageHandler, MessageResult, RpcHandler
from postage import decode_envelope as decode

import clusterbed

QUORUM = {"durable": True, "arguments": {"x-queue-type": "quorum"}}


def producer(closing, nodes, **knobs):
    from postage.twisted import GenericProducer

    made = GenericProducer(Fingerprint(name=f"postage-test.cluster.producer.{nodes}"),
                           hup=hosts_hup(nodes), **knobs)
    return closing.add(made)


def hosts_hup(nodes):
    return {"user": "guest", "password": "guest",
            "host": [f"127.0.0.1:{clusterbed.amqp_port(node)}" for node in nodes]}


def seqs(bodies):
    return [decode(body)["content"]["parameters"] for body in bodies]


def figures(published, cuts, bodies, resumed=None, what="messages"):
    seen = seqs(bodies)
    lost = sorted(set(range(published)) - set(seen))
    duplicates = len(seen) - len(set(seen))
    line = f"{published} {what} published, {cuts} cuts, {len(lost)} lost, {duplicates} duplicates"
    if resumed is not None:
        line += f", resumed in {resumed:.2f} s"
    print(line)
    return lost, duplicates


@defer.inlineCallbacks
def confirmed_stream(sender, queue, count, fault_at, fault):
    """Publish ``count`` confirmed messages (parameters 0..count-1); once ``fault_at`` are
    confirmed, call ``fault()``. Fires with (failures, seconds from the fault to the first
    confirm that came on another connection than the one of the fault, or None)."""
    confirmed = []
    fault_time = []
    resumed = []
    at_fault = []

    def on_confirm(result):
        confirmed.append(time.monotonic())
        if len(confirmed) == fault_at:
            at_fault.append(sender.connection)
            fault_time.append(time.monotonic())
            fault()
        elif at_fault and not resumed and sender.connection is not at_fault[0]:
            resumed.append(time.monotonic() - fault_time[0])
        return result

    publishes = [sender.message_seq(i, _key=queue).addCallback(on_confirm)
                 for i in range(count)]
    results = yield defer.DeferredList(publishes, consumeErrors=True)
    failures = [result for ok, result in results if not ok]
    return failures, (resumed[0] if resumed else None)


@pytest_twisted.inlineCallbacks
def test_a_confirmed_stream_to_a_quorum_queue_survives_the_first_node_killed(
        name, admin, closing, tools):
    count = 3000
    queue = admin(1).declare_quorum(name())
    sender = producer(closing, (1, 2, 3))
    yield tools.within(sender.ready, 20)
    failures, resumed = yield tools.within(
        confirmed_stream(sender, queue, count, 1000, lambda: clusterbed.kill_node(1)), 120)
    assert failures == []  # every publish confirmed: none reported lost
    bodies = yield tools.wait_for(lambda: _settled(admin(2), queue, count), 30,
                                  what="every message on the queue")
    lost, _duplicates = figures(count, 1, bodies, resumed)
    assert lost == []
    assert resumed is not None


def _settled(admin, queue, count):
    """The queue's messages once at least ``count`` are there (quorum counts may lag)."""
    if admin.message_count(queue) < count:
        return None
    return admin.drain(queue)


@pytest_twisted.inlineCallbacks
def test_a_killed_node_rejoins_and_serves_its_quorum_queue_again(name, admin, tools):
    queue = admin(1).declare_quorum(name())
    clusterbed.kill_node(1)
    started = time.monotonic()
    yield tools.in_thread(clusterbed.start_node, 1)
    yield tools.in_thread(clusterbed.wait_clustered)
    took = time.monotonic() - started
    print(f"node 1 booted again after kill -9 and rejoined in {took:.1f} s")
    again = admin(1)
    again.channel.basic_publish("", queue, b'{"via": "node 1"}')
    bodies = yield tools.wait_for(lambda: admin(3).drain(queue), 10, what="the message")
    assert bodies == [b'{"via": "node 1"}']
    members = json.loads(clusterbed.ctl(2, "list_queues", "name", "members", "--formatter",
                                        "json", "-q"))
    assert [sorted(row["members"]) for row in members if row["name"] == queue] == [
        sorted(clusterbed.node_name(n) for n in clusterbed.NODES)]


def collector(queue):
    from postage.twisted import MessageProcessor

    class Collector(MessageProcessor):
        got: list = []
        at: list = []

        @MessageHandler("command", "seq")
        def seq(self, content):
            self.got.append(content["parameters"])
            self.at.append(time.monotonic())

    Collector.got, Collector.at = [], []
    Collector.eqk = [("", [({"name": queue, "flags": QUORUM}, queue)])]
    return Collector


@pytest_twisted.inlineCallbacks
def test_a_consumer_keeps_consuming_while_the_quorum_leader_moves(name, admin, closing,
                                                                   tools):
    count = 1500
    queue = admin(1).declare_quorum(name())  # its leader usually starts on node 1

    def leader():
        rows = json.loads(clusterbed.ctl(2, "list_queues", "name", "leader", "--formatter",
                                         "json", "-q"))
        return next(row["leader"] for row in rows if row["name"] == queue)

    first = yield tools.in_thread(leader)
    lead = next(n for n in clusterbed.NODES if clusterbed.node_name(n) == first)
    others = tuple(n for n in clusterbed.NODES if n != lead)  # clients stay off the leader
    cls = collector(queue)
    consumer = cls(Fingerprint(name="postage-test.cluster.collector"), hup=hosts_hup(others))
    closing.add(consumer, consumer.stop)
    yield tools.within(consumer.start(), 20)
    sender = producer(closing, others[::-1])
    yield tools.within(sender.ready, 20)
    stopping = []
    failures, _resumed = yield tools.within(confirmed_stream(
        sender, queue, count, 500,
        lambda: stopping.append(tools.in_thread(clusterbed.ctl, lead, "stop_app"))), 120)
    yield stopping[0]
    moved_to = yield tools.in_thread(leader)
    try:
        yield tools.wait_for(lambda: len(set(cls.got)) >= count, 60,
                             what="every message consumed")
    finally:
        yield tools.in_thread(clusterbed.ctl, lead, "start_app")
    bodies = [json.dumps({"content": {"parameters": seq}, "type": "command", "name": "seq",
                          "category": "message"}).encode() for seq in cls.got]
    gap = max(later - earlier for earlier, later in itertools.pairwise(cls.at))
    lost, _ = figures(count, 1, bodies, what=f"messages (leader moved from {first} to "
                      f"{moved_to}; longest gap between deliveries {gap:.2f} s)")
    assert failures == [] and lost == []
    assert moved_to != first


def echo_server(queue):
    from postage.twisted import MessageProcessor

    class DurableExchange(Exchange):
        name = f"{queue}.x"
        exchange_type = "direct"
        durable = True
        auto_delete = False

    class Echo(MessageProcessor):
        @RpcHandler("command", "echo")
        def echo(self, content, reply):
            from twisted.internet import reactor, task

            return task.deferLater(reactor, 0.2, reply, MessageResult(content["parameters"]))

    Echo.eqk = [(DurableExchange, [({"name": queue, "flags": QUORUM}, "echo")])]
    return Echo, DurableExchange


def rpc_load(caller, exchange, duration, fault_at, fault, workers=5):
    """``workers`` loops of sequential RPC calls for ``duration`` seconds, and ``fault()``
    after ``fault_at`` seconds, while calls are in flight (the server takes 0.2 s a call, so
    requests wait at the server then): fires with (calls, results that are not a success,
    the longest call)."""
    from twisted.internet import reactor

    results, longest = [], [0.0]
    started = time.monotonic()
    reactor.callLater(fault_at, fault)

    @defer.inlineCallbacks
    def worker(number):
        while time.monotonic() - started < duration:
            began = time.monotonic()
            result = yield caller.rpc_echo([number, len(results)], _eks=[(exchange, "echo")],
                                           _timeout=1.5, _max_retry=10)
            longest[0] = max(longest[0], time.monotonic() - began)
            results.append(result)

    return defer.gatherResults([worker(n) for n in range(workers)]).addCallback(
        lambda _: (len(results), [result for result in results if not result], longest[0]))


@pytest.mark.parametrize("fault", ["kill", "stop_app"])
@pytest_twisted.inlineCallbacks
def test_rpc_goes_on_when_the_servers_node_goes_down(name, closing, tools, fault):
    queue = name()
    cls, exchange = echo_server(queue)
    server = cls(Fingerprint(name="postage-test.cluster.echo"), hup=hosts_hup((1, 3, 2)))
    closing.add(server, server.stop)
    yield tools.within(server.start(), 20)
    caller = producer(closing, (2, 3, 1), eks=[(exchange, "echo")])
    yield tools.within(caller.ready, 20)
    down = ((lambda: clusterbed.kill_node(1)) if fault == "kill"
            else (lambda: tools.in_thread(clusterbed.ctl, 1, "stop_app")))
    calls, bad, longest = yield tools.within(rpc_load(caller, exchange, 6, 1.5, down), 120)
    print(f"{calls} RPC calls, 1 cut (server's node: {fault}), {len(bad)} not answered, "
          f"longest call {longest:.2f} s")
    assert calls > 0 and bad == []


@pytest_twisted.inlineCallbacks
def test_rpc_goes_on_when_the_callers_node_is_killed(name, closing, tools):
    """RabbitMQ 3.10 closes the connection of a server that replies to a direct reply-to
    of the dead node; the server acks each request before replying, so such a request is
    not delivered again and the server goes on answering the others."""
    queue = name()
    cls, exchange = echo_server(queue)
    server = cls(Fingerprint(name="postage-test.cluster.echo"), hup=hosts_hup((3, 1, 2)))
    closing.add(server, server.stop)
    yield tools.within(server.start(), 20)
    caller = producer(closing, (2, 3, 1), eks=[(exchange, "echo")])
    yield tools.within(caller.ready, 20)
    calls, bad, longest = yield tools.within(
        rpc_load(caller, exchange, 8, 1.5, lambda: clusterbed.kill_node(2)), 150)
    print(f"{calls} RPC calls, 1 cut (caller's node killed), {len(bad)} not answered, "
          f"longest call {longest:.2f} s")
    assert calls > 0 and bad == []
    # and the server still answers new callers afterwards
    fresh = producer(closing, (3, 1), eks=[(exchange, "echo")])
    result = yield tools.within(fresh.rpc_echo("after", _timeout=2, _max_retry=5), 30)
    assert result.value == "after"


@pytest_twisted.inlineCallbacks
def test_persistent_messages_on_a_durable_queue_survive_their_node_restarted(
        name, admin, closing, tools):
    count = 500
    queue = admin(1).declare_durable(name())  # a classic queue: its home is node 1
    sender = producer(closing, (1,))
    yield tools.within(sender.ready, 20)
    results = yield tools.within(defer.DeferredList(
        [sender.message_seq(i, _key=queue) for i in range(count)], consumeErrors=True), 60)
    assert all(ok for ok, _ in results)
    yield sender.close()
    clusterbed.kill_node(1)
    yield tools.in_thread(clusterbed.start_node, 1)
    yield tools.in_thread(clusterbed.wait_clustered)
    bodies = admin(1).drain(queue)
    lost, duplicates = figures(count, 1, bodies, what="persistent messages (node restarted)")
    assert lost == [] and duplicates == 0


@pytest_twisted.inlineCallbacks
def test_a_password_that_stops_working_ends_the_reconnection_at_once(name, closing, tools):
    """Permanence while reconnecting: the connection is lost, the password was changed
    meanwhile; the reconnection fails with AuthenticationError, the session gives up
    (``failed``) instead of retrying forever, and nothing is scheduled after that."""
    from twisted.internet import reactor

    from postage import AuthenticationError, config
    from postage.twisted.connection import Session

    user = f"postage-test-{name('u')[-14:-2]}"
    yield tools.in_thread(clusterbed.ctl, 1, "add_user", user, "first-pw")
    yield tools.in_thread(clusterbed.ctl, 1, "set_permissions", user, ".*", ".*", ".*")
    try:
        settings = config.settings({"host": tools.hosts(1, 2), "user": user,
                                    "password": "first-pw"})
        events = {"setup": [], "lost": [], "failed": []}
        session = Session(settings, reactor, user, events["setup"].append,
                          events["lost"].append, events["failed"].append)
        closing.add(session)
        yield tools.within(session.start(), 20)
        yield tools.in_thread(clusterbed.ctl, 1, "change_password", user, "second-pw")
        session.connection.abort()  # the link drops; every reconnection meets the new password
        yield tools.wait_for(lambda: events["failed"], 30, what="the session to give up")
        assert isinstance(events["failed"][0], AuthenticationError)
        assert "first-pw" not in str(events["failed"][0])
        assert len(events["setup"]) == 1 and len(events["lost"]) == 1
        assert session.endpoint.attempts == 2  # the first connection, one reconnection
        with pytest.raises(defer.CancelledError):  # stopped: no retry pending
            yield tools.within(session._service.whenConnected(), 5)
    finally:
        yield tools.in_thread(clusterbed.ctl, 1, "delete_user", user)
