"""Tests for node.workflows.difficulty: the original's retargeting, quirks included."""

from __future__ import annotations

from fractions import Fraction
from typing import Any

import attrs
import pytest
from hypothesis import given
from hypothesis import strategies as st

from node.types.bitcoin import bits_to_target, target_to_bits
from node.workflows.difficulty import (
    ORIGINAL_DEV,
    ORIGINAL_DEV_BITS,
    REGTEST_BITS,
    DifficultyConfig,
    adjustment_interval,
    adjustment_percentage,
    blocks_since_pow,
    config_from,
    is_retarget_height,
    next_bits,
    original_target_from_bits,
    retarget,
    retarget_ratio,
)

DEV = ORIGINAL_DEV  # timespan 60, spacing 5 (interval 12), max adjustment 20 %


def config(**changes: Any) -> DifficultyConfig:
    return attrs.evolve(DEV, **changes)


def test_original_dev_parameters() -> None:
    assert DEV.bits == ORIGINAL_DEV_BITS == 505794034 == 0x1E25CDF2
    assert (DEV.pow_target_timespan, DEV.pow_target_spacing, DEV.max_pow_adjustment) == (60, 5, 20)
    assert (DEV.pow_limit, DEV.pow_lower_limit) == (0x2100FFFF, 0x1A322A97)
    assert not DEV.pow_no_retargeting
    assert adjustment_interval(DEV) == 12


def test_config_from_any_settings_object() -> None:
    @attrs.frozen
    class NodeSettings:
        pow_target_timespan: int = 60
        pow_target_spacing: int = 5
        max_pow_adjustment: int = 20
        pow_limit: int = 0x2100FFFF
        pow_lower_limit: int = 0x1A322A97
        bits: int = ORIGINAL_DEV_BITS
        slot_duration_ms: int = 2000

    assert config_from(NodeSettings()) == DEV
    with pytest.raises(ValueError, match="pow_target_spacing"):
        config_from(NodeSettings(pow_target_spacing=0))


def test_blocks_since_pow_counts_the_block_being_produced() -> None:
    assert blocks_since_pow(10, 8) == 3
    assert blocks_since_pow(8, 8) == 1
    assert blocks_since_pow(7, 8) == 0
    with pytest.raises(ValueError, match="beyond head height"):
        blocks_since_pow(5, 7)
    with pytest.raises(ValueError, match="non-negative"):
        blocks_since_pow(-1, 0)


# ------------------------------------------------------------------ when to retarget


@pytest.mark.parametrize(
    ("head", "since", "expected"),
    [
        (0, 1, True),  # 0 % 12 == 0
        (12, 1, True),
        (24, 30, True),
        (13, 12, False),  # 12 is not > 12
        (13, 13, True),  # too long without PoW
        (11, 0, False),
        (23, 5, False),
    ],
)
def test_is_retarget_height(head: int, since: int, expected: bool) -> None:
    assert is_retarget_height(DEV, head, since) is expected


def test_no_retarget_keeps_the_last_bits() -> None:
    assert next_bits(DEV, 0x1D00FFFF, 13, 3) == 0x1D00FFFF
    assert next_bits(DEV, 0x1D00FFFF, 13, 12) == 0x1D00FFFF
    # The head height is tested, not the next height: head 11 (next 12) does not retarget.
    assert next_bits(DEV, 0x1D00FFFF, 11, 3) == 0x1D00FFFF
    off = config(pow_no_retargeting=True)
    assert next_bits(off, 0x1D00FFFF, 12, 3) == 0x1D00FFFF
    assert next_bits(off, 0x1D00FFFF, 13, 500) == 0x1D00FFFF


# ------------------------------------------------------------------ the ratio, quirks included


@pytest.mark.parametrize(
    ("since", "ratio"),
    [
        (0, Fraction(1, 5)),  # 0 is replaced by 1: 1/5
        (1, Fraction(1, 5)),
        (2, Fraction(1, 5)),  # 0.4 -> min(0.4, 0.2) (sic: min, not max)
        (3, Fraction(1, 5)),  # 0.6 -> 0.2
        (4, Fraction(1, 5)),  # 0.8 -> 0.2
        (5, Fraction(1)),  # exactly 1 is kept
        (6, Fraction(6, 5)),
        (7, Fraction(6, 5)),  # 1.4 -> min(1.4, 1.2)
        (1000, Fraction(6, 5)),
    ],
)
def test_ratio_with_the_original_dev_parameters(since: int, ratio: Fraction) -> None:
    assert retarget_ratio(DEV, since) == ratio
    assert adjustment_percentage(DEV, since) == int(ratio * 100)


def _ratio_as_written(cfg: DifficultyConfig, since: int) -> Fraction:
    """The original's formula, literally, in exact fractions."""
    ratio = round(Fraction(since or 1, cfg.pow_target_spacing), 2)
    bound = Fraction(cfg.max_pow_adjustment, 100)
    if ratio < 1:
        return min(ratio, bound)
    if ratio > 1:
        return min(ratio, 1 + bound)
    return ratio


@given(since=st.integers(0, 2**32 - 1), spacing=st.integers(1, 10**6),
       adjustment=st.integers(0, 155))
def test_the_integer_ratio_is_the_formula_rounded_half_to_even(
        since: int, spacing: int, adjustment: int) -> None:
    cfg = config(pow_target_spacing=spacing, pow_target_timespan=spacing * 12,
                 max_pow_adjustment=adjustment)
    expected = _ratio_as_written(cfg, since)
    assert retarget_ratio(cfg, since) == expected
    assert adjustment_percentage(cfg, since) == int(expected * 100)


def test_ties_round_to_even_hundredths() -> None:
    # 1/8 = 0.125 -> 0.12; 3/8 = 0.375 -> 0.38; 5/8 = 0.625 -> 0.62 (half to even)
    cfg = config(pow_target_spacing=8, pow_target_timespan=96, max_pow_adjustment=155)
    assert [adjustment_percentage(cfg, k) for k in (1, 3, 5, 7)] == [12, 38, 62, 88]


def test_lower_clamp_is_min_not_max() -> None:
    # The V2 port "fixes" this to max(ratio, 0.2); the V1 behaviour we reproduce keeps any
    # ratio below 1 at most 0.2, and lets a smaller ratio through unchanged.
    slow = config(pow_target_spacing=50, pow_target_timespan=600)
    assert retarget_ratio(slow, 5) == Fraction(1, 10)  # 0.1 stays 0.1: below the bound
    assert retarget_ratio(slow, 40) == Fraction(1, 5)  # 0.8 becomes 0.2


def test_ratio_rounds_half_to_even_exactly() -> None:
    wide = config(pow_target_spacing=200, pow_target_timespan=2400)
    # 31/200 = 0.155 exactly: half-even gives 0.16, where float round() would give 0.15.
    assert round(31 / 200, 2) == 0.15
    assert retarget_ratio(wide, 31) == Fraction(16, 100)
    assert retarget_ratio(wide, 29) == Fraction(14, 100)  # 0.145 -> 0.14
    eighths = config(pow_target_spacing=8, pow_target_timespan=96)
    assert retarget_ratio(eighths, 1) == Fraction(12, 100)  # 0.125 -> 0.12
    assert retarget_ratio(eighths, 3) == Fraction(1, 5)  # 0.375 -> 0.38 -> clamped to 0.2


def test_ratio_rounding_to_zero_gives_a_zero_target() -> None:
    sparse = config(pow_target_spacing=300, pow_target_timespan=3600)
    assert retarget_ratio(sparse, 1) == 0  # 1/300 rounds to 0.00
    assert retarget(sparse, ORIGINAL_DEV_BITS, 1) == 0
    assert next_bits(sparse, ORIGINAL_DEV_BITS, 12, 1) == 0


def test_max_adjustment_bounds() -> None:
    none = config(max_pow_adjustment=0)
    assert retarget_ratio(none, 3) == 0  # min(0.6, 0.0)
    assert retarget_ratio(none, 9) == 1  # min(1.8, 1.0)
    widest = config(max_pow_adjustment=155)
    assert adjustment_percentage(widest, 1000) == 255
    with pytest.raises(ValueError, match="would panic"):
        config(max_pow_adjustment=156)


# ------------------------------------------------------------------ the new target


def test_retarget_values_at_the_original_dev_bits() -> None:
    mantissa = 0x25CDF2
    assert next_bits(DEV, ORIGINAL_DEV_BITS, 12, 2) == 0x1E078F96  # 20 %
    assert 0x078F96 == mantissa * 20 // 100
    assert next_bits(DEV, ORIGINAL_DEV_BITS, 12, 9) == 0x1E2D5D88  # 120 %
    assert 0x2D5D88 == mantissa * 120 // 100
    # Ratio 1 still changes the bits: target // 100 * 100 drops the last decimal digits.
    assert next_bits(DEV, ORIGINAL_DEV_BITS, 12, 5) == 0x1E25CDF1


def test_retarget_divides_before_multiplying() -> None:
    target = bits_to_target(0x1D00FFFF)
    assert retarget(DEV, 0x1D00FFFF, 6) == target_to_bits(target // 100 * 120)
    assert target // 100 * 120 != target * 120 // 100
    tiny = 0x01630000  # target 99: 99 // 100 == 0
    assert original_target_from_bits(tiny) == 99
    assert retarget(DEV, tiny, 6) == 0


def test_limits_are_not_enforced() -> None:
    capped = config(pow_limit=0x1D00FFFF, bits=0x1D00FFFF)
    easier = next_bits(capped, 0x1D00FFFF, 12, 100)
    assert bits_to_target(easier) > bits_to_target(capped.pow_limit)
    harder = next_bits(DEV, DEV.pow_lower_limit, 12, 1)
    assert bits_to_target(harder) < bits_to_target(DEV.pow_lower_limit)


def test_target_saturates_at_2_256() -> None:
    assert retarget(DEV, 0x2100FFFF, 6) == target_to_bits(2**256 - 1) == 0x2100FFFF
    assert next_bits(DEV, REGTEST_BITS, 12, 6) == target_to_bits((0x7FFFFF << 232) // 100 * 120)


def test_difficulty_ratchets_when_proofs_come_fast() -> None:
    # A miner that finalizes every 2 blocks: each retarget (every 12 blocks) makes the
    # target five times smaller, because ratio 0.4 is clamped with min to 0.2.
    bits = ORIGINAL_DEV_BITS
    for _ in range(3):
        new = next_bits(DEV, bits, 24, 2)
        assert bits_to_target(new) * 5 <= bits_to_target(bits)
        bits = new
    # And one that waits 10 blocks makes it 20 % easier each time.
    assert bits_to_target(next_bits(DEV, bits, 24, 10)) > bits_to_target(bits)


# ------------------------------------------------------------------ compact decoding


@pytest.mark.parametrize(
    ("bits", "target"),
    [
        (0x1D00FFFF, 0xFFFF << 208),
        (0x03123456, 0x123456),
        (0x02123456, 0x1234),
        (0x04923456, 0),  # mantissa above 0x7fffff
        (0x03923456, 0),
        (0x01FEDCBA, 0xFE),  # Core: 0x7e and negative; the original never sees the sign here
        (0x22000100, 0),  # 2**256 truncated to 256 bits (Core flags overflow)
        (0x23000001, 0),
        (0xFF000001, 0),
    ],
)
def test_original_target_from_bits(bits: int, target: int) -> None:
    assert original_target_from_bits(bits) == target


@given(st.integers(min_value=0, max_value=2**256 - 1))
def test_original_decoding_equals_core_for_canonical_bits(target: int) -> None:
    bits = target_to_bits(target)
    assert original_target_from_bits(bits) == bits_to_target(bits)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"pow_target_spacing": 0}, "pow_target_spacing must be positive"),
        ({"pow_target_timespan": 4}, "must be at least"),
        ({"max_pow_adjustment": -1}, "non-negative"),
        ({"bits": 2**32}, "bits"),
        ({"pow_limit": -1}, "pow_limit"),
    ],
)
def test_config_validation(changes: dict[str, int], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        config(**changes)


def test_argument_validation() -> None:
    with pytest.raises(ValueError, match="blocks_since_pow"):
        next_bits(DEV, ORIGINAL_DEV_BITS, 12, 2**32)
    with pytest.raises(ValueError, match="head_height"):
        next_bits(DEV, ORIGINAL_DEV_BITS, -1, 1)
    with pytest.raises(ValueError, match="last_bits"):
        next_bits(DEV, -1, 12, 1)
    with pytest.raises(ValueError, match="blocks_since_pow"):
        next_bits(config(pow_no_retargeting=True), ORIGINAL_DEV_BITS, 12, -1)


@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=10**12),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=1, max_value=1000),
    st.integers(min_value=1, max_value=50),
    st.integers(min_value=0, max_value=155),
)
def test_next_bits_is_total(
    last_bits: int, head: int, since: int, spacing: int, intervals: int, adjustment: int
) -> None:
    cfg = config(
        pow_target_spacing=spacing,
        pow_target_timespan=spacing * intervals,
        max_pow_adjustment=adjustment,
    )
    bits = next_bits(cfg, last_bits, head, since)
    assert 0 <= bits < 2**32
    if not is_retarget_height(cfg, head, since):
        assert bits == last_bits
    else:
        assert 0 <= adjustment_percentage(cfg, since) <= 100 + adjustment
