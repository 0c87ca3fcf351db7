"""The federation's script and witness rules (node.workflows.federation) on their own; the
spend itself is checked by btcd in tests/integration/test_federation.py."""

from __future__ import annotations

from typing import Any

import pytest
from btclib.script.taproot import check_output_pubkey
from hypothesis import given
from hypothesis import strategies as st

from node.workflows.federation import MAX_MEMBERS, NUMS_KEY, Federation, threshold

KEYS = tuple(bytes([i + 1]) * 32 for i in range(MAX_MEMBERS))


@pytest.mark.parametrize(("n", "k"), [(1, 1), (2, 2), (3, 2), (4, 3), (5, 4), (6, 4), (7, 5),
                                      (10, 7), (15, 10)])
def test_the_threshold_is_ceil_two_thirds(n: int, k: int) -> None:
    assert threshold(n) == k
    assert Federation(KEYS[:n]).threshold == k


def test_the_script_lists_every_key_then_k() -> None:
    federation = Federation(KEYS[:3])
    script = federation.script
    assert script == (b"\x20" + KEYS[0] + b"\xac" + b"\x20" + KEYS[1] + b"\xba"
                      + b"\x20" + KEYS[2] + b"\xba" + b"\x52\xa2")
    # The control block proves the leaf under the output key, with the NUMS internal key.
    assert federation.control_block[1:33] == NUMS_KEY
    assert check_output_pubkey(federation.output_key, script, federation.control_block)
    assert federation.script_pubkey == b"\x51\x20" + federation.output_key
    assert federation.address("regtest").startswith("bcrt1p")
    assert federation.address().startswith("bc1p")


def test_the_witness_holds_signatures_in_reverse_key_order() -> None:
    federation = Federation(KEYS[:4])
    sig = {0: b"\x00" * 64, 2: b"\x02" * 64, 3: b"\x03" * 64}
    witness = federation.witness(sig)
    assert witness == (b"\x03" * 64, b"\x02" * 64, b"", b"\x00" * 64, federation.script,
                       federation.control_block)


@given(st.lists(st.one_of(st.binary(max_size=40), st.integers(), st.none(), st.text()),
                max_size=20))
def test_hostile_keys_are_refused_with_what_is_wrong(keys: list[Any]) -> None:
    good = (1 <= len(keys) <= MAX_MEMBERS
            and all(type(k) is bytes and len(k) == 32 for k in keys)
            and len(set(keys)) == len(keys))
    if good:
        assert Federation(tuple(keys)).keys == tuple(keys)
    else:
        with pytest.raises(ValueError, match=r"member|twice"):
            Federation(tuple(keys))


@given(st.dictionaries(st.integers(-3, 20), st.one_of(st.binary(max_size=70), st.none()),
                       max_size=8))
def test_hostile_signature_sets_are_refused(signatures: dict[int, Any]) -> None:
    federation = Federation(KEYS[:5])  # k = 4
    good = (len(signatures) == 4 and all(0 <= i < 5 for i in signatures)
            and all(type(s) is bytes and len(s) == 64 for s in signatures.values()))
    if good:
        assert len(federation.witness(signatures)) == 5 + 2
    else:
        with pytest.raises(ValueError):
            federation.witness(signatures)
