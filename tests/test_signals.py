"""The signal guard: a signal stops at once with 128 + its number, or waits for a training step boundary, and a
second one does not wait."""

from __future__ import annotations

import os
import signal

import pytest

from earthcast.errors import UserError
from earthcast.signals import GUARD, Stopped, parse_signal


@pytest.fixture
def guard():
    """GUARD installed for SIGUSR2 in this process, everything restored afterwards."""
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGUSR2)
    handlers = {signum: signal.getsignal(signum) for signum in handled}
    GUARD.installed.clear()
    GUARD.reset()
    GUARD.install(signal.SIGUSR2)
    yield GUARD
    for signum, handler in handlers.items():
        signal.signal(signum, handler)
    GUARD.installed.clear()
    GUARD.reset()


@pytest.mark.parametrize("value,expected", [("USR1", signal.SIGUSR1), ("SIGUSR2", signal.SIGUSR2),
                                            ("term", signal.SIGTERM), (15, signal.SIGTERM), ("10", signal.SIGUSR1)])
def test_signals_by_name_or_number(value, expected):
    assert parse_signal(value) == expected


@pytest.mark.parametrize("value", ["BOGUS", "", "99999", None])
def test_what_is_not_a_signal(value):
    with pytest.raises(UserError, match="is not a signal"):
        parse_signal(value)


def test_the_exit_code_is_128_plus_the_signal_number():
    assert Stopped(signal.SIGINT).exit_code == 130 and Stopped(signal.SIGTERM).exit_code == 143
    assert Stopped(signal.SIGUSR1).exit_code == 138 and Stopped(signal.SIGTERM).name == "SIGTERM"
    assert not isinstance(Stopped(signal.SIGTERM), Exception)  # `except Exception` on the way out lets it pass


def test_a_signal_stops_at_once_outside_a_training_loop(guard):
    with pytest.raises(Stopped) as stopped:
        os.kill(os.getpid(), signal.SIGUSR2)
    assert stopped.value.signum == signal.SIGUSR2 and guard.received == signal.SIGUSR2


def test_a_training_loop_defers_the_signal_until_a_second_one(guard):
    guard.deferring = True
    os.kill(os.getpid(), signal.SIGTERM)  # recorded; the loop stops at its next step boundary
    assert guard.received == signal.SIGTERM
    with pytest.raises(Stopped, match="second SIGINT"):
        os.kill(os.getpid(), signal.SIGINT)
