"""The waker-side transitions, written once: sending a message and ending a child.

Both follow the rule that keeps wake-ups from being lost: the waker locks the waiter's row before it
writes the condition the waiter checks (a waiter locks its own row before it checks and parks).
Each runs inside the caller's transaction and adds to its `Bells` what must be published after the
commit.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from kodo.errors import NotFoundError
from kodo.workflow.ports import Session
from kodo.workflow.publisher import Bells

T = TypeVar("T")


def send_message(
    session: Session,
    bells: Bells,
    *,
    destination: str,
    topic: str,
    message_uuid: str,
    message: str,
    now: int,
    locked: bool = False,
) -> bool:
    """Insert a durable message and wake the destination if it waits on `topic`.

    The destination's row is locked here unless the caller locked it already (`locked`). False when
    `message_uuid` was sent before (an idempotent re-send: nothing written, nobody woken).
    """
    if not locked and session.lock(destination) is None:
        raise NotFoundError(f"workflow not found: {destination}")
    inserted = session.insert_notification(message_uuid, destination, topic, message, now)
    bells.add(session.wake_receiver(destination, topic, now))
    return inserted


def end_child(
    session: Session,
    bells: Bells,
    *,
    parent: str | None,
    child: str,
    now: int,
    transition: Callable[[], T],
) -> T:
    """Run `transition` (the child's terminal write) with its waiters locked first, then wake
    every workflow parked on this child, and the parent if it waits for its last one. Returns what
    `transition` returned.

    The waiters are the parent and any fork of it that reached `get_result(child)` (a fork shares
    its original's children). Waiters first: the parent either sees the child ended or is woken by
    it, as it locks its own row before it checks and parks; a fork, which this lock cannot know
    about before it parks, reads the child under a share lock instead (`Session.lock_child`).
    """
    if parent is not None:
        session.lock_child_waiters(parent, child)
    done = transition()
    if done and parent is not None:
        bells.add(*session.wake_child_waiters(parent, child, now))
    return done
