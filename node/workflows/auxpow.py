"""Namecoin-format merged-mining proofs (AuxPoW), checked exactly as the original Alys checks them.

A proof shows that a parent (Bitcoin) block header, whose hash meets our target, commits to
our *aux hash* (the hash ``createauxblock`` handed out): the parent's coinbase transaction sits
under the parent's merkle root (``coinbase_branch``), and a coinbase output carries a
``fa be 6d 6d`` commitment to the root of a small merkle tree of aux chains in which our aux
hash is a leaf (``blockchain_branch``).

Wire format (consensus serialization, as the original's ``impl Decodable for AuxPow`` in
``app/src/auxpow.rs``): coinbase transaction, 32-byte parent block hash (never used by the
check), coinbase branch (CompactSize count, hashes, u32 side mask), blockchain branch (same),
80-byte parent header.

The check (:meth:`AuxPow.check`), in the original's order (``AuxPow::_check`` with
``CoinbaseVout``), each failure raising :class:`AuxPowError` with a stable ``rule``:

1. ``chain-id`` -- the parent's chain id, ``version >> 16`` with the version read as unsigned
   32-bit (``get_parent_chain_id``), must differ from ours.
2. ``branch-length`` -- the blockchain branch holds at most 30 hashes.
3. ``coinbase-merkle-root`` -- the coinbase txid folded up the coinbase branch equals the
   parent header's merkle root. (Like the original, and unlike namecoin, the coinbase
   branch's side mask is not required to be 0: the "coinbase" is not checked to be the parent
   block's first transaction, nor to have a coinbase input.)
4. ``commitment-missing`` / ``commitment-size`` / ``commitment-root`` -- the whole
   scriptPubKey of coinbase output 2, or failing that output 3, is exactly 44 bytes:
   ``fa be 6d 6d`` + 32-byte root + merkle size (u32 LE) + merkle nonce (u32 LE), and the root
   equals the blockchain branch folded from our aux hash. A commitment in the coinbase
   scriptSig (namecoin's place for it) is not accepted. The original reports every failure
   here as ``MissingHeader``/``MissingMerkleRoot``/``CoinbaseInvalidOutputs``; we accept and
   refuse exactly the same coinbases but name the most specific problem: ``commitment-root``
   (a well-formed commitment to another root) over ``commitment-size`` (a script starting
   with the magic that is not 44 bytes) over ``commitment-missing`` (no candidate output, or
   no magic at the start of either).
5. ``merkle-size`` -- the committed merkle size equals ``1 << len(blockchain_branch)``.
6. ``side-mask`` -- the blockchain branch's side mask equals :func:`expected_index` of the
   committed nonce, our chain id and the branch length.

Byte order of the committed root. The 32 root bytes in the commitment are the folded root in
*internal* order, the same bytes SHA256d produced. The original reverses the folded root
(``vch_root_hash.reverse()`` in ``_check``) and also reverses the bytes it reads from the
script (``raw_block_hash.reverse()`` in ``MergedMiningHeader::from_script_pub_key``) before
comparing, so the two reversals cancel. Namecoin Core reverses only the root (it searches the
script for the display-order root), so namecoin commitments hold the root reversed. Miners
copy the ``hash`` of ``createauxblock`` into the commitment byte for byte in both systems;
namecoin's RPC prints that hash in display order while Alys prints it in internal order (the
original's ``block_hash_to_consensus_hex``), so each system sees its own convention. With an
empty blockchain branch this means a namecoin proof for the namecoin block hash ``H`` passes
this check for the aux hash ``H[::-1]``.

Proof of work (:meth:`AuxPow.check_proof_of_work`): SHA256d of the parent header, read as a
little-endian number, must be ``<=`` the target of ``bits``.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence

import attrs

from node.errors import NodeError
from node.types.bitcoin import (
    HASH_SIZE,
    NULL_HASH,
    UINT32_MAX,
    BlockHeader,
    ByteReader,
    DecodeError,
    MerkleBranch,
    OutPoint,
    Transaction,
    TxIn,
    TxOut,
    decode_compact,
    hash_meets_target,
    hash_to_hex,
    sha256d,
)

__all__ = [
    "COMMITMENT_SIZE",
    "MAX_BLOCKCHAIN_BRANCH_LENGTH",
    "MERGED_MINING_MAGIC",
    "RULES",
    "AuxPow",
    "AuxPowError",
    "MergedMiningCommitment",
    "MiningError",
    "aggregate_hash",
    "expected_index",
    "mine_auxpow",
]

MERGED_MINING_MAGIC = b"\xfa\xbe" + b"mm"
"""The 4 bytes that open a merged-mining commitment (``fa be 6d 6d``)."""

COMMITMENT_SIZE = 44
"""Exact length of the commitment script: magic, root, merkle size, merkle nonce."""

MAX_BLOCKCHAIN_BRANCH_LENGTH = 30
"""Most hashes the blockchain (aux chains) branch may have."""

COMMITMENT_OUTPUTS = (2, 3)
"""Indexes of the coinbase outputs whose scriptPubKey may be the commitment, in order."""

RULES = (
    "chain-id",
    "branch-length",
    "coinbase-merkle-root",
    "commitment-missing",
    "commitment-size",
    "commitment-root",
    "merkle-size",
    "side-mask",
)
"""Every ``AuxPowError.rule``, in the order the check applies them."""

_LCG_MULTIPLIER = 1103515245
_LCG_INCREMENT = 12345


class AuxPowError(NodeError, ValueError):
    """An AuxPoW that fails a rule. ``rule`` is one of :data:`RULES`; ``message`` says what was
    found and what was expected."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule
        self.message = message


class MiningError(RuntimeError):
    """:func:`mine_auxpow` tried every nonce it was allowed and none met the target."""


def _check_hash_arg(name: str, value: bytes) -> None:
    if type(value) is not bytes or len(value) != HASH_SIZE:
        raise ValueError(f"{name} must be {HASH_SIZE} bytes, got {value!r}")


def _check_u32_arg(name: str, value: int) -> None:
    if type(value) is not int or not 0 <= value <= UINT32_MAX:
        raise ValueError(f"{name} must be an integer in 0..2**32-1, got {value!r}")


def expected_index(nonce: int, chain_id: int, h: int) -> int:
    """The namecoin slot of chain ``chain_id`` in a merged-mining tree of height ``h``.

    ``r = nonce; r = r*1103515245 + 12345; r %= 2**h; r += chain_id;
    r = r*1103515245 + 12345; r %= 2**h``. The original (``get_expected_index``) computes in
    64-bit arithmetic, where nothing overflows for 32-bit inputs; namecoin's C++
    (``CAuxPow::getExpectedIndex``) wraps at 32 bits. Because ``2**h`` divides ``2**32`` for
    ``h <= 30`` (the branch-length rule), reducing mod ``2**32`` first never changes the
    result mod ``2**h``: the two agree on every input this accepts.
    """
    _check_u32_arg("nonce", nonce)
    _check_u32_arg("chain_id", chain_id)
    if type(h) is not int or not 0 <= h <= MAX_BLOCKCHAIN_BRANCH_LENGTH:
        raise ValueError(f"h must be an integer in 0..{MAX_BLOCKCHAIN_BRANCH_LENGTH}, got {h!r}")
    modulus = 1 << h
    r = (nonce * _LCG_MULTIPLIER + _LCG_INCREMENT) % modulus
    r += chain_id
    return (r * _LCG_MULTIPLIER + _LCG_INCREMENT) % modulus


def aggregate_hash(hashes: Sequence[bytes]) -> bytes:
    """The aux hash ``createauxblock`` hands out: SHA256d of the concatenated 32-byte hashes.

    The hashes are those of every block after the last finalized one up to the head, oldest
    first (the original's ``AuxPow::aggregate_hash``).
    """
    for i, h in enumerate(hashes):
        _check_hash_arg(f"hashes[{i}]", h)
    return sha256d(b"".join(hashes))


@attrs.frozen
class MergedMiningCommitment:
    """The 44-byte ``fa be 6d 6d`` commitment script in a parent coinbase output.

    ``root`` is the aux-chain merkle root in internal order, exactly as it appears in the
    script (see the module docstring); ``merkle_size`` and ``merkle_nonce`` are u32.
    """

    root: bytes
    merkle_size: int = 1
    merkle_nonce: int = 0

    def __attrs_post_init__(self) -> None:
        _check_hash_arg("root", self.root)
        _check_u32_arg("merkle_size", self.merkle_size)
        _check_u32_arg("merkle_nonce", self.merkle_nonce)

    def to_script(self) -> bytes:
        """The 44-byte scriptPubKey: magic, root, merkle size (u32 LE), merkle nonce (u32 LE)."""
        return (
            MERGED_MINING_MAGIC
            + self.root
            + struct.pack("<II", self.merkle_size, self.merkle_nonce)
        )

    @classmethod
    def from_script(cls, script: bytes) -> MergedMiningCommitment | None:
        """The commitment that is the whole of ``script``, or ``None`` if it is not one."""
        if len(script) != COMMITMENT_SIZE or not script.startswith(MERGED_MINING_MAGIC):
            return None
        size, nonce = struct.unpack("<II", script[36:44])
        return cls(script[4:36], size, nonce)


def _describe_script(index: int, script: bytes, root: bytes) -> tuple[str, str]:
    """Classify coinbase output ``index``'s script against ``root``: (rule, finding)."""
    commitment = MergedMiningCommitment.from_script(script)
    if commitment is not None:
        return (
            "commitment-root",
            f"output {index} commits to root {commitment.root.hex()}, "
            f"expected {root.hex()} (internal byte order)",
        )
    if script.startswith(MERGED_MINING_MAGIC):
        return (
            "commitment-size",
            f"output {index} scriptPubKey starts with fabe6d6d but is {len(script)} bytes, "
            f"expected exactly {COMMITMENT_SIZE}",
        )
    at = script.find(MERGED_MINING_MAGIC)
    if at >= 0:
        return (
            "commitment-missing",
            f"output {index} holds fabe6d6d at byte {at} of its scriptPubKey, but the "
            f"commitment must be the whole scriptPubKey",
        )
    return "commitment-missing", f"output {index} scriptPubKey has no fabe6d6d commitment"


_RULE_PRECEDENCE = {"commitment-root": 0, "commitment-size": 1, "commitment-missing": 2}


@attrs.frozen
class AuxPow:
    """A namecoin-format merged-mining proof (see the module docstring for format and rules).

    ``parent_hash`` is carried and serialized but never checked, as in the original.
    """

    coinbase_tx: Transaction = attrs.field(validator=attrs.validators.instance_of(Transaction))
    parent_hash: bytes
    coinbase_branch: MerkleBranch = attrs.field(
        validator=attrs.validators.instance_of(MerkleBranch)
    )
    blockchain_branch: MerkleBranch = attrs.field(
        validator=attrs.validators.instance_of(MerkleBranch)
    )
    parent_header: BlockHeader = attrs.field(validator=attrs.validators.instance_of(BlockHeader))

    def __attrs_post_init__(self) -> None:
        _check_hash_arg("parent_hash", self.parent_hash)

    # ------------------------------------------------------------------ encoding

    def to_bytes(self) -> bytes:
        """The consensus serialization (the ``auxpowHex`` of ``submitauxblock``, as bytes)."""
        return (
            self.coinbase_tx.to_bytes()
            + self.parent_hash
            + self.coinbase_branch.to_bytes()
            + self.blockchain_branch.to_bytes()
            + self.parent_header.to_bytes()
        )

    def to_hex(self) -> str:
        """:meth:`to_bytes` as lowercase hex."""
        return self.to_bytes().hex()

    @classmethod
    def read(cls, r: ByteReader, field: str = "auxpow") -> AuxPow:
        """Read a proof from ``r``; fields are named ``auxpow.coinbase_tx...`` in errors."""
        return cls(
            Transaction.read(r, f"{field}.coinbase_tx"),
            r.hash32(f"{field}.parent_hash"),
            MerkleBranch.read(r, f"{field}.coinbase_branch"),
            MerkleBranch.read(r, f"{field}.blockchain_branch"),
            BlockHeader.read(r, f"{field}.parent_header"),
        )

    @classmethod
    def parse(cls, data: bytes | bytearray | memoryview, offset: int = 0) -> tuple[AuxPow, int]:
        """Decode the proof at ``offset``: ``(proof, bytes_consumed)``."""
        r = ByteReader(data, offset)
        value = cls.read(r)
        return value, r.pos - offset

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> AuxPow:
        """Decode a proof that spans exactly ``data``; raises :class:`DecodeError`."""
        r = ByteReader(data)
        value = cls.read(r)
        if r.remaining:
            raise DecodeError("auxpow", r.pos, f"{r.remaining} trailing bytes after the auxpow")
        return value

    @classmethod
    def from_hex(cls, text: str) -> AuxPow:
        """Decode hex text; a bad character is a :class:`DecodeError` at its character index."""
        if len(text) % 2:
            raise DecodeError("auxpow_hex", len(text), "hex text has an odd number of digits")
        for i, ch in enumerate(text):
            if ch not in "0123456789abcdefABCDEF":
                raise DecodeError("auxpow_hex", i, f"character {ch!r} is not a hex digit")
        return cls.from_bytes(bytes.fromhex(text))

    # ------------------------------------------------------------------ derived values

    @property
    def parent_chain_id(self) -> int:
        """The parent header's chain id: its version read as unsigned 32-bit, shifted right 16."""
        return (self.parent_header.version & UINT32_MAX) >> 16

    def commitment_root(self, aux_hash: bytes) -> bytes:
        """The root the coinbase must commit to: ``aux_hash`` folded up the blockchain branch."""
        return self.blockchain_branch.fold(aux_hash)

    def find_commitment(self, root: bytes) -> MergedMiningCommitment:
        """The commitment to ``root`` in coinbase output 2, else output 3.

        Raises :class:`AuxPowError` (``commitment-root``, ``commitment-size`` or
        ``commitment-missing``) when neither output's whole scriptPubKey is one.
        """
        outputs = self.coinbase_tx.outputs
        findings: list[tuple[str, str]] = []
        for index in COMMITMENT_OUTPUTS:
            if index >= len(outputs):
                break
            script = outputs[index].script_pubkey
            commitment = MergedMiningCommitment.from_script(script)
            if commitment is not None and commitment.root == root:
                return commitment
            findings.append(_describe_script(index, script, root))
        if findings:
            rule = min((rule for rule, _ in findings), key=_RULE_PRECEDENCE.__getitem__)
            message = "; ".join(finding for _, finding in findings)
            if len(outputs) == 3:
                message += "; there is no output 3"
        else:
            plural = "" if len(outputs) == 1 else "s"
            rule = "commitment-missing"
            message = (
                f"the coinbase has {len(outputs)} output{plural}; the commitment must be the "
                f"whole scriptPubKey of output 2 or 3"
            )
        if rule == "commitment-missing" and any(
            MERGED_MINING_MAGIC in txin.script_sig for txin in self.coinbase_tx.inputs
        ):
            message += (
                "; the coinbase scriptSig holds a fabe6d6d commitment (namecoin style), "
                "which is not accepted: only outputs 2 and 3 are read"
            )
        raise AuxPowError(rule, message)

    # ------------------------------------------------------------------ rules

    def check(self, aux_hash: bytes, chain_id: int) -> None:
        """Check that this proof commits to ``aux_hash`` for chain ``chain_id``.

        ``aux_hash`` is in internal byte order (as ``createauxblock`` prints it). Returns
        ``None`` when every rule holds; otherwise raises :class:`AuxPowError` for the first
        rule that fails, in the order of :data:`RULES`. Proof of work is checked separately
        (:meth:`check_proof_of_work`). Raises ``ValueError`` for a malformed argument.
        """
        _check_hash_arg("aux_hash", aux_hash)
        _check_u32_arg("chain_id", chain_id)

        parent_id = self.parent_chain_id
        if parent_id == chain_id:
            raise AuxPowError(
                "chain-id",
                f"the parent header's chain id (version {self.parent_header.version:#x} >> 16) "
                f"is {parent_id}, which is our own chain id; it must differ",
            )

        height = len(self.blockchain_branch.hashes)
        if height > MAX_BLOCKCHAIN_BRANCH_LENGTH:
            raise AuxPowError(
                "branch-length",
                f"the blockchain branch has {height} hashes, at most "
                f"{MAX_BLOCKCHAIN_BRANCH_LENGTH} are allowed",
            )

        coinbase_root = self.coinbase_branch.fold(self.coinbase_tx.txid())
        if coinbase_root != self.parent_header.merkle_root:
            raise AuxPowError(
                "coinbase-merkle-root",
                f"the coinbase txid folded up the coinbase branch gives "
                f"{hash_to_hex(coinbase_root)}, but the parent header's merkle root is "
                f"{hash_to_hex(self.parent_header.merkle_root)} (display order)",
            )

        commitment = self.find_commitment(self.commitment_root(aux_hash))

        if commitment.merkle_size != 1 << height:
            raise AuxPowError(
                "merkle-size",
                f"the commitment says merkle size {commitment.merkle_size}, but a blockchain "
                f"branch of {height} hashes needs {1 << height}",
            )

        index = expected_index(commitment.merkle_nonce, chain_id, height)
        if self.blockchain_branch.side_mask != index:
            raise AuxPowError(
                "side-mask",
                f"the blockchain branch side mask is {self.blockchain_branch.side_mask}, but "
                f"merkle nonce {commitment.merkle_nonce} puts chain {chain_id} at index {index} "
                f"of a tree of height {height}",
            )

    def check_proof_of_work(self, bits: int) -> bool:
        """Whether SHA256d(parent header), as a little-endian number, is ``<=`` the target.

        The target is decoded with Bitcoin Core's rules (:func:`decode_compact`); a negative,
        overflowing or zero target is never met. The original decodes with rust-bitcoin's
        lenient rules, which differ only for such non-canonical encodings (never produced by
        the retarget, which always re-encodes a target canonically).
        """
        _check_u32_arg("bits", bits)
        target, negative, overflow = decode_compact(bits)
        if negative or overflow or target == 0:
            return False
        return hash_meets_target(self.parent_header.hash(), target)


# --------------------------------------------------------------------------------- mining

DEV_MINER_TAG = b"/alys-otp dev miner/"
"""Pushed in the scriptSig of the coinbases :func:`mine_auxpow` builds."""


def _signed32(value: int) -> int:
    return value - (1 << 32) if value >= 1 << 31 else value


def mine_auxpow(
    aux_hash: bytes,
    chain_id: int,
    bits: int,
    *,
    parent_chain_id: int = 0,
    max_nonce: int = UINT32_MAX,
    time: int = 0,
) -> AuxPow:
    """Build a proof for ``aux_hash`` and grind the parent nonce until it meets ``bits``.

    The parent block is a one-transaction block whose coinbase has one input (the null
    outpoint, scriptSig pushing :data:`DEV_MINER_TAG`) and three zero-value outputs, the
    third (output 2) being the commitment, where the original's built-in miner
    (``AuxPow::mine``) and the pools that mine it put it. Unlike the original's miner, whose
    coinbase has *no* input (rust-bitcoin then writes it in segwit form, which Bitcoin Core's
    parser refuses), ours is a well-formed coinbase. The blockchain branch is empty (merkle
    size 1, nonce 0, side mask 0), so the committed root is ``aux_hash`` itself; the coinbase
    branch is empty, so the parent's merkle root is the coinbase txid. The parent header has
    version ``parent_chain_id << 16`` (the original uses parent chain id 1), a zero previous
    hash, the given ``time`` and ``bits``; ``parent_hash`` is set to the mined parent's hash.

    Hashing reuses the SHA-256 state of the header's first 64 bytes for every nonce and
    compares the hash's most significant byte before converting it to a number. Raises
    :class:`MiningError` when no nonce in ``0..max_nonce`` works, ``ValueError`` for bad
    arguments (including ``parent_chain_id == chain_id``, which could never pass the check).
    """
    _check_hash_arg("aux_hash", aux_hash)
    _check_u32_arg("chain_id", chain_id)
    _check_u32_arg("bits", bits)
    _check_u32_arg("max_nonce", max_nonce)
    _check_u32_arg("time", time)
    if type(parent_chain_id) is not int or not 0 <= parent_chain_id <= 0xFFFF:
        raise ValueError(f"parent_chain_id must be in 0..65535, got {parent_chain_id!r}")
    if parent_chain_id == chain_id:
        raise ValueError(f"parent_chain_id {parent_chain_id} equals our chain id")
    target, negative, overflow = decode_compact(bits)
    if negative or overflow or target == 0:
        raise ValueError(f"bits {bits:#010x} do not encode a positive target")

    commitment = MergedMiningCommitment(aux_hash, merkle_size=1, merkle_nonce=0)
    coinbase = Transaction(
        version=1,
        inputs=(
            TxIn(
                OutPoint.null(),
                script_sig=bytes((len(DEV_MINER_TAG),)) + DEV_MINER_TAG,
                sequence=UINT32_MAX,
            ),
        ),
        outputs=(TxOut(0, b""), TxOut(0, b""), TxOut(0, commitment.to_script())),
        lock_time=0,
    )
    template = BlockHeader(
        version=_signed32(parent_chain_id << 16),
        prev_hash=NULL_HASH,
        merkle_root=coinbase.txid(),
        time=time,
        bits=bits,
        nonce=0,
    )
    prefix = template.to_bytes()[:76]
    midstate = hashlib.sha256(prefix[:64])
    tail = prefix[64:]
    pack_nonce = struct.Struct("<I").pack
    sha256 = hashlib.sha256
    top_byte = min(target >> 248, 0xFF)  # the hash's last byte is its most significant
    for nonce in range(max_nonce + 1):
        inner = midstate.copy()
        inner.update(tail + pack_nonce(nonce))
        digest = sha256(inner.digest()).digest()
        if digest[31] <= top_byte and int.from_bytes(digest, "little") <= target:
            header = attrs.evolve(template, nonce=nonce)
            return AuxPow(
                coinbase_tx=coinbase,
                parent_hash=digest,
                coinbase_branch=MerkleBranch(),
                blockchain_branch=MerkleBranch(),
                parent_header=header,
            )
    raise MiningError(f"no parent nonce in 0..{max_nonce} meets bits {bits:#010x}")
