"""Deterministic interleaving of in-process handlers at their AWS calls, and crash injection.

The model. Handlers share nothing but AWS, so the only points where one can observe or affect
another are its AWS calls. An *actor* is a named callable run in its own thread with its own
boto3 session(s) (from `session()`); every call made through those sessions' clients, from any
thread, stops at a gate in botocore's ``before-call`` event until the scheduler releases it.
A *step* is one released call (actor, service, operation). The scheduler waits until the system
is settled (every thread started for the run is stopped at a gate, finished, or parked in a
wait, and every actor still running has a call at a gate), then releases exactly one call and
waits again. So the local computation of a handler between two calls is atomic with respect to
the other actors, and moto only ever sees one call at a time.

Exploration is stateless model checking: each schedule re-runs a scenario from scratch (the
scenario factory makes fresh state, sessions and actors) and follows a list of choices, one
index into the sorted candidate calls per step. `explore` runs schedules per a policy
(`exhaustive`, `preemption_bounded`, `random`), calls the scenario's check after each, and
reports failures with the choices that `replay` follows to run that schedule again.

Faults. `crash_at` makes an actor's k-th call die before it is made or after it took effect
(its answer lost), like a SIGKILL: `Crashed` is raised and every later call through the session
raises `Crashed` too. `lose_answer` drops the k-th call's first answer and makes botocore send
it again, as its retry would after a dropped connection.

    def scenario():
        put_job(...)                                    # fresh state for every schedule
        sessions = {name: interleave.session() for name in ("a", "b")}
        actors = [Actor(name, functools.partial(Archiver(config, Aws(config, s)), msg), [s])
                  for name, s in sessions.items()]
        def check(result: Result) -> None:              # raises AssertionError when broken
            assert vault_archive_count(stack) == 1, result.raised
        return actors, check

    assert_all_pass(explore(scenario, preemption_bounded(1)))

Limits. A thread is seen as parked only in `threading.Condition.wait` (Event, Future, Queue,
Semaphore use it), in an idle `ThreadPoolExecutor` worker, or in `Thread.join`; a thread in
`time.sleep` or blocked on a plain lock counts as running, and the run fails after `timeout`
naming it. A timed wait counts as parked, so a handler that polls on a timer is scheduled as if
the poll would find nothing new. A crashed actor's threads are left where they are, with
what they hold, until the test process ends; any AWS call they make raises `Crashed`. The
thread inspection relies on CPython 3.11's threading and concurrent.futures code.
"""

from __future__ import annotations

import gc
import os
import queue
import random as _random
import sys
import threading
import time
import traceback
import weakref
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import thread as _futures_thread
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal

import boto3
import botocore.session

__all__ = [
    "Actor",
    "Crashed",
    "Exhaustive",
    "Failure",
    "Policy",
    "PreemptionBounded",
    "RandomWalk",
    "Report",
    "Result",
    "Run",
    "ScheduleError",
    "Step",
    "assert_all_pass",
    "calls",
    "crash_at",
    "crashed",
    "exhaustive",
    "explore",
    "lose_answer",
    "preemption_bounded",
    "random",
    "replay",
    "session",
]


class Crashed(BaseException):
    """The actor's process died here. A BaseException, so handlers' ``except Exception`` let it
    through, as nothing in a SIGKILLed process catches anything."""


class ScheduleError(AssertionError):
    """The scheduler could not go on: an actor made no progress, or a run did not follow the
    choices it was given (the scenario is not deterministic)."""


@dataclass(frozen=True)
class Step:
    """One released AWS call."""

    actor: str
    service: str
    operation: str

    def __str__(self) -> str:
        return f"{self.actor}: {self.service}.{self.operation}"


@dataclass
class Actor:
    """A named zero-argument callable, run in its own thread, and the sessions it calls AWS
    through (made by `session()`; no other actor may use them)."""

    name: str
    run: Callable[[], Any]
    sessions: Sequence[boto3.session.Session]


@dataclass
class Result:
    """What one schedule did: its steps, the choices that made them, each actor's outcome."""

    trace: list[Step]
    choices: list[int]
    returned: dict[str, Any]
    raised: dict[str, BaseException]

    def outcome(self, actor: str) -> Any:
        """The actor's return value, or its exception raised again."""
        if actor in self.raised:
            raise self.raised[actor]
        return self.returned[actor]

    def describe(self) -> str:
        steps = "\n".join(f"  {i:3}. {step}" for i, step in enumerate(self.trace, 1))
        outcomes = "; ".join(
            [f"{name} returned {value!r}" for name, value in self.returned.items()]
            + [f"{name} raised {exc!r}" for name, exc in self.raised.items()]
        )
        return f"trace:\n{steps or '  (no AWS calls)'}\nactors: {outcomes}"


Scenario = Callable[[], tuple[list[Actor], Callable[[Result], None]]]
# Picks one of the candidate calls, given the actor of the previous step.
_Chooser = Callable[[Sequence[Step], str | None], int]


@dataclass
class Run:
    """One schedule and what the scenario's check said of it (`error` None: it passed)."""

    result: Result
    error: Exception | None


@dataclass
class Failure(Run):
    """A schedule whose check failed; `replay(scenario, result.choices)` runs it again."""

    schedule: int = 0  # its index in the exploration
    seed: int | None = None  # the random policy's seed

    def describe(self) -> str:
        seed = f", seed {self.seed}" if self.seed is not None else ""
        return (
            f"schedule {self.schedule}{seed}: {type(self.error).__name__}: {self.error}\n"
            f"{self.result.describe()}\n"
            f"replay it with: interleave.replay(scenario, {self.result.choices})"
        )


# -- sessions, gates and faults ------------------------------------------------------------------

_CALL = "interleave.call"  # key of a call's number in botocore's request context


class _Process:
    """What the sessions of one actor share: whether it has crashed."""

    def __init__(self, name: str):
        self.name = name
        self.crash: Crashed | None = None
        self._lock = threading.Lock()

    def die(self, why: str) -> Crashed:
        with self._lock:
            if self.crash is None:
                self.crash = Crashed(f"{self.name}: {why}")
            return self.crash

    def check(self) -> None:
        """A dead process makes no more calls, not even in cleanup code."""
        if self.crash is not None:
            raise Crashed(f"{self.name}: already crashed ({self.crash})")


# Called with (service, operation, request key) before a call; blocks until it is released.
_Gate = Callable[[str, str, tuple[str, bytes]], None]


class _Hooks:
    """A session's botocore event handlers: the gate, the call count, the injected faults."""

    def __init__(self) -> None:
        self.calls = 0
        self.crash: tuple[int, str] | None = None
        self.lose: set[int] = set()
        self.process = _Process("session")
        self.gate: _Gate | None = None
        self._lock = threading.Lock()  # calls may come from several threads at once

    def before_call(
        self, model: Any, params: dict[str, Any], context: dict[str, Any], **_: Any
    ) -> None:
        self.process.check()
        service, operation = model.service_model.service_name, model.name
        if self.gate is not None:
            self.gate(service, operation, _request_key(params))
        with self._lock:
            self.calls += 1
            number = self.calls
        context[_CALL] = number
        if self.crash == (number, "before"):
            raise self.process.die(f"crashed before call {number} ({service}.{operation})")

    def after_call(self, context: dict[str, Any], **_: Any) -> None:
        """Also for ``after-call-error``: a call that failed still happened."""
        number = context.get(_CALL)
        if self.crash == (number, "after"):
            raise self.process.die(f"crashed after call {number}, its answer lost")
        self.process.check()  # another thread crashed the process while this call was out

    def needs_retry(self, attempts: int, request_dict: dict[str, Any], **_: Any) -> int | None:
        """Send the k-th call again whatever its first answer was (0: retry without delay)."""
        if attempts == 1 and request_dict["context"].get(_CALL) in self.lose:
            return 0
        return None


def _request_key(params: dict[str, Any]) -> tuple[str, bytes]:
    """What tells apart concurrent calls of one actor whatever order they arrived in (part
    numbers are in the URL, DynamoDB keys in the body); streamed bodies are left out."""
    body = params.get("body")
    if isinstance(body, str):
        body = body.encode()
    return (
        f"{params.get('url_path')}?{params.get('query_string')!r}",
        body if isinstance(body, bytes) else b"",
    )


_hooks: weakref.WeakKeyDictionary[boto3.session.Session, _Hooks] = weakref.WeakKeyDictionary()


@cache
def _loader() -> Any:
    """One botocore data loader for all sessions: each would otherwise parse the service models
    again, ~10x the cost of a schedule of a few calls. The models are only read."""
    return botocore.session.get_session().get_component("data_loader")


def session(**kwargs: Any) -> boto3.session.Session:
    """A boto3 session whose clients can be gated and crashed. Its hooks are registered before
    any client exists because a client copies the session's event handlers when it is made."""
    core = botocore.session.get_session()
    core.register_component("data_loader", _loader())
    new = boto3.session.Session(botocore_session=core, **kwargs)
    hooks = _Hooks()
    new.events.register("before-call", hooks.before_call, unique_id="interleave-before")
    new.events.register("after-call", hooks.after_call, unique_id="interleave-after")
    new.events.register("after-call-error", hooks.after_call, unique_id="interleave-error")
    new.events.register("needs-retry", hooks.needs_retry, unique_id="interleave-retry")
    _hooks[new] = hooks
    return new


def _hooks_of(s: boto3.session.Session) -> _Hooks:
    try:
        return _hooks[s]
    except (KeyError, TypeError):
        raise ValueError(f"{s!r} was not made by interleave.session()") from None


def crash_at(s: boto3.session.Session, k: int, mode: Literal["before", "after"]) -> None:
    """Crash the session's k-th call: "before" it is made, or "after" it took effect (its
    answer lost). Either way `Crashed` is raised, and so it is by every later call."""
    if mode not in ("before", "after"):
        raise ValueError(f"mode must be 'before' or 'after', not {mode!r}")
    _hooks_of(s).crash = (k, mode)


def lose_answer(s: boto3.session.Session, k: int) -> None:
    """The session's k-th call is made, its answer dropped, and it is made again; the caller
    gets the second answer (or error)."""
    _hooks_of(s).lose.add(k)


def crashed(s: boto3.session.Session) -> bool:
    """Whether the session's process has crashed (a thread of it may still wait on a call that
    will never answer, as a killed process's would)."""
    return _hooks_of(s).process.crash is not None


def calls(s: boto3.session.Session) -> int:
    """Calls the session has reached so far, a call crashed before it was made included: after
    a run with ``crash_at(s, k, ...)``, fewer than k means the crash never came."""
    return _hooks_of(s).calls


# -- one schedule --------------------------------------------------------------------------------


@dataclass(eq=False)
class _ActorState:
    actor: Actor
    process: _Process
    thread: threading.Thread = field(init=False)
    threads: set[threading.Thread] = field(default_factory=set)  # its own and helpers
    finished: bool = False
    returned: Any = None
    raised: BaseException | None = None
    last: Step | None = None

    @property
    def done(self) -> bool:
        return self.finished or self.process.crash is not None


@dataclass(eq=False)
class _Call:
    """A call stopped at its gate."""

    state: _ActorState
    step: Step
    order: tuple[str, str, str, tuple[str, bytes], int]  # candidates are sorted by this
    thread: threading.Thread
    released: bool = False


# Code objects of the waits in which a thread stays until another thread acts.
_CONDITION_WAIT = threading.Condition.wait.__code__
_POOL_WORKER = _futures_thread._worker.__code__
_JOIN = threading.Thread._wait_for_tstate_lock.__code__
_START = threading.Thread.start.__code__
_POLL = 0.001  # seconds between looks at threads that are neither at a gate nor finished


def _frames() -> dict[int, Any]:
    """Every thread's innermost frame (`sys._current_frames()`), with the collector off.

    On CPython 3.11 that call holds the runtime's lock on the list of threads while it makes
    frame objects, and an allocation may run the collector there. A finalizer it runs may then
    give the GIL to a thread that starts or ends a thread, which waits for that lock holding
    the GIL: the process hangs in C, where no timeout can stop it (python/cpython#106883).
    The scheduler looks every millisecond while handlers start and drop thread pools.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        return sys._current_frames()
    finally:
        if enabled:
            gc.enable()


def _parked(frame: Any, frames: dict[int, Any]) -> bool:
    """Whether a thread whose innermost frame is `frame` waits for another thread to act."""
    if frame is None:
        return False
    code = frame.f_code
    if code is _CONDITION_WAIT:
        # A new thread is not alive until it has started, so its creator, waiting for that in
        # Thread.start, is the one that must count as running.
        if frame.f_back.f_back is not None and frame.f_back.f_back.f_code is _START:
            return False
        # notify() takes the waiter off the list before waking it, so this is exact.
        local = frame.f_locals
        return "waiter" in local and local["waiter"] in local["self"]._waiters
    if code is _POOL_WORKER:
        return frame.f_locals["work_queue"].empty()
    if code is _JOIN:
        return frame.f_locals["self"].ident in frames
    return False


_MACHINERY = (
    threading.__file__,
    queue.__file__,
    os.path.dirname(_futures_thread.__file__),
    __file__,
)


def _where(frame: Any) -> str:
    """Where a thread is: its innermost frame outside threading machinery and this module."""
    stack = traceback.extract_stack(frame)
    entry = next((e for e in reversed(stack) if not e.filename.startswith(_MACHINERY)), stack[-1])
    return f"{entry.filename}:{entry.lineno} in {entry.name}"


class _Schedule:
    """Runs the actors of one scenario, one released call at a time."""

    def __init__(
        self, actors: list[Actor], choose: _Chooser, timeout: float, baseline: set[threading.Thread]
    ):
        """`baseline`: the threads that were there before the scenario was made, not ours to
        wait for."""
        names = [a.name for a in actors]
        if len(set(names)) != len(names):
            raise ValueError(f"actor names must differ: {names}")
        hooks = [[_hooks_of(s) for s in actor.sessions] for actor in actors]
        flat = [h for of_actor in hooks for h in of_actor]
        if len({id(h) for h in flat}) != len(flat) or any(h.calls or h.gate for h in flat):
            raise ValueError("each actor needs new sessions of its own")
        self.choose = choose
        self.timeout = timeout
        self.cond = threading.Condition()
        self.pending: list[_Call] = []
        self.trace: list[Step] = []
        self.choices: list[int] = []
        self.arrivals = 0
        self.version = 0  # changes whenever a call arrives or is released, or an actor ends
        self.baseline = baseline
        self.actors: list[_ActorState] = []
        for actor, of_actor in zip(actors, hooks, strict=True):
            state = _ActorState(actor, _Process(actor.name))
            state.thread = threading.Thread(
                target=self._body, args=(state,), name=actor.name, daemon=True
            )
            state.threads.add(state.thread)
            for h in of_actor:
                h.process = state.process  # a crash through one session kills them all
                h.gate = self._gate_for(state)
            self.actors.append(state)

    def _gate_for(self, state: _ActorState) -> _Gate:
        def gate(service: str, operation: str, key: tuple[str, bytes]) -> None:
            with self.cond:
                self.arrivals += 1
                call = _Call(
                    state,
                    Step(state.actor.name, service, operation),
                    (state.actor.name, service, operation, key, self.arrivals),
                    threading.current_thread(),
                )
                state.threads.add(call.thread)
                self.pending.append(call)
                self.version += 1
                self.cond.notify_all()
                while not call.released:
                    if state.process.crash is not None:
                        self.pending.remove(call)
                        self.version += 1
                        raise Crashed(f"{state.actor.name}: crashed while this call waited")
                    self.cond.wait()

        return gate

    def _body(self, state: _ActorState) -> None:
        try:
            state.returned = state.actor.run()
        except BaseException as exc:  # reported per actor; the scenario's check judges it
            state.raised = exc
        finally:
            with self.cond:
                state.finished = True
                self.version += 1
                self.cond.notify_all()

    def run(self) -> Result:
        for state in self.actors:
            state.thread.start()
        try:
            self._steps()
        except BaseException:
            self._abandon()
            raise
        finally:
            for state in self.actors:
                for s in state.actor.sessions:
                    _hooks_of(s).gate = None
        return Result(
            self.trace,
            self.choices,
            {
                s.actor.name: s.returned
                for s in self.actors
                if s.process.crash is None and s.raised is None
            },
            {
                s.actor.name: s.process.crash or s.raised
                for s in self.actors
                if s.process.crash is not None or s.raised is not None
            },
        )

    def _steps(self) -> None:
        deadline = time.monotonic() + self.timeout
        quiet: int | None = None  # the version at which the system last looked settled
        last: str | None = None
        with self.cond:
            while True:
                if any(c.state.process.crash for c in self.pending):
                    self.cond.notify_all()  # those gates raise Crashed
                if self._settled():
                    # Settled twice with nothing arriving in between: a thread that was
                    # between taking work and running it has had its chance to show up.
                    if quiet == self.version:
                        candidates = sorted(
                            (c for c in self.pending if c.state.process.crash is None),
                            key=lambda c: c.order,
                        )
                        if not candidates:
                            return
                        steps = [c.step for c in candidates]
                        choice = self.choose(steps, last)
                        if not 0 <= choice < len(candidates):
                            raise ScheduleError(
                                f"choice {choice} at step {len(self.trace) + 1}"
                                f" but {len(candidates)} candidates: {steps}"
                            )
                        call = candidates[choice]
                        call.released = True
                        self.pending.remove(call)
                        self.trace.append(call.step)
                        self.choices.append(choice)
                        call.state.last = call.step
                        last = call.step.actor
                        self.version += 1
                        self.cond.notify_all()
                        deadline = time.monotonic() + self.timeout
                        quiet = None
                        continue
                    quiet = self.version
                else:
                    quiet = None
                if time.monotonic() > deadline:
                    raise ScheduleError(self._stuck())
                self.cond.wait(_POLL)

    def _running(self) -> Iterator[tuple[threading.Thread, Any]]:
        """Threads of the run that are neither at a gate, finished, parked, nor a dead actor's."""
        frames = _frames()
        gated = {c.thread for c in self.pending}
        ignored = self.baseline | gated | {threading.current_thread()}
        for state in self.actors:
            if state.process.crash is not None:
                ignored |= state.threads
        for thread in threading.enumerate():
            if thread not in ignored and thread.is_alive():
                frame = frames.get(thread.ident)  # type: ignore[arg-type]
                if not _parked(frame, frames):
                    yield thread, frame

    def _settled(self) -> bool:
        if next(self._running(), None) is not None:
            return False
        waiting = {c.state for c in self.pending}
        return all(s.done or s in waiting for s in self.actors)

    def _stuck(self) -> str:
        after = (
            f"after step {len(self.trace)} ({self.trace[-1]})"
            if self.trace
            else "before the first step"
        )
        lines = [f"no progress within {self.timeout}s {after}:"]
        owner = {t: s.actor.name for s in self.actors for t in s.threads}
        waiting = {c.state for c in self.pending}
        frames = _frames()
        for s in self.actors:
            if not s.done and s not in waiting:
                places = ", ".join(
                    _where(frames[t.ident]) for t in s.threads if t.is_alive() and t.ident in frames
                )
                lines.append(
                    f"  actor {s.actor.name!r} has neither reached an AWS call nor "
                    f"finished (last step: {s.last or 'none'}); its threads are at: "
                    f"{places or '?'} (sleeping, or waiting for something that "
                    "never comes?)"
                )
        for thread, frame in self._running():
            whose = f"actor {owner[thread]!r}" if thread in owner else "no actor yet"
            lines.append(
                f"  thread {thread.name!r} ({whose}) is still running at "
                f"{_where(frame) if frame is not None else '?'}"
            )
        return "\n".join(lines)

    def _abandon(self) -> None:
        """Stop a failed run: every actor dies, so its gated calls and any later ones raise
        Crashed instead of reaching AWS after the test has moved on."""
        with self.cond:
            for state in self.actors:
                state.process.die("run abandoned")
            self.cond.notify_all()


def _run(scenario: Scenario, choose: _Chooser, timeout: float) -> Run:
    baseline = set(threading.enumerate())
    actors, check = scenario()
    result = _Schedule(actors, choose, timeout, baseline).run()
    try:
        check(result)
    except Exception as exc:
        return Run(result, exc)
    return Run(result, None)


# -- exploration ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Exhaustive:
    """Every interleaving, depth first, up to `max_schedules`."""

    max_schedules: int = 1000


@dataclass(frozen=True)
class PreemptionBounded:
    """Every interleaving with at most `k` preemptions: switching away from an actor that could
    still run. Switching when the actor finishes or has no call waiting is free."""

    k: int
    max_schedules: int = 1000


@dataclass(frozen=True)
class RandomWalk:
    """`n` schedules, each picking a random candidate at every step; schedule i's choices come
    from the seed and i alone."""

    n: int
    seed: int = 0


Policy = Exhaustive | PreemptionBounded | RandomWalk


def exhaustive(max_schedules: int = 1000) -> Exhaustive:
    return Exhaustive(max_schedules)


def preemption_bounded(k: int, max_schedules: int = 1000) -> PreemptionBounded:
    return PreemptionBounded(k, max_schedules)


def random(n: int, seed: int = 0) -> RandomWalk:
    return RandomWalk(n, seed)


def _random_chooser(seed: str) -> _Chooser:
    rng = _random.Random(seed)  # a str seed hashes the same in every process
    return lambda candidates, _: rng.randrange(len(candidates))


def _preempts(candidates: Sequence[Step], last: str | None, choice: int) -> bool:
    return (
        last is not None
        and candidates[choice].actor != last
        and any(c.actor == last for c in candidates)
    )


@dataclass
class _Point:
    """A choice point of the depth-first search: the candidates seen, the choices to try."""

    candidates: tuple[Step, ...]
    options: list[int]
    at: int = 0


class _Tree:
    """Depth-first search over the choice points of a deterministic scenario."""

    def __init__(self, bound: int | None):
        self.bound = bound
        self.path: list[_Point] = []

    def chooser(self) -> _Chooser:
        depth = 0
        preemptions = 0

        def choose(candidates: Sequence[Step], last: str | None) -> int:
            nonlocal depth, preemptions
            if depth == len(self.path):
                indices = range(len(candidates))
                calm = [i for i in indices if not _preempts(candidates, last, i)]
                options = calm + [
                    i
                    for i in indices
                    if i not in calm and (self.bound is None or preemptions < self.bound)
                ]
                self.path.append(_Point(tuple(candidates), options))
            point = self.path[depth]
            if point.candidates != tuple(candidates):
                raise ScheduleError(
                    f"the scenario is not deterministic: at step {depth + 1} the candidates "
                    f"were {list(point.candidates)} before and are {list(candidates)} now"
                )
            choice = point.options[point.at]
            depth += 1
            preemptions += _preempts(candidates, last, choice)
            return choice

        return choose

    def advance(self) -> bool:
        """Move to the next schedule; False when every one has been run."""
        while self.path and self.path[-1].at + 1 == len(self.path[-1].options):
            self.path.pop()
        if not self.path:
            return False
        self.path[-1].at += 1
        return True


@dataclass
class Report:
    """What an exploration ran and found."""

    policy: Policy
    schedules: int = 0
    traces: list[tuple[Step, ...]] = field(default_factory=list)  # in the order run
    failures: list[Failure] = field(default_factory=list)
    exhausted: bool = False  # every schedule the policy allows was run

    @property
    def distinct(self) -> int:
        return len(set(self.traces))


def explore(scenario: Scenario, policy: Policy = Exhaustive(), *, timeout: float = 10.0) -> Report:
    """Run the scenario under the policy's schedules, checking each; a scheduling problem
    (an actor stuck for `timeout` seconds, a non-deterministic scenario) raises ScheduleError."""
    report = Report(policy)

    def record(run: Run, seed: int | None = None) -> None:
        report.traces.append(tuple(run.result.trace))
        if run.error is not None:
            report.failures.append(Failure(run.result, run.error, report.schedules, seed))
        report.schedules += 1

    if isinstance(policy, RandomWalk):
        for i in range(policy.n):
            record(_run(scenario, _random_chooser(f"{policy.seed}:{i}"), timeout), policy.seed)
        return report
    tree = _Tree(policy.k if isinstance(policy, PreemptionBounded) else None)
    while report.schedules < policy.max_schedules:
        run = _run(scenario, tree.chooser(), timeout)
        if len(run.result.choices) != len(tree.path):
            raise ScheduleError(
                f"the scenario is not deterministic: it ended after "
                f"{len(run.result.choices)} steps, before {len(tree.path)}"
            )
        record(run)
        if not tree.advance():
            report.exhausted = True
            break
    return report


def replay(scenario: Scenario, choices: Sequence[int], *, timeout: float = 10.0) -> Run:
    """Run exactly the schedule the choices describe (a Failure's `result.choices`)."""
    given = iter(choices)

    def choose(candidates: Sequence[Step], _: str | None) -> int:
        try:
            return next(given)
        except StopIteration:
            raise ScheduleError(
                f"replay: the run goes on past the {len(choices)} choices "
                f"given (candidates: {list(candidates)})"
            ) from None

    run = _run(scenario, choose, timeout)
    if len(run.result.choices) != len(choices):
        raise ScheduleError(
            f"replay: the run ended after {len(run.result.choices)} of the "
            f"{len(choices)} choices given"
        )
    return run


def assert_all_pass(report: Report) -> None:
    """Raise one AssertionError describing the first failure and how to replay it."""
    if report.failures:
        scope = "every schedule" if report.exhausted else "not exhausted"
        raise AssertionError(
            f"{len(report.failures)} of {report.schedules} schedules failed ({report.policy}, "
            f"{scope}); first: {report.failures[0].describe()}"
        )
