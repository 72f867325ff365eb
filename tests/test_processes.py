"""The child-process layer: replies, errors with tracebacks, signals, and a bounded close."""

import os
import signal
import time

import numpy as np
import pytest

from trpo.processes import Child, ChildError, call_all


class Served:
    """What the test children serve."""

    def echo(self, value):
        return value

    def large(self, megabytes: int) -> np.ndarray:  # far more than a pipe's buffer
        return np.ones(megabytes << 20, dtype=np.uint8)

    def ignore_sigterm(self) -> None:  # as a child stuck in C code that no SIGTERM stops
        signal.signal(signal.SIGTERM, signal.SIG_IGN)

    def hang(self) -> None:
        time.sleep(600)

    def fail(self) -> None:
        raise KeyError("on purpose")

    def fail_or_large(self, fail: bool) -> np.ndarray:
        if fail:
            self.fail()
        return self.large(32)


class FailsToStart:
    def __init__(self):
        raise OSError("no such simulator")


def closed_within(child: Child, seconds: float, timeout: float = 5.0) -> bool:
    started = time.monotonic()
    child.close(timeout=timeout)
    return time.monotonic() - started < seconds and child.process.exitcode is not None


def test_a_child_answers_in_order_and_reports_errors_with_their_traceback():
    child = Child("test child", Served)
    try:
        child.send("echo", 1)
        child.send("echo", "two")
        assert (child.receive(), child.receive()) == (1, "two")
        with pytest.raises(ChildError, match=r"(?s)in test child:\nTraceback.*KeyError: 'on purpose'"):
            child.call("fail")
        assert child.call("echo", [3]) == [3]  # it goes on serving after an error
    finally:
        assert closed_within(child, 3)
    assert child.process.exitcode == 0


def test_an_error_while_starting_is_the_reply_to_every_request():
    child = Child("starter", FailsToStart)
    for _ in range(2):
        with pytest.raises(ChildError, match="(?s)in starter:.*OSError: no such simulator"):
            child.call("anything")
    assert closed_within(child, 3)


def test_sigint_is_ignored_and_sigterm_stops_the_child():
    child = Child("test child", Served)
    child.call("echo", 0)
    os.kill(child.process.pid, signal.SIGINT)
    assert child.call("echo", 1) == 1
    os.kill(child.process.pid, signal.SIGTERM)
    with pytest.raises(ChildError, match=r"test child exited unexpectedly \(exit code -15\)"):
        child.call("echo", 2)
    assert closed_within(child, 3)


def test_a_child_blocked_sending_a_reply_nobody_reads_is_closed_at_once():
    child = Child("test child", Served)
    child.call("echo", 0)  # started
    child.send("large", 64)
    time.sleep(1)
    assert child.process.is_alive()  # blocked in send: 64 MB do not fit in a pipe
    assert closed_within(child, 2)


def test_a_hung_child_is_killed_after_the_timeout():
    child = Child("test child", Served)
    child.call("ignore_sigterm")
    child.send("hang")
    assert closed_within(child, 4, timeout=1)
    assert child.process.exitcode == -signal.SIGKILL


def test_call_all_reads_every_reply_before_raising_the_first_error():
    children = [Child("child 0", Served), Child("child 1", Served)]
    try:
        for failing in (0, 1):
            with pytest.raises(ChildError, match=f"(?s)in child {failing}:.*KeyError"):
                call_all(children, "fail_or_large", [(index == failing,) for index in range(2)])
            assert [child.call("echo", index) for index, child in enumerate(children)] == [0, 1]  # none left unread
    finally:
        assert all(closed_within(child, 3) for child in children)
