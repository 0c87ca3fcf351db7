"""The original Alys's AuxPoW difficulty retargeting, quirks included.

This follows ``get_next_work_required``, ``is_retarget_height`` and
``calculate_next_work_required`` in the original's ``app/src/auxpow_miner.rs`` (the V1 code;
the V2 actor port in ``app/src/actors/auxpow/difficulty.rs`` "fixes" the lower clamp, which we
do not). Every quirk below is reproduced on purpose, so that our node computes the same bits
as an original node would:

* **What "blocks since PoW" counts.** The original's ``auxpow_height_difference`` is
  ``head_height + 1 - last_pow_height``, where ``last_pow_height`` is the height of the block
  that *carries* the latest AuxPoW (the original's ``get_last_finalized_block`` returns that
  block, despite its name), not the height of its range end -- see :func:`blocks_since_pow`.
  It is cast to ``u32``; a 0 is logged as an error and replaced by 1 before the ratio (but not
  before the retarget test).
* **When.** A retarget happens when ``head_height % interval == 0`` (the head, not the next
  height) or when ``blocks_since_pow > interval``, where
  ``interval = pow_target_timespan // pow_target_spacing``. Otherwise, or when
  ``pow_no_retargeting`` is set, the last bits are kept.
* **The ratio mixes units.** ``ratio = blocks_since_pow / pow_target_spacing``: a block count
  over a number of seconds. Computed as a ``rust_decimal`` and rounded to 2 decimal places
  with ``round_dp``, i.e. half to even (banker's rounding); we compute it exactly with
  :class:`fractions.Fraction`, whose ``round`` is also half-even. (The original's 28-digit
  decimal division cannot move a quotient of 32- and 64-bit integers across a rounding
  midpoint, so the results agree for every input.)
* **The lower clamp is a ``min``, not a ``max`` (sic).** With ``bound = max_pow_adjustment /
  100``: if ``ratio < 1`` then ``ratio = min(ratio, bound)`` -- so *any* ratio below 1 becomes
  at most 0.20 (the target shrinks at least five-fold), and a ratio that rounds to 0.00
  (``blocks_since_pow * 200 < pow_target_spacing``) gives a zero target. If ``ratio > 1`` then
  ``ratio = min(ratio, 1 + bound)``; a ratio of exactly 1 is kept.
* **Integer percentage steps.** ``new_target = target // 100 * int(ratio * 100)``: the
  division comes first, so even a ratio of 1 loses the target's last two decimal digits. The
  product saturates at ``2**256 - 1`` (``Uint256::saturating_mul``).
* **Lenient compact decoding.** The last bits are decoded as the original's
  ``uint256_target_from_compact`` does (:func:`original_target_from_bits`), and the new target
  re-encoded with ``target_to_compact_lossy``, which equals Bitcoin Core's ``GetCompact``
  (:func:`node.types.bitcoin.target_to_bits`).
* **Limits are not enforced.** ``pow_limit`` and ``pow_lower_limit`` are configuration only:
  the original reads neither when retargeting, so the target may grow past ``pow_limit``.
* **Consequence.** Proofs that arrive fewer than ``pow_target_spacing`` blocks apart make the
  next retarget at least five times harder, later ones at most 20 % easier (and once more than
  ``interval`` blocks pass without a proof, every block retargets), so a steady miner settles
  at roughly one proof per ``pow_target_spacing`` blocks or more, whatever the starting bits.
  The original's dev spec starts at :data:`ORIGINAL_DEV_BITS` (mean ~0.3 s per proof on one
  core here with ``mine_auxpow``); :data:`REGTEST_BITS` suits tests that need instant proofs.
* A ``ratio * 100`` above 255 would make the original panic (``to_u8().unwrap()``); it can
  only happen with ``max_pow_adjustment > 155``, which :class:`DifficultyConfig` refuses.
  The original's operator "target override" is a node setting, not part of this rule.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any, Protocol

import attrs

from node.types.bitcoin import UINT32_MAX, target_to_bits

__all__ = [
    "MAX_MAX_POW_ADJUSTMENT",
    "RetargetSettings",
    "ORIGINAL_DEV",
    "ORIGINAL_DEV_BITS",
    "REGTEST_BITS",
    "DifficultyConfig",
    "adjustment_interval",
    "adjustment_percentage",
    "blocks_since_pow",
    "config_from",
    "is_retarget_height",
    "next_bits",
    "original_target_from_bits",
    "retarget",
    "retarget_ratio",
]

UINT256_MAX = (1 << 256) - 1

MAX_MAX_POW_ADJUSTMENT = 155
"""Largest ``max_pow_adjustment`` whose ``(1 + adj/100) * 100`` still fits the original's u8."""

ORIGINAL_DEV_BITS = 0x1E25CDF2
"""``bits`` of the original's ``dev`` chain spec (505794034). About 444,000 SHA256d hashes per
proof on average: ~0.3 s with :func:`node.workflows.auxpow.mine_auxpow` on one CPU core here."""

REGTEST_BITS = 0x207FFFFF
"""Bitcoin regtest's proof-of-work limit: about every second hash meets it."""


def _non_negative_int(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or value < 0:
        raise ValueError(f"{attribute.name} must be a non-negative integer, got {value!r}")


def _u32(_: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
    if type(value) is not int or not 0 <= value <= UINT32_MAX:
        raise ValueError(f"{attribute.name} must be an integer in 0..2**32-1, got {value!r}")


@attrs.frozen
class DifficultyConfig:
    """Retargeting parameters (the original's ``BitcoinConsensusParams`` plus the spec's bits).

    ``pow_target_timespan`` and ``pow_target_spacing`` are in seconds in the original's
    configuration, though the rule uses them as block counts (see the module docstring);
    ``max_pow_adjustment`` is a whole percentage (20 = 20 %). ``pow_limit`` and
    ``pow_lower_limit`` are compact bits that are carried but never enforced, as in the
    original. ``bits`` is the compact target of the genesis AuxPoW header.
    """

    pow_target_timespan: int = attrs.field(validator=_non_negative_int)
    pow_target_spacing: int = attrs.field(validator=_non_negative_int)
    max_pow_adjustment: int = attrs.field(validator=_non_negative_int)
    pow_limit: int = attrs.field(validator=_u32)
    pow_lower_limit: int = attrs.field(validator=_u32)
    bits: int = attrs.field(validator=_u32)
    pow_no_retargeting: bool = attrs.field(
        default=False, validator=attrs.validators.instance_of(bool)
    )

    def __attrs_post_init__(self) -> None:
        if self.pow_target_spacing == 0:
            raise ValueError("pow_target_spacing must be positive (it divides the timespan)")
        if self.pow_target_timespan < self.pow_target_spacing:
            raise ValueError(
                f"pow_target_timespan {self.pow_target_timespan} must be at least "
                f"pow_target_spacing {self.pow_target_spacing} (the interval would be 0)"
            )
        if self.max_pow_adjustment > MAX_MAX_POW_ADJUSTMENT:
            raise ValueError(
                f"max_pow_adjustment {self.max_pow_adjustment} exceeds "
                f"{MAX_MAX_POW_ADJUSTMENT}: the original would panic computing the percentage"
            )


ORIGINAL_DEV = DifficultyConfig(
    pow_target_timespan=60,
    pow_target_spacing=5,
    max_pow_adjustment=20,
    pow_limit=553713663,  # 0x2100ffff
    pow_lower_limit=439495319,  # 0x1a322a97
    bits=ORIGINAL_DEV_BITS,
)
"""The ``retarget_params`` and ``bits`` of the original's ``dev`` and ``dev-regtest`` specs
(``app/src/chain_spec.rs``)."""


class RetargetSettings(Protocol):
    """Anything carrying the retarget settings under their :class:`DifficultyConfig` names."""

    @property
    def pow_target_timespan(self) -> int: ...
    @property
    def pow_target_spacing(self) -> int: ...
    @property
    def max_pow_adjustment(self) -> int: ...
    @property
    def pow_limit(self) -> int: ...
    @property
    def pow_lower_limit(self) -> int: ...
    @property
    def bits(self) -> int: ...


def config_from(source: RetargetSettings) -> DifficultyConfig:
    """A :class:`DifficultyConfig` from an object with the same-named attributes (such as the
    node's configuration); ``pow_no_retargeting`` is read too when present, else ``False``.
    Invalid values raise ``ValueError`` as :class:`DifficultyConfig` does."""
    return DifficultyConfig(
        pow_target_timespan=source.pow_target_timespan,
        pow_target_spacing=source.pow_target_spacing,
        max_pow_adjustment=source.max_pow_adjustment,
        pow_limit=source.pow_limit,
        pow_lower_limit=source.pow_lower_limit,
        bits=source.bits,
        pow_no_retargeting=bool(getattr(source, "pow_no_retargeting", False)),
    )


def adjustment_interval(config: DifficultyConfig) -> int:
    """``pow_target_timespan // pow_target_spacing`` (``difficulty_adjustment_interval``)."""
    return config.pow_target_timespan // config.pow_target_spacing


def blocks_since_pow(head_height: int, last_pow_height: int) -> int:
    """The original's ``auxpow_height_difference``: ``head_height + 1 - last_pow_height``.

    ``last_pow_height`` is the height of the block that carries the latest AuxPoW header
    (genesis, which carries one, on a fresh chain), not the height of the range that header
    finalized; the result counts the blocks since it, including the one about to be
    produced. The retarget and the max-blocks-without-PoW rule both use it.
    """
    if head_height < 0 or last_pow_height < 0:
        raise ValueError(f"heights must be non-negative, got {head_height}, {last_pow_height}")
    if last_pow_height > head_height + 1:
        raise ValueError(
            f"last PoW height {last_pow_height} is beyond head height {head_height} + 1"
        )
    return head_height + 1 - last_pow_height


def _check_blocks_since_pow(value: int) -> None:
    if type(value) is not int or not 0 <= value <= UINT32_MAX:
        raise ValueError(
            f"blocks_since_pow must be an integer in 0..2**32-1 (the original's u32), got {value!r}"
        )


def is_retarget_height(config: DifficultyConfig, head_height: int, blocks_since_pow: int) -> bool:
    """Whether the original retargets: ``head_height % interval == 0`` or
    ``blocks_since_pow > interval`` (``is_retarget_height``)."""
    if type(head_height) is not int or head_height < 0:
        raise ValueError(f"head_height must be a non-negative integer, got {head_height!r}")
    _check_blocks_since_pow(blocks_since_pow)
    interval = adjustment_interval(config)
    return head_height % interval == 0 or blocks_since_pow > interval


def retarget_ratio(config: DifficultyConfig, blocks_since_pow: int) -> Fraction:
    """The clamped adjustment ratio, exactly as the original computes it (quirks included).

    ``ratio = round(max(blocks_since_pow, 1) / pow_target_spacing, 2)`` (half to even); below 1
    it becomes ``min(ratio, max_pow_adjustment / 100)`` (sic: ``min``); above 1
    ``min(ratio, 1 + max_pow_adjustment / 100)``; exactly 1 stays 1.
    """
    return Fraction(adjustment_percentage(config, blocks_since_pow), 100)


def adjustment_percentage(config: DifficultyConfig, blocks_since_pow: int) -> int:
    """``int(retarget_ratio * 100)``: the whole percentage the target is scaled by.

    Computed in integer hundredths (the ratio is rounded to two places, so it is a whole
    number of them): ``blocks * 100 / spacing`` rounded half to even, then clamped. The
    validator computes it for every block, so no :class:`Fraction` is made here."""
    _check_blocks_since_pow(blocks_since_pow)
    blocks = blocks_since_pow or 1  # the original logs "Auxpow height difference is 0"
    spacing = config.pow_target_spacing
    hundredths, remainder = divmod(blocks * 100, spacing)
    if 2 * remainder > spacing or (2 * remainder == spacing and hundredths & 1):
        hundredths += 1
    bound = config.max_pow_adjustment
    if hundredths < 100:
        hundredths = min(hundredths, bound)  # sic: the original clamps with min, not max
    elif hundredths > 100:
        hundredths = min(hundredths, 100 + bound)
    return hundredths


def original_target_from_bits(bits: int) -> int:
    """Decode compact ``bits`` as the original's ``uint256_target_from_compact`` does.

    ``size = bits >> 24``; for ``size <= 3`` the mantissa is ``(bits & 0xffffff) >> 8*(3-size)``
    with no shift, else ``bits & 0xffffff`` shifted left ``8*(size-3)`` bits; a mantissa above
    ``0x7fffff`` gives 0; the shift truncates to 256 bits (``Uint256`` ``<<``), so a too-large
    size silently loses bits instead of being flagged as Core's overflow. For canonical bits
    (no sign bit, no overflow) this equals :func:`node.types.bitcoin.bits_to_target`.
    """
    if type(bits) is not int or not 0 <= bits <= UINT32_MAX:
        raise ValueError(f"bits must be an integer in 0..2**32-1, got {bits!r}")
    size = bits >> 24
    if size <= 3:
        mantissa, shift = (bits & 0xFFFFFF) >> (8 * (3 - size)), 0
    else:
        mantissa, shift = bits & 0xFFFFFF, 8 * (size - 3)
    if mantissa > 0x7FFFFF:
        return 0
    return (mantissa << shift) & UINT256_MAX


def retarget(config: DifficultyConfig, last_bits: int, blocks_since_pow: int) -> int:
    """The new compact target (``calculate_next_work_required``).

    ``target // 100 * adjustment_percentage``, saturating at ``2**256 - 1``, re-encoded with
    ``target_to_compact_lossy``. Neither ``pow_limit`` nor ``pow_lower_limit`` is applied.
    """
    percentage = adjustment_percentage(config, blocks_since_pow)
    target = original_target_from_bits(last_bits)
    adjusted = min(target // 100 * percentage, UINT256_MAX)
    return target_to_bits(adjusted)


def next_bits(
    config: DifficultyConfig, last_bits: int, head_height: int, blocks_since_pow: int
) -> int:
    """The compact target a new AuxPoW must meet (the original's ``get_next_work_required``).

    ``last_bits`` is the bits of the latest AuxPoW header (the genesis header's for a fresh
    chain), ``head_height`` the height of the current head and
    ``blocks_since_pow`` the value of :func:`blocks_since_pow`. Returns ``last_bits`` unchanged
    unless :func:`is_retarget_height` (and retargeting is enabled), else :func:`retarget`.
    """
    if type(last_bits) is not int or not 0 <= last_bits <= UINT32_MAX:
        raise ValueError(f"last_bits must be an integer in 0..2**32-1, got {last_bits!r}")
    retarget_now = is_retarget_height(config, head_height, blocks_since_pow)  # checks the args
    if config.pow_no_retargeting or not retarget_now:
        return last_bits
    return retarget(config, last_bits, blocks_since_pow)
