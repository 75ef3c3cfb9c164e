"""A 3.0.3-style (``postage.messaging``) component under twistd whose handler is still running
when SIGTERM comes: the stop gives up on it after ``stop_timeout``, never blocks the reactor
thread, and the process exits; the unfinished message stays queued for the next consumer."""

from __future__ import annotations

import signal


def test_sigterm_completes_with_a_handler_stuck_past_stop_timeout(slow_names, spawn,
                                                                  run_tool, admin, tk):
    component = spawn(tk.TWISTD, "-n", "--pidfile=", "postage", "--processor",
                      "slow_component:StuckBlockingProcessor", env=slow_names.env())
    tk.wait_for_output(component, "consuming: StuckBlockingProcessor")
    done = run_tool(tk.POSTAGE, "send", slow_names.exchange, "slow", "slow", "n=1",
                    "seconds=4")
    assert done.returncode == 0, done.stderr
    tk.wait_for(lambda: "started 1" in slow_names.lines(), 10, what="the handler to start")

    component.send_signal(signal.SIGTERM)

    assert component.wait(timeout=30) == -signal.SIGTERM, tk.output(component)
    output = tk.output(component)
    assert "Server Shut Down." in output
    assert "handlers still running after 1s" in output
    assert "finished 1" not in slow_names.lines()  # it was left behind, unacked
    assert tk.wait_for(lambda: admin.message_count(slow_names.queue) == 1, 10,
                       what="the unacked message back in its queue")
