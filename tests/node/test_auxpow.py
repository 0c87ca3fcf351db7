"""Tests for node.workflows.auxpow: namecoin-format AuxPoW, checked as the original Alys does."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from node.types.bitcoin import (
    NULL_HASH,
    BlockHeader,
    DecodeError,
    MerkleBranch,
    OutPoint,
    Transaction,
    TxIn,
    TxOut,
    bits_to_target,
    merkle_branch,
    merkle_root,
    sha256d,
    target_to_bits,
)
from node.workflows.auxpow import (
    MERGED_MINING_MAGIC,
    RULES,
    AuxPow,
    AuxPowError,
    MergedMiningCommitment,
    MiningError,
    aggregate_hash,
    expected_index,
    mine_auxpow,
)
from node.workflows.difficulty import ORIGINAL_DEV_BITS, REGTEST_BITS

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parent / "data" / "bitcoin_vectors.json").read_text()
)

CHAIN_ID = 7  # small enough for a parent header to claim it
DEV_CHAIN_ID = 121212
AUX = sha256d(b"aux block range")
OTHER = sha256d(b"another aux block range")


@pytest.fixture(scope="module")
def good() -> AuxPow:
    return mine_auxpow(AUX, CHAIN_ID, REGTEST_BITS)


def rebuild(
    proof: AuxPow,
    *,
    outputs: tuple[TxOut, ...] | None = None,
    inputs: tuple[TxIn, ...] | None = None,
    blockchain_branch: MerkleBranch | None = None,
) -> AuxPow:
    """``proof`` with a changed coinbase or blockchain branch; the parent merkle root follows."""
    coinbase = attrs.evolve(
        proof.coinbase_tx,
        outputs=proof.coinbase_tx.outputs if outputs is None else outputs,
        inputs=proof.coinbase_tx.inputs if inputs is None else inputs,
    )
    header = attrs.evolve(
        proof.parent_header, merkle_root=proof.coinbase_branch.fold(coinbase.txid())
    )
    return attrs.evolve(
        proof,
        coinbase_tx=coinbase,
        parent_header=header,
        blockchain_branch=(
            proof.blockchain_branch if blockchain_branch is None else blockchain_branch
        ),
    )


def with_output2(proof: AuxPow, script: bytes, *more: bytes) -> AuxPow:
    outputs = (*proof.coinbase_tx.outputs[:2], TxOut(0, script), *(TxOut(0, s) for s in more))
    return rebuild(proof, outputs=outputs)


def rule_of(proof: AuxPow, aux_hash: bytes = AUX, chain_id: int = CHAIN_ID) -> str:
    with pytest.raises(AuxPowError) as info:
        proof.check(aux_hash, chain_id)
    assert info.value.rule in RULES
    assert str(info.value).startswith(info.value.rule + ": ")
    return info.value.rule


def commitment(root: bytes = AUX, size: int = 1, nonce: int = 0) -> bytes:
    return MergedMiningCommitment(root, size, nonce).to_script()


# ------------------------------------------------------------------ mining and round trips


def test_mined_proof_is_valid(good: AuxPow) -> None:
    good.check(AUX, CHAIN_ID)
    assert good.check_proof_of_work(REGTEST_BITS)
    coinbase = good.coinbase_tx
    assert coinbase.is_coinbase and len(coinbase.outputs) == 3
    assert coinbase.outputs[2].script_pubkey == commitment(AUX, 1, 0)
    assert len(coinbase.outputs[2].script_pubkey) == 44
    assert good.parent_header.merkle_root == coinbase.txid()
    assert good.parent_header.version == 0 and good.parent_chain_id == 0
    assert good.parent_hash == good.parent_header.hash()
    assert good.coinbase_branch == MerkleBranch() == good.blockchain_branch


def test_round_trips(good: AuxPow) -> None:
    raw = good.to_bytes()
    assert AuxPow.from_bytes(raw) == good
    assert AuxPow.from_hex(good.to_hex()) == good
    assert AuxPow.from_hex(good.to_hex().upper()) == good
    assert AuxPow.parse(b"\x00\x01" + raw + b"\x02", 2) == (good, len(raw))
    # The layout: coinbase, parent hash, two branches, 80-byte header.
    tx_len = len(good.coinbase_tx.to_bytes())
    assert raw[tx_len : tx_len + 32] == good.parent_hash
    assert raw[-80:] == good.parent_header.to_bytes()
    assert len(raw) == tx_len + 32 + 5 + 5 + 80


def test_mining_at_the_original_dev_difficulty() -> None:
    # A fixed aux hash whose proof needs ~20,000 nonces, so this stays fast and deterministic.
    aux = sha256d(b"alys-otp dev proof 4")
    proof = mine_auxpow(aux, DEV_CHAIN_ID, ORIGINAL_DEV_BITS)
    assert proof.parent_header.nonce == 20401
    proof.check(aux, DEV_CHAIN_ID)
    assert proof.check_proof_of_work(ORIGINAL_DEV_BITS)
    assert not proof.check_proof_of_work(0x1D00FFFF)


def test_mining_options_and_errors() -> None:
    proof = mine_auxpow(AUX, DEV_CHAIN_ID, REGTEST_BITS, parent_chain_id=0x8001, time=1234)
    assert proof.parent_chain_id == 0x8001 and proof.parent_header.version < 0
    assert proof.parent_header.time == 1234
    proof.check(AUX, DEV_CHAIN_ID)
    with pytest.raises(MiningError, match=r"no parent nonce in 0\.\.10"):
        mine_auxpow(AUX, CHAIN_ID, 0x1D00FFFF, max_nonce=10)
    with pytest.raises(ValueError, match="equals our chain id"):
        mine_auxpow(AUX, CHAIN_ID, REGTEST_BITS, parent_chain_id=CHAIN_ID)
    with pytest.raises(ValueError, match="positive target"):
        mine_auxpow(AUX, CHAIN_ID, 0x04923456)
    with pytest.raises(ValueError, match="aux_hash"):
        mine_auxpow(b"short", CHAIN_ID, REGTEST_BITS)


def test_aggregate_hash() -> None:
    hashes = [sha256d(bytes([i])) for i in range(3)]
    assert aggregate_hash(hashes) == sha256d(b"".join(hashes))
    assert aggregate_hash([]) == sha256d(b"")
    with pytest.raises(ValueError, match=r"hashes\[1\]"):
        aggregate_hash([hashes[0], b"short"])


# ------------------------------------------------------------------ each rule fails on its own


def test_chain_id(good: AuxPow) -> None:
    same = attrs.evolve(good, parent_header=attrs.evolve(good.parent_header, version=7 << 16))
    assert rule_of(same) == "chain-id"
    # The version is read as unsigned: 0xffff0000 is chain id 0xffff, not -1.
    negative = attrs.evolve(good, parent_header=attrs.evolve(good.parent_header, version=-65536))
    assert negative.parent_chain_id == 0xFFFF
    assert rule_of(negative, chain_id=0xFFFF) == "chain-id"
    # The low 16 bits of the version are not part of the chain id.
    low = attrs.evolve(good, parent_header=attrs.evolve(good.parent_header, version=0x7FFFF))
    assert rule_of(low) == "chain-id"


def test_branch_length(good: AuxPow) -> None:
    long_branch = MerkleBranch(tuple(sha256d(bytes([i])) for i in range(31)), 0)
    assert rule_of(rebuild(good, blockchain_branch=long_branch)) == "branch-length"
    # 30 hashes pass this rule (and fail a later one: the root no longer matches).
    thirty = MerkleBranch(long_branch.hashes[:30], 0)
    assert rule_of(rebuild(good, blockchain_branch=thirty)) == "commitment-root"


def test_coinbase_merkle_root(good: AuxPow) -> None:
    header = attrs.evolve(good.parent_header, merkle_root=sha256d(b"elsewhere"))
    assert rule_of(attrs.evolve(good, parent_header=header)) == "coinbase-merkle-root"
    changed = attrs.evolve(good.coinbase_tx, lock_time=1)
    assert rule_of(attrs.evolve(good, coinbase_tx=changed)) == "coinbase-merkle-root"
    branch = MerkleBranch((sha256d(b"sibling"),), 0)
    assert rule_of(attrs.evolve(good, coinbase_branch=branch)) == "coinbase-merkle-root"


def test_coinbase_need_not_be_the_first_transaction(good: AuxPow) -> None:
    # The original, unlike namecoin, does not require the coinbase branch index to be 0.
    txids = [sha256d(b"first"), good.coinbase_tx.txid(), sha256d(b"third")]
    branch = merkle_branch(txids, 1)
    header = attrs.evolve(good.parent_header, merkle_root=merkle_root(txids))
    attrs.evolve(good, coinbase_branch=branch, parent_header=header).check(AUX, CHAIN_ID)


def test_commitment_missing(good: AuxPow) -> None:
    two_outputs = rebuild(good, outputs=good.coinbase_tx.outputs[:2])
    with pytest.raises(AuxPowError, match="the coinbase has 2 outputs") as info:
        two_outputs.check(AUX, CHAIN_ID)
    assert info.value.rule == "commitment-missing"
    no_magic = with_output2(good, b"\x6a\x04abcd")
    assert rule_of(no_magic) == "commitment-missing"
    # A push of the commitment (OP_RETURN <44 bytes>) is not the whole scriptPubKey.
    pushed = with_output2(good, b"\x6a\x2c" + commitment())
    with pytest.raises(AuxPowError, match="must be the whole scriptPubKey") as info:
        pushed.check(AUX, CHAIN_ID)
    assert info.value.rule == "commitment-missing"
    # Outputs 0 and 1 are never read.
    early = rebuild(good, outputs=(TxOut(0, commitment()), TxOut(0, commitment())))
    assert rule_of(early) == "commitment-missing"


def test_commitment_in_the_script_sig_is_not_accepted(good: AuxPow) -> None:
    script_sig = b"\x2c" + commitment()
    coinbase_input = TxIn(OutPoint.null(), script_sig)
    proof = rebuild(
        good, inputs=(coinbase_input,), outputs=(TxOut(0, b""), TxOut(0, b""), TxOut(0, b""))
    )
    with pytest.raises(AuxPowError, match="scriptSig holds a fabe6d6d commitment") as info:
        proof.check(AUX, CHAIN_ID)
    assert info.value.rule == "commitment-missing"


def test_commitment_size(good: AuxPow) -> None:
    assert rule_of(with_output2(good, commitment()[:43])) == "commitment-size"
    assert rule_of(with_output2(good, commitment() + b"\x00")) == "commitment-size"
    assert rule_of(with_output2(good, MERGED_MINING_MAGIC)) == "commitment-size"


def test_commitment_root(good: AuxPow) -> None:
    wrong = with_output2(good, commitment(OTHER))
    with pytest.raises(AuxPowError, match=f"commits to root {OTHER.hex()}") as info:
        wrong.check(AUX, CHAIN_ID)
    assert info.value.rule == "commitment-root"
    assert "there is no output 3" in info.value.message
    # The root is compared in internal byte order: the reversed aux hash does not match.
    assert rule_of(with_output2(good, commitment(AUX[::-1]))) == "commitment-root"
    # The proof for AUX is a proof for nothing else.
    assert rule_of(good, aux_hash=OTHER) == "commitment-root"


def test_output_3_is_the_fallback(good: AuxPow) -> None:
    with_output2(good, b"\x51", commitment()).check(AUX, CHAIN_ID)
    with_output2(good, commitment(OTHER), commitment()).check(AUX, CHAIN_ID)
    with_output2(good, commitment(), b"\x51").check(AUX, CHAIN_ID)
    # Output 4 is never read.
    assert rule_of(with_output2(good, b"\x51", b"\x51", commitment())) == "commitment-missing"
    # Both candidates fail: the most specific finding names the rule.
    both = with_output2(good, b"\x51", commitment(OTHER))
    with pytest.raises(AuxPowError, match=r"output 2 .*; output 3 commits") as info:
        both.check(AUX, CHAIN_ID)
    assert info.value.rule == "commitment-root"
    assert rule_of(with_output2(good, commitment()[:40], b"\x51")) == "commitment-size"


def test_merkle_size(good: AuxPow) -> None:
    with pytest.raises(AuxPowError, match=r"merkle size 2, but .* 0 hashes needs 1") as info:
        with_output2(good, commitment(AUX, 2, 0)).check(AUX, CHAIN_ID)
    assert info.value.rule == "merkle-size"


def multi_chain_proof(good: AuxPow, nonce: int, *, slot_delta: int = 0) -> AuxPow:
    """``good`` re-committed to a 4-leaf aux tree holding AUX at its namecoin slot
    (shifted by ``slot_delta``), with a consistent branch and root."""
    slot = (expected_index(nonce, CHAIN_ID, 2) + slot_delta) % 4
    leaves = [sha256d(bytes([i])) for i in range(4)]
    leaves[slot] = AUX
    proof = with_output2(good, commitment(merkle_root(leaves), 4, nonce))
    return rebuild(proof, blockchain_branch=merkle_branch(leaves, slot))


def test_multi_chain_tree(good: AuxPow) -> None:
    for nonce in (0, 1, 12345, 2**32 - 1):
        multi_chain_proof(good, nonce).check(AUX, CHAIN_ID)


def test_side_mask(good: AuxPow) -> None:
    proof = multi_chain_proof(good, 12345, slot_delta=1)
    with pytest.raises(AuxPowError, match="merkle nonce 12345 puts chain 7 at index") as info:
        proof.check(AUX, CHAIN_ID)
    assert info.value.rule == "side-mask"
    # A side mask bit beyond the branch length also fails.
    exact = multi_chain_proof(good, 12345)
    index = exact.blockchain_branch.side_mask
    extra = MerkleBranch(exact.blockchain_branch.hashes, index | 4)
    leaves_root = exact.commitment_root(AUX)
    assert extra.fold(AUX) == leaves_root
    assert rule_of(attrs.evolve(exact, blockchain_branch=extra)) == "side-mask"


def test_rules_apply_in_order(good: AuxPow) -> None:
    bad_root = attrs.evolve(good.parent_header, merkle_root=sha256d(b"x"), version=7 << 16)
    assert rule_of(attrs.evolve(good, parent_header=bad_root)) == "chain-id"
    long_branch = MerkleBranch(tuple(sha256d(bytes([i])) for i in range(31)), 0)
    both = attrs.evolve(
        good,
        blockchain_branch=long_branch,
        parent_header=attrs.evolve(good.parent_header, merkle_root=sha256d(b"x")),
    )
    assert rule_of(both) == "branch-length"
    wrong_everything = attrs.evolve(
        with_output2(good, commitment(OTHER, 2, 0)),
        parent_header=attrs.evolve(good.parent_header, merkle_root=sha256d(b"x")),
    )
    assert rule_of(wrong_everything) == "coinbase-merkle-root"
    assert rule_of(with_output2(good, commitment(AUX, 4, 0))) == "merkle-size"


def test_check_argument_errors(good: AuxPow) -> None:
    with pytest.raises(ValueError, match="aux_hash"):
        good.check(AUX[:31], CHAIN_ID)
    with pytest.raises(ValueError, match="chain_id"):
        good.check(AUX, -1)
    with pytest.raises(ValueError, match="parent_hash"):
        attrs.evolve(good, parent_hash=b"")


# ------------------------------------------------------------------ proof of work


def test_proof_of_work_direction(good: AuxPow) -> None:
    value = int.from_bytes(good.parent_header.hash(), "little")
    below = target_to_bits(value)
    below_target = bits_to_target(below)
    assert below_target <= value
    assert good.check_proof_of_work(below) is (below_target == value)
    above = below + 1  # mantissa + 1: the next representable target, which exceeds the hash
    assert bits_to_target(above) > value
    assert good.check_proof_of_work(above)


def test_proof_of_work_hard_easy_and_invalid_bits(good: AuxPow) -> None:
    assert good.check_proof_of_work(REGTEST_BITS)
    assert good.check_proof_of_work(0x2100FFFF)
    assert not good.check_proof_of_work(0x1D00FFFF)
    assert not good.check_proof_of_work(0x03000000)  # zero target
    assert not good.check_proof_of_work(0x20FFFFFF)  # negative
    assert not good.check_proof_of_work(0x23000001)  # overflows 2**256
    with pytest.raises(ValueError, match="bits"):
        good.check_proof_of_work(2**32)


# ------------------------------------------------------------------ real proofs


def namecoin_block() -> tuple[BlockHeader, AuxPow, bytes]:
    raw = bytes.fromhex(VECTORS["namecoin_19200"]["header_and_auxpow"])
    header, used = BlockHeader.parse(raw)
    proof, rest = AuxPow.parse(raw, used)
    assert used + rest == len(raw)
    return header, proof, raw


def test_namecoin_block_19200_auxpow() -> None:
    header, proof, raw = namecoin_block()
    assert proof.to_bytes() == raw[80:]
    nmc_hash = header.hash()
    assert nmc_hash[::-1].hex() == VECTORS["namecoin_19200"]["block_hash_display"]
    assert header.version >> 16 == VECTORS["namecoin_19200"]["chain_id"] == 1
    assert proof.parent_chain_id == 0
    assert len(proof.coinbase_branch.hashes) == 5
    assert proof.parent_hash == NULL_HASH
    # The proof of work is real: the Bitcoin parent meets namecoin's target, not Bitcoin's.
    assert proof.check_proof_of_work(header.bits)
    assert not proof.check_proof_of_work(proof.parent_header.bits)
    # Namecoin commits in the coinbase scriptSig, with the root in display (reversed) order.
    script_sig = proof.coinbase_tx.inputs[0].script_sig
    assert MERGED_MINING_MAGIC + nmc_hash[::-1] + b"\x01\x00\x00\x00\x00\x00\x00\x00" in script_sig
    # Chain id, branch length and the 5-hash coinbase branch all pass; the scriptSig
    # commitment is then refused, as the original refuses it.
    with pytest.raises(AuxPowError, match="scriptSig holds a fabe6d6d commitment") as info:
        proof.check(nmc_hash[::-1], 1)
    assert info.value.rule == "commitment-missing"


def test_namecoin_commitment_bytes_in_output_2_pass_for_the_reversed_hash() -> None:
    header, proof, _ = namecoin_block()
    script_sig = proof.coinbase_tx.inputs[0].script_sig
    at = script_sig.index(MERGED_MINING_MAGIC)
    moved = rebuild(
        proof,
        outputs=(*proof.coinbase_tx.outputs, TxOut(0, b""), TxOut(0, script_sig[at : at + 44])),
    )
    moved.check(header.hash()[::-1], 1)
    assert rule_of(moved, aux_hash=header.hash(), chain_id=1) == "commitment-root"


@pytest.mark.parametrize("name", ["marathon_coinbase", "coordinate_coinbase"])
def test_real_pool_coinbases_commit_in_output_2(name: str) -> None:
    coinbase = Transaction.from_bytes(bytes.fromhex(VECTORS[name]["hex"]))
    root = bytes.fromhex(VECTORS[name]["aux_root_internal"])
    parent = BlockHeader(0x20000000, NULL_HASH, coinbase.txid(), 0, REGTEST_BITS, 0)
    proof = AuxPow(coinbase, NULL_HASH, MerkleBranch(), MerkleBranch(), parent)
    assert proof.find_commitment(root) == MergedMiningCommitment(root, 1, 0)
    proof.check(root, DEV_CHAIN_ID)
    assert rule_of(proof, aux_hash=root[::-1], chain_id=DEV_CHAIN_ID) == "commitment-root"


# ------------------------------------------------------------------ expected index


def namecoin_cpp_expected_index(nonce: int, chain_id: int, h: int) -> int:
    """namecoin-core's getExpectedIndex with uint32_t wrap-around after every operation."""
    mask32 = 0xFFFFFFFF
    rand = nonce
    rand = (rand * 1103515245 + 12345) & mask32
    rand %= 1 << h
    rand = (rand + chain_id) & mask32
    rand = (rand * 1103515245 + 12345) & mask32
    rand %= 1 << h
    return rand


@given(
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=2**32 - 1),
    st.integers(min_value=0, max_value=30),
)
def test_expected_index_matches_the_32_bit_original(nonce: int, chain_id: int, h: int) -> None:
    index = expected_index(nonce, chain_id, h)
    assert 0 <= index < 1 << h
    assert index == namecoin_cpp_expected_index(nonce, chain_id, h)


def test_expected_index_values() -> None:
    assert expected_index(0, 0, 0) == 0
    # h = 3: r = 12345 % 8 = 1; r = (1 + 7) * 1103515245 + 12345 = 8828134305; % 8 = 1.
    assert expected_index(0, 7, 3) == 1
    with pytest.raises(ValueError, match="h must"):
        expected_index(0, 0, 31)
    with pytest.raises(ValueError, match="nonce"):
        expected_index(-1, 0, 0)


# ------------------------------------------------------------------ bad input


def test_decode_errors_name_the_field(good: AuxPow) -> None:
    raw = good.to_bytes()
    with pytest.raises(DecodeError) as info:
        AuxPow.from_bytes(raw[:-1])
    assert (info.value.field, info.value.offset) == ("auxpow.parent_header.nonce", len(raw) - 4)
    with pytest.raises(DecodeError) as info:
        AuxPow.from_bytes(raw[:50])
    assert (info.value.field, info.value.offset) == ("auxpow.coinbase_tx.vin[0].script_sig", 42)
    with pytest.raises(DecodeError, match="declares 1 items") as info:
        AuxPow.from_bytes(raw[:10])
    assert (info.value.field, info.value.offset) == ("auxpow.coinbase_tx.vin_count", 4)
    with pytest.raises(DecodeError, match="3 trailing bytes"):
        AuxPow.from_bytes(raw + b"abc")
    with pytest.raises(DecodeError, match="'g' is not a hex digit") as info:
        AuxPow.from_hex("00g0")
    assert (info.value.field, info.value.offset) == ("auxpow_hex", 2)
    with pytest.raises(DecodeError, match="odd number"):
        AuxPow.from_hex("000")


@settings(max_examples=300)
@given(st.binary(max_size=400))
def test_arbitrary_bytes_only_raise_our_errors(data: bytes) -> None:
    try:
        proof = AuxPow.from_bytes(data)
    except DecodeError:
        return
    assert proof.to_bytes() == data
    try:
        proof.check(AUX, CHAIN_ID)
    except AuxPowError:
        pass
    assert isinstance(proof.check_proof_of_work(REGTEST_BITS), bool)


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(min_value=0, max_value=10_000), st.binary(min_size=1, max_size=4))
def test_corrupted_proofs_only_raise_our_errors(
    good: AuxPow, position: int, garbage: bytes
) -> None:
    raw = bytearray(good.to_bytes())
    at = position % len(raw)
    raw[at : at + len(garbage)] = garbage
    try:
        proof, _ = AuxPow.parse(bytes(raw))
    except DecodeError:
        return
    for aux_hash, chain_id in ((AUX, CHAIN_ID), (OTHER, 0)):
        try:
            proof.check(aux_hash, chain_id)
        except AuxPowError:
            pass
    assert isinstance(proof.check_proof_of_work(REGTEST_BITS), bool)


scripts = st.one_of(
    st.binary(max_size=50),
    st.builds(commitment, st.sampled_from([AUX, OTHER]), st.integers(0, 4), st.integers(0, 3)),
    st.binary(max_size=48).map(lambda tail: MERGED_MINING_MAGIC + tail),
)


@settings(max_examples=200)
@given(
    st.lists(scripts, max_size=5),
    st.lists(st.binary(min_size=32, max_size=32), max_size=3),
    st.integers(min_value=0, max_value=7),
    st.integers(min_value=0, max_value=2**32 - 1),
)
def test_structured_proofs_only_raise_auxpow_error(
    output_scripts: list[bytes], branch: list[bytes], mask: int, version: int
) -> None:
    coinbase = Transaction(
        1, (TxIn(OutPoint.null(), b"\x01\x00"),), tuple(TxOut(0, s) for s in output_scripts)
    )
    signed_version = version - 2**32 if version >= 2**31 else version
    header = BlockHeader(signed_version, NULL_HASH, coinbase.txid(), 0, REGTEST_BITS, 0)
    proof = AuxPow(coinbase, NULL_HASH, MerkleBranch(), MerkleBranch(tuple(branch), mask), header)
    try:
        proof.check(AUX, CHAIN_ID)
    except AuxPowError as exc:
        assert exc.rule in RULES
    assert AuxPow.from_bytes(proof.to_bytes()) == proof
