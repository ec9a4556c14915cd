"""Intent/run ids (contract-api §6.1): the original's xorshift32 sequence, format, seeding, bounds."""

from __future__ import annotations

import re

import pytest

from kodo.intent import ids
from kodo.intent.ids import IdGenerator, IdSpaceExhaustedError, Xorshift32

ID = re.compile(r"^(it|run)_[0-9a-f]{16}$")

# Produced by the original's rng.ts + id.ts under node: setRngSeed(seed), then
# generateId("it"), generateId("run"), generateId("it").
KNOWN = {
    42: ("it_0a1de5d9b3bcb474", "run_20cac98971c89425", "it_e5aa93c55e79211e"),
    1: ("it_009182217a95b00c", "run_3c1f8e5d05913a0c", "it_0a53c4377b480bc8"),
    0xDEADBEEF: ("it_48bf6a61864f6095", "run_738d24bbf33338f5", "it_873dfc46ab0770f7"),
    2**32 + 7: ("it_01eba70251e2686d", "run_be7618ec18594739", "it_cd1feab68aa597e1"),  # `>>> 0` wraps
}


@pytest.mark.parametrize(("seed", "expected"), sorted(KNOWN.items()))
def test_seeded_sequence_matches_the_original(seed: int, expected: tuple[str, str, str]) -> None:
    g = IdGenerator(seed)
    assert (g.new_id("it"), g.new_id("run"), g.new_id("it")) == expected


def test_negative_seed_wraps_like_unsigned_shift() -> None:
    assert IdGenerator(-1).new_id("it") == IdGenerator(0xFFFFFFFF).new_id("it")


def test_zero_seed_does_not_get_stuck() -> None:
    # xorshift32 maps 0 to 0 forever; the generator falls back to the original's default state.
    assert Xorshift32(0).state == Xorshift32(0x12345678).state
    g = IdGenerator(0)
    assert g.new_id("it") != g.new_id("it")


def test_format_is_prefix_and_16_lowercase_hex() -> None:
    g = IdGenerator()
    for prefix in ("it", "run"):
        for _ in range(200):
            assert ID.match(g.new_id(prefix))


def test_unseeded_generators_draw_different_sequences() -> None:
    assert IdGenerator().new_id("it") != IdGenerator().new_id("it")


def test_unseeded_generator_reseeds_after_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    g = IdGenerator()
    state = g._rng.state
    monkeypatch.setattr("kodo.intent.ids.os.getpid", lambda: -12345)  # as seen by a forked child
    g.new_id("it")
    assert g._pid == -12345
    assert g._rng.state != Xorshift32(state).next_u32()  # not the parent's next draw


def test_seeded_generator_keeps_its_sequence_across_a_fork(monkeypatch: pytest.MonkeyPatch) -> None:
    g = IdGenerator(42)
    first = g.new_id("it")
    monkeypatch.setattr("kodo.intent.ids.os.getpid", lambda: -12345)
    assert (first, g.new_id("run")) == KNOWN[42][:2]


def test_candidates_are_successive_draws_and_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ids, "MAX_DRAWS", 3)
    drawn = []
    with pytest.raises(IdSpaceExhaustedError, match="no free it_ id after 3 draws"):
        for candidate in IdGenerator(42).candidates("it"):
            drawn.append(candidate)
    assert drawn[0] == KNOWN[42][0]
    assert len(drawn) == len(set(drawn)) == 3
