"""postage.fleet: the ``postage ps`` table, exactly as printed (sorted rows, counters
right-aligned, defaults for what an answer lacks)."""

from postage.fleet import COLUMNS, format_table


def answer(name, host, pid, handled=0, failed=0, in_flight=0, uptime=5, kind="component"):
    return {"fingerprint": {"name": name, "type": kind, "host": host, "pid": pid},
            "postage_version": "4.0.0", "uptime_s": uptime,
            "counters": {"handled": handled, "failed": failed, "in_flight": in_flight}}


def test_the_table_is_sorted_by_name_host_then_pid_with_counters_right_aligned():
    table = format_table([
        answer("b", "h1", 20, handled=1234, failed=5, in_flight=2, uptime=3700),
        answer("a", "h2", 100, handled=7),
        answer("a", "h2", 9),
        answer("a", "h1", 30, uptime=61),
    ])
    lines = table.splitlines()
    assert table.endswith("\n")
    assert len(lines) == 5
    assert lines[0].split() == ["NAME", "TYPE", "HOST", "PID", "VERSION", "UPTIME", "HANDLED",
                                "FAILED", "IN", "FLIGHT"]
    rows = [line.split() for line in lines[1:]]
    assert [(row[0], row[2], row[3]) for row in rows] == [
        ("a", "h1", "30"), ("a", "h2", "9"), ("a", "h2", "100"), ("b", "h1", "20")]
    assert rows[0][5] == "1m01s" and rows[3][5] == "1h01m"
    assert rows[3][6:] == ["1234", "5", "2"]
    # right-aligned counters: the last characters of every line line up
    widths = {len(line) for line in lines}
    assert len(widths) == 1
    assert lines[1].endswith("  " + "0".rjust(len("IN FLIGHT")))


def test_an_answer_lacking_fields_gets_defaults():
    table = format_table([{"fingerprint": {"name": "x", "pid": "p"}}])
    row = table.splitlines()[1].split()
    assert row == ["x", "None", "None", "p", "None", "0s", "0", "0", "0"]


def test_an_empty_table_is_the_header_alone():
    table = format_table([])
    assert table.count("\n") == 1
    assert table.rstrip("\n") == table.splitlines()[0]
    assert table.startswith(COLUMNS[0])
