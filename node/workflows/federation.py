"""The federation's Bitcoin address and its k-of-n taproot spend, as plain rules.

The federation holds the pegged BTC in one P2TR output whose internal key is the NUMS point
``50929b74…3ac0`` (BIP341's "nothing up my sleeve" x coordinate: no one knows its discrete log,
so the key path is unspendable) and whose script tree has one leaf (version ``0xc0``)::

    <pk0> OP_CHECKSIG <pk1> OP_CHECKSIGADD ... <pk(n-1)> OP_CHECKSIGADD <k> OP_GREATERTHANOREQUAL

with the members' x-only public keys in order and ``k = ceil(2n/3) = (2n + 2) // 3``, as the
original's federation (ALYS.md, "Peg-in and peg-out"). A spend goes by the script path: the
witness holds one element per member in *reverse* key order — a member's 64-byte BIP340
signature, or an empty element for a member who does not sign (the script's first
``OP_CHECKSIG`` takes the top of the stack, which is pk0's) — then the script, then the
control block. A transaction is finalized with exactly ``k`` signatures.

Each member signs the BIP341 script-path sighash with ``SIGHASH_DEFAULT`` (:meth:`Federation.
sighash`: BIP342's message extension is the tapleaf hash, key version 0 and no
``OP_CODESEPARATOR``). Taproot tweaks, control blocks and sighashes are btclib's (checked
against BIP341's wallet test vectors in ``tests/node/test_bip341_vectors.py``); the script
bytes and the witness order are written here, where the original fixes them, and tested
against a real btcd (``tests/integration/test_federation.py``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from functools import cached_property
from typing import Final

import attrs
from btclib.alias import TaprootScriptTree
from btclib.b32 import address_from_witness
from btclib.key import PubKeyData
from btclib.script import sig_hash
from btclib.script.sig_hash import PrecomputedTxData
from btclib.script.taproot import (
    input_script_sig,
    leaf_hash,
    output_pubkey,
    parse,
)
from btclib.tx.tx import Tx
from btclib.tx.tx_out import TxOut as BtclibTxOut

from node.types.bitcoin import Transaction, TxOut, compact_size_length

__all__ = ["LEAF_VERSION", "MAX_MEMBERS", "NUMS_KEY", "Federation", "threshold"]

#: BIP341's NUMS point (x only): the internal key of the federation's output.
NUMS_KEY: Final = bytes.fromhex("50929b74c1a04954b78b4b6035e97a5e078a5a0f28ec96d547bfee9ace803ac0")
#: Tapscript's leaf version.
LEAF_VERSION: Final = 0xC0
#: The most members (the approval bitfield's width; keeps ``k`` a one-byte ``OP_k``).
MAX_MEMBERS: Final = 15

_OP_CHECKSIG: Final = 0xAC
_OP_CHECKSIGADD: Final = 0xBA
_OP_GREATERTHANOREQUAL: Final = 0xA2
_PUSH_32: Final = 0x20


def threshold(members: int) -> int:
    """Signatures a federation of ``members`` needs: ``ceil(2n/3)``."""
    return (2 * members + 2) // 3


def _check_keys(_: object, attribute: object, keys: tuple[bytes, ...]) -> None:
    if not 1 <= len(keys) <= MAX_MEMBERS:
        raise ValueError(f"a federation has 1 to {MAX_MEMBERS} members, not {len(keys)}")
    for i, key in enumerate(keys):
        if type(key) is not bytes or len(key) != 32:
            raise ValueError(f"member {i}: an x-only public key is 32 bytes, got "
                             f"{key!r:.80}")
    if len(set(keys)) != len(keys):
        raise ValueError("a member's key appears twice")


def _to_keys(keys: Iterable[bytes]) -> tuple[bytes, ...]:
    return tuple(keys)


@attrs.frozen
class Federation:
    """The members' x-only public keys, in the order the script lists them."""

    keys: tuple[bytes, ...] = attrs.field(converter=_to_keys, validator=_check_keys)

    @classmethod
    def from_hex(cls, keys: Iterable[str]) -> Federation:
        """The federation of ``chain.federation_bitcoin_keys``: x-only keys in hex, with or
        without ``0x`` (checked when the configuration is loaded)."""
        return cls(tuple(bytes.fromhex(k.removeprefix("0x")) for k in keys))

    @property
    def threshold(self) -> int:
        return threshold(len(self.keys))

    @cached_property
    def script(self) -> bytes:
        """The tapleaf: ``pk0 CHECKSIG pk1 CHECKSIGADD … k GREATERTHANOREQUAL``."""
        out = bytearray([_PUSH_32, *self.keys[0], _OP_CHECKSIG])
        for key in self.keys[1:]:
            out += bytes([_PUSH_32, *key, _OP_CHECKSIGADD])
        out += bytes([0x50 + self.threshold, _OP_GREATERTHANOREQUAL])  # OP_k, k <= 10
        return bytes(out)

    @cached_property
    def _tree(self) -> TaprootScriptTree:
        return [(LEAF_VERSION, parse(self.script))]

    @cached_property
    def output_key(self) -> bytes:
        """The tweaked x-only key of the P2TR output."""
        key, _parity = output_pubkey(PubKeyData(b"\x02" + NUMS_KEY), self._tree)
        return bytes(key)

    @property
    def script_pubkey(self) -> bytes:
        """``OP_1 <32-byte output key>``."""
        return b"\x51\x20" + self.output_key

    def address(self, network: str = "mainnet") -> str:
        """The bech32m address on ``network`` (``mainnet``, ``testnet``, ``testnet4``,
        ``signet`` or ``regtest``: ``bc1p…``, ``tb1p…``, ``bcrt1p…``)."""
        return str(address_from_witness(1, self.output_key, network))

    @cached_property
    def control_block(self) -> bytes:
        """BIP341's control block of the one leaf (leaf version and parity, NUMS key)."""
        _script, control = input_script_sig(PubKeyData(b"\x02" + NUMS_KEY), self._tree, 0)
        return bytes(control)

    @cached_property
    def leaf_hash(self) -> bytes:
        return bytes(leaf_hash(LEAF_VERSION, self.script))

    def sighash(self, tx: Transaction, index: int, spent: Sequence[TxOut]) -> bytes:
        """What each member signs for input ``index`` of ``tx`` (the outputs every input
        spends, in order): BIP341's script-path sighash, ``SIGHASH_DEFAULT``."""
        if not 0 <= index < len(tx.inputs) or len(spent) != len(tx.inputs):
            raise ValueError(f"input {index} of a transaction of {len(tx.inputs)} inputs, "
                             f"{len(spent)} spent outputs given")
        extension = self.leaf_hash + b"\x00" + b"\xff\xff\xff\xff"
        digest: bytes = sig_hash.taproot(
            Tx.parse(tx.to_bytes()), index, [BtclibTxOut(o.value, o.script_pubkey)
                                             for o in spent], 0, 1, b"", extension)
        return digest

    def sighashes(self, tx: Transaction, spent: Sequence[TxOut]) -> tuple[bytes, ...]:
        """:meth:`sighash` of every input of ``tx``, each spending the federation's leaf: the
        transaction-wide hashes are computed once (btclib's ``PrecomputedTxData``), so this
        is linear in the inputs where calling :meth:`sighash` per input is quadratic."""
        if len(spent) != len(tx.inputs):
            raise ValueError(f"{len(spent)} spent outputs for {len(tx.inputs)} inputs")
        extension = self.leaf_hash + b"\x00" + b"\xff\xff\xff\xff"
        btx = Tx.parse(tx.to_bytes())
        prevouts = [BtclibTxOut(o.value, o.script_pubkey) for o in spent]
        precomputed = PrecomputedTxData(btx, prevouts)
        return tuple(bytes(sig_hash.taproot(btx, i, prevouts, 0, 1, b"", extension,
                                            precomputed))
                     for i in range(len(tx.inputs)))

    @cached_property
    def witness_size(self) -> int:
        """Bytes of one input's signed witness: the item count, :attr:`threshold` 64-byte
        signatures and an empty element per other member (each with its length byte), the
        script and the control block with their lengths. Exact, since a SIGHASH_DEFAULT
        signature is always 64 bytes: weights and fees computed from it are the real ones."""
        n, k = len(self.keys), self.threshold
        return (compact_size_length(n + 2) + k * 65 + (n - k)
                + compact_size_length(len(self.script)) + len(self.script)
                + compact_size_length(len(self.control_block)) + len(self.control_block))

    @property
    def input_weight(self) -> int:
        """Weight units of one signed input spending the federation's output: 41 bytes
        outside the witness (outpoint, empty scriptSig, sequence) at 4 units, the witness at
        1."""
        return 4 * (32 + 4 + 1 + 4) + self.witness_size

    def witness(self, signatures: Mapping[int, bytes]) -> tuple[bytes, ...]:
        """The script-path witness from exactly :attr:`threshold` signatures by member index:
        one element per member in reverse key order (empty for a member who did not sign),
        then the script and the control block."""
        if len(signatures) != self.threshold:
            raise ValueError(f"a spend takes exactly {self.threshold} signatures of "
                             f"{len(self.keys)}, got {len(signatures)}")
        for index, signature in signatures.items():
            if not 0 <= index < len(self.keys):
                raise ValueError(f"no member {index} (members 0..{len(self.keys) - 1})")
            if type(signature) is not bytes or len(signature) != 64:
                raise ValueError(f"member {index}: a SIGHASH_DEFAULT signature is 64 bytes")
        elements = tuple(signatures.get(i, b"") for i in reversed(range(len(self.keys))))
        return (*elements, self.script, self.control_block)
