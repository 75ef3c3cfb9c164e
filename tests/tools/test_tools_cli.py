"""The ``postage`` command end to end: ``send``, ``rpc`` and ``run`` as subprocesses against
the real broker and a running component (``postage run examples.rpc_echo:EchoProcessor``)."""

from __future__ import annotations

import json
import signal
import time
import uuid

import pytest

from postage.messaging import decode_envelope

EXAMPLES = "postage-examples"  # examples.rpc_echo's exchange, with key "echo"
UNREACHABLE = "amqp://guest:guest@127.0.0.1:5999/"


def test_rpc_prints_the_result_value_as_json_and_exits_0(echo_component, run_tool, tk):
    done = run_tool(tk.POSTAGE, "rpc", EXAMPLES, "echo", "echo", "text=hi", "n=3")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {"text": "hi", "n": 3}
    assert done.stdout.strip() == '{"text": "hi", "n": 3}'


def test_rpc_exception_result_exits_nonzero_with_the_message_on_stderr(echo_component,
                                                                        run_tool, tk):
    done = run_tool(tk.POSTAGE, "rpc", EXAMPLES, "echo", "divide", "a=1", "b=0")

    assert done.returncode != 0
    assert done.stdout == ""
    assert "ZeroDivisionError" in done.stderr
    assert "division by zero" in done.stderr


def test_rpc_error_result_exits_nonzero_with_the_message_on_stderr(echo_component, run_tool,
                                                                    tk):
    done = run_tool(tk.POSTAGE, "rpc", EXAMPLES, "echo", "no_such_command")

    assert done.returncode != 0
    assert done.stdout == ""
    assert "no handler for command/no_such_command" in done.stderr


def test_parameter_values_are_json_when_they_parse_else_strings(echo_component, run_tool, tk):
    done = run_tool(tk.POSTAGE, "rpc", EXAMPLES, "echo", "echo",
                    "int=3", "float=1.5", "flag=true", "nothing=null", "list=[1,2]",
                    'obj={"a": [1]}', 'quoted="7"', "word=hello", "spaced=two words",
                    "empty=", "eq=a=b", "brace={not json")

    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == {
        "int": 3, "float": 1.5, "flag": True, "nothing": None, "list": [1, 2],
        "obj": {"a": [1]}, "quoted": "7", "word": "hello", "spaced": "two words",
        "empty": "", "eq": "a=b", "brace": "{not json"}


def test_parameter_without_equals_sign_is_a_usage_error(run_tool, tk):
    done = run_tool(tk.POSTAGE, "send", EXAMPLES, "echo", "echo", "novalue")

    assert done.returncode == 2
    assert "name=value" in done.stderr
    assert "Traceback" not in done.stderr


def test_rpc_that_no_queue_can_receive_fails_at_once(echo_component, run_tool, tk):
    key = f"nobody-{uuid.uuid4().hex}"
    start = time.monotonic()
    done = run_tool(tk.POSTAGE, "rpc", EXAMPLES, key, "echo", "--timeout", "30")

    assert done.returncode != 0
    assert "UnroutableError" in done.stderr
    assert time.monotonic() - start < 10  # not after the 30 s timeout


def test_rpc_timeout_option_ends_an_unanswered_call_with_timeout_error(admin, slow_names,
                                                                        run_tool, tk):
    admin.declare_bound_queue(slow_names.queue, slow_names.exchange, "k")  # nobody consumes it
    start = time.monotonic()
    done = run_tool(tk.POSTAGE, "rpc", slow_names.exchange, "k", "echo", "--timeout", "0.5")

    assert done.returncode != 0
    assert "TimeoutError" in done.stderr
    assert time.monotonic() - start < 6


def test_rpc_retries_option_sends_the_request_again_after_each_timeout(admin, slow_names,
                                                                        run_tool, tk):
    expired = f"{slow_names.queue}.expired"
    # nobody consumes it; each attempt expires there after 0.3 s and is dead-lettered
    admin.declare_bound_queue(slow_names.queue, slow_names.exchange, "k", expired_to=expired)
    try:
        done = run_tool(tk.POSTAGE, "rpc", slow_names.exchange, "k", "echo", "--timeout",
                        "0.3", "--retries", "2")

        assert done.returncode != 0
        assert "TimeoutError" in done.stderr
        tk.wait_for(lambda: admin.message_count(expired) == 3, 10, what="three attempts")
    finally:
        admin.delete_queue(expired)


def test_send_publishes_a_command_message_with_the_parameters(admin, slow_names, run_tool, tk):
    admin.declare_bound_queue(slow_names.queue, slow_names.exchange, "k")
    done = run_tool(tk.POSTAGE, "send", slow_names.exchange, "k", "hello", "who=world", "n=2")

    assert done.returncode == 0, done.stderr
    body = decode_envelope(admin.get_body(slow_names.queue))
    assert (body["category"], body["type"], body["name"]) == ("message", "command", "hello")
    assert body["content"] == {"parameters": {"who": "world", "n": 2}}


def test_send_quit_stops_the_component_with_exit_status_0(slow_names, spawn, run_tool, tk):
    component = spawn(tk.POSTAGE, "run", "slow_component:SlowProcessor",
                      env=slow_names.env())
    tk.wait_for_output(component, "consuming: SlowProcessor")

    done = run_tool(tk.POSTAGE, "send", slow_names.exchange, "slow", "quit")

    assert done.returncode == 0, done.stderr
    assert component.wait(timeout=15) == 0, tk.output(component)


@pytest.mark.parametrize("action", ["send", "rpc"])
def test_unreachable_broker_exits_nonzero_within_seconds_with_a_clear_message(action,
                                                                              run_tool, tk):
    start = time.monotonic()
    done = run_tool(tk.POSTAGE, action, "--url", UNREACHABLE, "some-exchange", "key", "echo")

    assert done.returncode == 3  # postage.cli's status for a broker it cannot reach
    assert time.monotonic() - start < 8
    assert "cannot reach the broker" in done.stderr
    assert "127.0.0.1:5999" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_with_bogus_log_level_is_a_usage_error(run_tool, tk):
    done = run_tool(tk.POSTAGE, "run", "examples.rpc_echo:EchoProcessor", "--log-level",
                    "bogus")

    assert done.returncode == 2
    assert "--log-level" in done.stderr
    assert "bogus" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_with_unknown_class_is_a_usage_error(run_tool, tk):
    done = run_tool(tk.POSTAGE, "run", "examples.rpc_echo:NoSuchProcessor")

    assert done.returncode == 2
    assert "NoSuchProcessor" in done.stderr
    assert "Traceback" not in done.stderr


def test_run_with_a_wrong_password_exits_nonzero_with_a_clear_log_line(run_tool, tk):
    password = f"wrong-{uuid.uuid4().hex}"
    start = time.monotonic()
    done = run_tool(tk.POSTAGE, "run", "examples.rpc_echo:EchoProcessor", "--url",
                    f"amqp://guest:{password}@127.0.0.1:5672/", timeout=20)

    assert done.returncode not in (0, None)
    assert time.monotonic() - start < 12
    output = done.stdout + done.stderr
    assert "refused user 'guest'" in output
    assert password not in output
    assert "Unhandled error" not in output


def test_run_with_a_missing_vhost_exits_nonzero_with_a_clear_log_line(run_tool, tk):
    vhost = f"postage-test-no-such-vhost-{uuid.uuid4().hex[:8]}"
    done = run_tool(tk.POSTAGE, "run", "examples.rpc_echo:EchoProcessor", "--vhost", vhost,
                    timeout=20)

    assert done.returncode not in (0, None)
    output = done.stdout + done.stderr
    assert f"vhost '{vhost}' does not exist" in output
    assert "Unhandled error" not in output


def test_run_retries_an_unreachable_broker_until_sigterm(spawn, tk):
    component = spawn(tk.POSTAGE, "run", "examples.rpc_echo:EchoProcessor", "--url",
                      UNREACHABLE)
    tk.wait_for(lambda: tk.output(component).count("connecting again in") >= 2, 15,
                what="two connection attempts")
    assert "cannot reach the broker at amqp://guest@127.0.0.1:5999" in tk.output(component)

    component.send_signal(signal.SIGTERM)

    assert component.wait(timeout=10) == 0, tk.output(component)
