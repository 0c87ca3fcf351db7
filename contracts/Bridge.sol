// SPDX-License-Identifier: MIT
//
// The Alys bridge: how BTC leaves the sidechain. A user calls requestPegOut with the Bitcoin
// address to be paid and sends the amount as the call's value; the contract burns the value
// (it sends it to 0x...dEaD, where no one holds the key) and emits RequestPegOut. The
// federation's nodes read that event from the block's receipts and pay the address on
// Bitcoin, 1 satoshi for every 10^10 wei (node/workflows/bridge_events.py).
//
// The contract lives at 0xbBbBBBBbbBBBbbbBbbBbbbbBBbBbbbbBbBbbBBbB from genesis (its runtime
// code is in node/genesis/dev.json; scripts/compile-bridge writes it there). It holds no
// storage and no balance, has no owner and cannot be upgraded.
//
// What it refuses, and why (a refused call reverts, so the sender keeps the value):
// * a zero value: there is nothing to pay, and every event costs the federation work;
// * an empty address: nothing could ever be paid to it, and the burn cannot be undone;
// * an address longer than 90 bytes: 90 characters is the longest string bech32 allows
//   (BIP173; base58 addresses are at most 35), so a longer one cannot be a Bitcoin address,
//   only a way to make every node copy a large blob.
// What it does not check: that the address parses, and which network it is for (the
// contract knows no Bitcoin encodings and does not know which network the federation pays
// on), and the node's minimum of 1,000,000 satoshis (a node rule that may change; ALYS.md).
// A request the node refuses for any of these is reported by the node, and its value stays
// burned; a sender should check the address before sending. Wei below a satoshi (the value
// modulo 10^10) are burned without being paid.
pragma solidity 0.8.37;

contract Bridge {
    /// Where burned value goes: an address whose key nobody holds.
    address payable public constant BURN_ADDRESS =
        payable(0x000000000000000000000000000000000000dEaD);
    /// The longest Bitcoin address there is: a 90-character bech32 string (BIP173).
    uint256 public constant MAX_ADDRESS_LENGTH = 90;

    /// A request to pay `_value` wei (as satoshis: `_value / 10**10`) to the Bitcoin address
    /// whose text is `_bitcoinAddress`, burned by `_evmAddress`.
    event RequestPegOut(address indexed _evmAddress, bytes _bitcoinAddress, uint256 _value);

    /// Burn the call's value and ask the federation to pay it to `bitcoinAddress` (the
    /// address as text, e.g. "bcrt1q...", in ASCII).
    function requestPegOut(bytes calldata bitcoinAddress) external payable {
        require(msg.value > 0, "bridge: no value to peg out");
        require(bitcoinAddress.length > 0, "bridge: empty bitcoin address");
        require(bitcoinAddress.length <= MAX_ADDRESS_LENGTH, "bridge: bitcoin address too long");
        (bool sent, ) = BURN_ADDRESS.call{value: msg.value}("");
        require(sent, "bridge: burn failed");
        emit RequestPegOut(msg.sender, bitcoinAddress, msg.value);
    }
}
