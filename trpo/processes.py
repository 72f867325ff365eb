"""Child processes that serve one object's methods over a pipe: the env workers and the value fit.

A child is spawned, not forked (fork is unsafe once torch and W&B run threads), and moves to a process
group of its own, so that signals for the trainer's group (Ctrl-C, `kill -- -PGID`) leave it serving:
the trainer decides what they mean and still needs its children to write the checkpoint. It also
ignores SIGINT; SIGTERM sent to it kills it, so terminate() works. Closing is bounded: a child that has
not exited `timeout` seconds after the close request (a hung method, a reply nobody reads) is
terminated, then killed. A child is a daemon: multiprocessing's exit handler terminates any left.
"""

import multiprocessing
import os
import signal
import threading
import time
import traceback
from multiprocessing import resource_tracker
from typing import Any, Callable, Sequence

CLOSE = None  # the method name that asks a child to exit


class ChildError(RuntimeError):
    """A child raised (the message carries its traceback) or exited without replying."""


def _serve(connection, factory: Callable, args: tuple) -> None:
    """The child: build factory(*args), then answer (method, args) requests in order until close or EOF."""
    os.setpgrp()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})  # blocked while the parent spawned us
    try:
        served, failure = factory(*args), None
    except Exception:  # reported as the reply to every request, so the trainer sees why
        served, failure = None, traceback.format_exc()
    while True:
        try:
            method, method_args = connection.recv()
        except (EOFError, OSError):  # the trainer is gone
            break
        if method is CLOSE:
            break
        try:
            reply = (False, failure) if failure else (True, getattr(served, method)(*method_args))
        except Exception:
            reply = False, traceback.format_exc()
        try:
            connection.send(reply)
        except OSError:  # the trainer closed its end while we were replying
            break
        except Exception:  # a reply that does not pickle: nothing was written yet
            connection.send((False, traceback.format_exc()))
    connection.close()
    os._exit(0)  # nothing to flush: skip the interpreter's teardown (0.7 s with torch loaded)


def _start_uninterrupted(process: multiprocessing.Process) -> None:
    """process.start() that no signal handler cuts short (a half-spawned child reads a truncated start-up
    message and dies printing an EOFError); a SIGINT or SIGTERM meanwhile is raised again right after.

    The child inherits SIGINT blocked, so a Ctrl-C during its own start-up stays the trainer's.
    """
    received = []
    main = threading.current_thread() is threading.main_thread()  # only there can handlers be set
    previous = {number: signal.signal(number, lambda number, frame: received.append(number))
                for number in (signal.SIGINT, signal.SIGTERM)} if main else {}
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)
        for number, handler in previous.items():
            signal.signal(number, handler)
        for number in received:
            signal.raise_signal(number)


class Child:
    """A spawned process serving the methods of factory(*args): call(), or send() then receive().

    name: how messages name the child (and its process name).
    factory, args: picklable; the object is built in the child.
    """

    def __init__(self, name: str, factory: Callable, *args):
        self.name = name
        context = multiprocessing.get_context("spawn")
        self._connection, child_end = context.Pipe()
        self.process = context.Process(target=_serve, args=(child_end, factory, args), name=name, daemon=True)
        resource_tracker.ensure_running()  # here: starting it inside start() would unblock SIGINT there
        try:
            _start_uninterrupted(self.process)
        except BaseException:  # e.g. StoppedNow for a Ctrl-C during start(): no child left behind
            self.close(timeout=0)
            raise
        finally:
            child_end.close()  # the child's end is then its own only: its exit shows as EOF here

    def send(self, method: str, *args) -> None:
        try:
            self._connection.send((method, args))
        except OSError:
            raise self._exited() from None

    def receive(self) -> Any:
        """The reply to the oldest request not yet received; raises ChildError for the child's error."""
        try:
            ok, reply = self._connection.recv()
        except (EOFError, OSError):
            raise self._exited() from None
        if not ok:
            raise ChildError(f"in {self.name}:\n{reply}")
        return reply

    def _exited(self) -> ChildError:
        self.process.join(timeout=1)
        return ChildError(f"{self.name} exited unexpectedly (exit code {self.process.exitcode})")

    def call(self, method: str, *args) -> Any:
        self.send(method, *args)
        return self.receive()

    def close(self, timeout: float = 5.0) -> None:
        """Ask the child to exit and close our end (a child blocked sending a reply then gets a broken
        pipe); terminate it, then kill it, when it has not exited within timeout seconds."""
        close_all([self], timeout)


def close_all(children: Sequence[Child], timeout: float = 5.0) -> None:
    """Child.close for several children at once: one timeout for all of them. Safe to call again."""
    for child in children:
        if not child._connection.closed:
            try:
                child._connection.send((CLOSE, ()))
            except OSError:  # it has exited already
                pass
            child._connection.close()
    started = [child for child in children if child.process.pid is not None]  # a start() may have been cut short
    deadline = time.monotonic() + timeout
    for child in started:
        child.process.join(max(0.0, deadline - time.monotonic()))
    for child in started:
        if child.process.exitcode is None:
            child.process.terminate()
            child.process.join(1)
        if child.process.exitcode is None:  # stopped, or ignoring SIGTERM
            child.process.kill()
            child.process.join()


def call_all(children: Sequence[Child], method: str, args_per_child: Sequence[tuple]) -> list[Any]:
    """method on every child at once (all requests first), then every reply in order.

    When one fails, the others' replies are still read (none is left blocked sending), then the first
    error is raised.
    """
    asked, replies, errors = [], [], []
    for child, args in zip(children, args_per_child):
        try:
            child.send(method, *args)
            asked.append(child)
        except ChildError as error:
            errors.append(error)
    for child in asked:
        try:
            replies.append(child.receive())
        except ChildError as error:
            errors.append(error)
    if errors:
        raise errors[0]
    return replies
