"""Peg-ins on ``python -m node devnet 3 --bitcoin`` as a user runs it: three authorities as
real processes, the devnet's own regtest btcd, every node's bridge scanning it.

One devnet serves the module (it takes the longest to start): each test spends its own
coinbases (the faucet key the devnet wrote, ``bitcoin/faucet.key``) and credits its own EVM
addresses, so the tests do not see each other's deposits.

* a deposit appears as the same balance on every node's Ethereum JSON-RPC after the
  confirmations, ``getpegstatus`` credited on all three by the same block; beside it, in the
  same Bitcoin blocks, bad deposits (no OP_RETURN, a malformed one, dust, a payment to
  another address, a double spend btcd refuses, a deposit replaced in the mempool before it
  was mined) credit nothing, each refusal with its log line;
* a reorg on btcd (``invalidateblock``) across a detected deposit: all three drop it; mined
  again in another block it is credited once, from that block; replaced before it is mined
  again, never;
* ``kill -9`` of a node at a step Hypothesis picks (before the deposit is mined, once it is
  detected, once confirmed, the moment a node imports the crediting block, just after the
  credit): after a restart, exactly one credit, the same on every node;
* a peg-out, as the README's walkthrough makes it: the federation funded by a peg-in, a
  ``requestPegOut`` burn sent with Foundry's ``cast``; btcd accepts the federation's
  transaction and mines it, its witness holding exactly 2 valid Schnorr signatures of the 3
  members (an empty element for the third, the script, the control block), paying the
  requested address the requested amount less its fee share; ``getpegstatus`` agrees on
  every node, and ``python -m node received`` shows the payment;
* ``kill -9`` of a node (any of the three; node1 runs the miner, so while it is down there
  is no PoW, no signing and no AuxPoW block) at a step Hypothesis picks (once the burn is
  mined, once the victim shows it ``proposed``, once it signs or finalizes it, once it shows
  it ``broadcast``, once btcd has the transaction in its mempool; or once ``broadcast``
  but kept down until btcd has mined it), then a restart: every node agrees on one Bitcoin
  transaction, ``confirmed`` once btcd mines it, and btcd's blocks and mempool hold exactly
  one payment to the requested address — the agreed transaction's;
* at the end, the devnet killed with SIGKILL takes its btcd (and nodes) with it.
  ``PEG_CRASH_EXAMPLES`` sets how many examples of each crash test (default 1, the CI
  sample; not ``ALYS_*``, which the nodes would read as configuration; the full run:
  ``PEG_CRASH_EXAMPLES=25 scripts/test tests/integration/test_devnet_peg.py``).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from btclib.b32 import address_from_witness
from btclib.hashes import hash160
from coincurve import PrivateKey, PublicKeyXOnly
from hypothesis import HealthCheck, Phase, event, given, settings
from hypothesis import strategies as st

from node.devnet import payments_to
from node.execution.accounts import dev_accounts
from node.integration.btcd import (
    BtcdError,
    BtcdRpc,
    TaprootKey,
    deposit_transaction,
    op_return_script,
    spendable_coinbases,
)
from node.types.bitcoin import OutPoint, Transaction, TxOut
from node.types.bridge import BRIDGE_ADDRESS
from node.workflows.federation import Federation

from ..tools import tool
from .harness import Process
from .test_devnet import (
    PROGRESS_TIMEOUT,
    Devnet,
    DevNode,
    ManualNode,
    agreement,
    alive,
    free_base_port,
    logs_of,
    poll,
)

pytestmark = pytest.mark.real_clock

#: The devnet's confirmations (its default).
CONFIRMATIONS = 2
#: Seconds for a confirmed deposit to be credited everywhere (a few 2 s slots).
CREDIT_TIMEOUT = 60.0
CRASH_EXAMPLES = int(os.environ.get("PEG_CRASH_EXAMPLES", "1"))
WEI_PER_SAT = 10**10
_BITCOIN = re.compile(r"^bitcoin: btcd \(its guard's pid (\d+)\), .* RPC (\S+) user (\S+) "
                      r"password (\S+), log", re.MULTILINE)


class PegDevnet(Devnet):
    """``python -m node devnet 3 --bitcoin``, bridges polling every quarter second."""

    def command(self) -> list[str]:
        return [*super().command(), "--bitcoin", "--set", "bridge.poll_interval=0.25"]


@attrs.define
class Net:
    """The running devnet: its nodes (a restarted one replaced by its manual process), its
    btcd, the faucet key and the federation."""

    devnet: PegDevnet
    nodes: list[DevNode]
    btcd: BtcdRpc
    faucet: TaprootKey
    federation: Federation
    manual: dict[str, ManualNode] = attrs.field(factory=dict)
    used: set[OutPoint] = attrs.field(factory=set)
    #: Sats the peg-out crash examples funded the federation with and did not request yet.
    pegout_funds: int = 0

    def logs(self) -> str:
        return logs_of(*self.nodes)() + "\n----- devnet:\n" + self.devnet.tail(30)

    def coin(self) -> tuple[OutPoint, int]:
        """A mature coinbase of the faucet no test has spent."""
        for outpoint, value in spendable_coinbases(self.btcd, self.faucet, tuple(self.used)):
            self.used.add(outpoint)
            return outpoint, value
        self.btcd.generate(20)
        return self.coin()

    def deposit(self, to: bytes, sats: int, memo: bytes | None = None) -> Transaction:
        outpoint, value = self.coin()
        tx = deposit_transaction(self.faucet, outpoint, value, self.federation.script_pubkey,
                                 sats, to if memo is None else memo)
        self.btcd.send(tx)
        return tx

    def spend(self, outputs: list[TxOut], coin: tuple[OutPoint, int] | None = None,
              fee: int = 2_000) -> Transaction:
        """A transaction of the faucet's paying ``outputs``, the change less ``fee`` back to
        the faucet."""
        outpoint, value = coin or self.coin()
        change = TxOut(value - sum(o.value for o in outputs) - fee, self.faucet.script_pubkey)
        return self.faucet.spend(outpoint, value, [*outputs, change])

    def status(self, node: DevNode, tx: Transaction) -> Any:
        return node.call("getpegstatus", tx.txid()[::-1].hex())

    def balance(self, node: DevNode, address: bytes) -> int:
        return int(node.eth("eth_getBalance", "0x" + address.hex(), "latest"), 16)

    def credited_everywhere(self, tx: Transaction, address: bytes, sats: int
                            ) -> dict[str, Any] | None:
        """The crediting block when every node has credited ``tx`` by the same block and
        shows ``address`` holding exactly ``sats`` x 10^10 wei; else None."""
        blocks = set()
        for node in self.nodes:
            status = self.status(node, tx)
            if not status or status["state"] != "credited" or status["credited_block"] is None:
                return None
            if self.balance(node, address) != sats * WEI_PER_SAT:
                return None
            blocks.add((status["credited_block"]["hash"], status["credited_block"]["height"]))
        if len(blocks) != 1:
            return None
        hash_, height = blocks.pop()
        return {"hash": hash_, "height": height}

    def on_all(self, predicate: Any) -> bool:
        return all(predicate(node) for node in self.nodes)

    def kill(self, index: int) -> None:
        """SIGKILL node ``index`` (0-based) and wait until it is gone."""
        node = self.nodes[index]
        try:
            os.kill(node.pid, signal.SIGKILL)
        except ProcessLookupError:
            raise AssertionError(f"{node.name} (pid {node.pid}) had exited before it was "
                                 f"killed\n{self.logs()}") from None
        poll(lambda: not alive(node.pid), f"{node.name} is gone", 30, self.logs)

    def restart(self, index: int) -> None:
        """Start node ``index`` (0-based) again by hand, as the devnet tells a user to."""
        node = self.nodes[index]
        manual = ManualNode(self.devnet.directory, node.name)
        self.manual[node.name] = manual
        manual.spawn()
        assert manual.proc is not None
        self.nodes[index] = attrs.evolve(node, pid=manual.proc.pid, log_path=manual.log_path)
        poll(lambda: self.nodes[index].status(), f"{node.name} answers again", 120, self.logs)


def random_address() -> bytes:
    return b"\x00\x00\x0f" + secrets.token_bytes(17)


@pytest.fixture(scope="module")
def net(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Net]:
    workdir = tmp_path_factory.mktemp("pegdevnet")
    devnet = PegDevnet(workdir, 3, free_base_port())
    started: list[Process] = [devnet]
    failed = True
    the_net: Net | None = None
    try:
        devnet.spawn()
        nodes = devnet.up()
        match = _BITCOIN.search(devnet.log())
        assert match, devnet.tail(40)
        btcd = BtcdRpc(match.group(2), match.group(3), match.group(4))
        info = json.loads((devnet.directory / "bitcoin" / "devnet.json").read_text())
        faucet = TaprootKey(bytes.fromhex(
            (devnet.directory / "bitcoin" / "faucet.key").read_text().strip()))
        federation = Federation(tuple(bytes.fromhex(k) for k in info["federation_bitcoin_keys"]))
        for node in nodes:
            assert node.call("getdepositaddress") == info["deposit_address"], node.name
        btcd.generate(30)  # forty spendable coinbases in all
        # Each node connected to both others, and blocks finalized: any one node can then be
        # killed and the two others go on (with 2 approvals of 3).
        poll(lambda: all(node.call("getsyncstatus")["peers"] == 2 for node in nodes),
             "every node has both others as peers", PROGRESS_TIMEOUT, logs_of(*nodes))
        poll(lambda: agreement(nodes, min_head=3, min_finalized=1),
             "the three nodes agree and finalize", PROGRESS_TIMEOUT, logs_of(*nodes))
        the_net = Net(devnet, list(nodes), btcd, faucet, federation)
        yield the_net
        # Last, the devnet killed outright (SIGKILL): its btcd does not outlive it (the
        # guard's stdin pipe closes with the devnet), nor do its nodes.
        guard = int(match.group(1))
        assert devnet.proc is not None
        os.kill(devnet.proc.pid, signal.SIGKILL)
        devnet.proc.wait(timeout=10)
        poll(lambda: not alive(guard), "btcd's guard exits after its devnet was killed", 60,
             the_net.logs)
        with pytest.raises(BtcdError, match="does not answer"):
            btcd.rpc("getblockcount", timeout=2.0)
        pids = {node.name: node.pid for node in nodes}  # the devnet's own (not restarted ones)
        poll(lambda: not any(alive(pid) for pid in pids.values()),
             f"the devnet's nodes {pids} exit with it", 60, the_net.logs)
        failed = False
    finally:
        if the_net is not None:
            started += list(the_net.manual.values())
        for process in reversed(started):
            process.stop()
        if failed:
            for process in started:
                print(f"\n----- {process.name} ({process.log_path}):\n{process.tail(60)}",
                      file=sys.stderr)
            if the_net is not None:
                print(the_net.logs(), file=sys.stderr)


def test_a_deposit_is_the_same_balance_everywhere_and_bad_ones_credit_nothing(net: Net
                                                                               ) -> None:
    good_to, double_to, replaced_to = random_address(), random_address(), random_address()
    sats = 12_345_678
    good = net.deposit(good_to, sats)
    no_memo = net.btcd.send(net.spend([TxOut(200_000, net.federation.script_pubkey)]))
    malformed = net.deposit(random_address(), 300_000, memo=random_address()[:19])
    dust_to = random_address()
    dust = net.deposit(dust_to, 545)
    elsewhere_to = random_address()
    elsewhere = net.spend([TxOut(400_000, TaprootKey(secrets.token_bytes(32)).script_pubkey),
                           TxOut(0, op_return_script(elsewhere_to))])
    net.btcd.send(elsewhere)
    # A double spend: the same coinbase at the same fee, to another address: btcd refuses.
    coin = net.coin()
    first = deposit_transaction(net.faucet, *coin, net.federation.script_pubkey, 500_000,
                                double_to)
    net.btcd.send(first)
    second = deposit_transaction(net.faucet, *coin, net.federation.script_pubkey, 600_000,
                                 random_address())
    with pytest.raises(BtcdError, match="rejected"):
        net.btcd.send(second)
    # A deposit replaced in the mempool (RBF, a higher fee) by a payment to no one's
    # federation before it is mined: never credited, it was never confirmed.
    coin = net.coin()
    replaced = deposit_transaction(net.faucet, *coin, net.federation.script_pubkey, 700_000,
                                   replaced_to)
    net.btcd.send(replaced)
    net.btcd.send(net.spend([], coin, fee=50_000))
    for node in net.nodes:  # unconfirmed: nothing known yet
        assert net.status(node, good) is None and net.status(node, replaced) is None

    net.btcd.generate(1)
    poll(lambda: net.on_all(lambda n: (net.status(n, good) or {}).get("state") == "detected"),
         "the deposit is detected everywhere", CREDIT_TIMEOUT, net.logs)
    assert net.on_all(lambda n: net.balance(n, good_to) == 0)  # not before 2 confirmations
    net.btcd.generate(CONFIRMATIONS - 1)
    credited = poll(lambda: net.credited_everywhere(good, good_to, sats),
                    "the deposit credited everywhere by one block", CREDIT_TIMEOUT, net.logs)
    assert credited["height"] >= 1
    poll(lambda: net.credited_everywhere(first, double_to, 500_000),
         "the double spend's first transaction credited", CREDIT_TIMEOUT, net.logs)

    no_memo_txid = no_memo
    for node in net.nodes:
        status = node.call("getpegstatus", no_memo_txid)
        assert status["state"] == "refused" and "no OP_RETURN" in status["reason"], status
        status = net.status(node, malformed)
        assert status["state"] == "refused" and "malformed OP_RETURN" in status["reason"]
        status = net.status(node, dust)
        assert status["state"] == "refused" and "dust" in status["reason"], status
        assert net.status(node, elsewhere) is None
        assert net.status(node, second) is None and net.status(node, replaced) is None
        for address in (dust_to, elsewhere_to, replaced_to):
            assert net.balance(node, address) == 0, node.name
        log = node.log_path.read_text()
        for tx in (no_memo_txid, malformed.txid()[::-1].hex(), dust.txid()[::-1].hex()):
            assert re.search(rf"payment {tx} of \d+ sats to the federation .* refused as a "
                             "peg-in: ", log), (node.name, tx)


def test_a_reorg_across_a_deposit_drops_it_and_credits_it_once_from_its_new_block(net: Net
                                                                                   ) -> None:
    kept_to, gone_to = random_address(), random_address()
    kept = net.deposit(kept_to, 1_000_000)
    gone_coin = net.coin()
    gone = deposit_transaction(net.faucet, *gone_coin, net.federation.script_pubkey,
                               2_000_000, gone_to)
    net.btcd.send(gone)
    [first_block] = net.btcd.generate(1)
    poll(lambda: net.on_all(lambda n: (net.status(n, kept) or {}).get("bitcoin_block")
                            == first_block and net.status(n, gone)),
         "both deposits detected in the first block", CREDIT_TIMEOUT, net.logs)
    # The block leaves btcd's best chain; its transactions go back to the mempool, where one
    # of them is replaced (RBF) by a payment to the faucet itself.
    net.btcd.rpc("invalidateblock", first_block)
    net.btcd.send(net.spend([], gone_coin, fee=60_000))
    new_blocks = net.btcd.generate(CONFIRMATIONS + 1)
    credited = poll(lambda: net.credited_everywhere(kept, kept_to, 1_000_000),
                    "the deposit credited from its new block", CREDIT_TIMEOUT, net.logs)
    for node in net.nodes:
        status = net.status(node, kept)
        assert status["bitcoin_block"] != first_block
        assert status["bitcoin_block"] in new_blocks
        assert net.status(node, gone) is None, node.name
        assert net.balance(node, gone_to) == 0
        log = node.log_path.read_text()
        for tx in (kept, gone):
            assert f"peg-in {tx.txid()[::-1].hex()} dropped: its Bitcoin block {first_block}" \
                in log, node.name
    assert credited["height"] >= 1


#: Seconds for a burn to become a broadcast Bitcoin transaction (a proposal in the next
#: block, signatures at the next queued PoW, the AuxPoW block after them: a few slots).
PEGOUT_TIMEOUT = 90.0
#: The fee rate of a proposal when Bitcoin has no estimate (btcd has no estimatesmartfee).
FALLBACK_SAT_PER_VBYTE = 2


def peg_out_status(node: DevNode, tx_hash: str) -> dict[str, Any]:
    found: dict[str, Any] = node.call("getpegstatus", tx_hash) or {}
    return found


def request_peg_out(node: DevNode, account: int, address: str, sats: int) -> str:
    """A ``requestPegOut`` burn of ``sats`` to ``address`` sent with Foundry's ``cast`` by
    dev account ``account`` through ``node``, as the README shows: its EVM tx hash, mined."""
    key = dev_accounts()[account].private_key
    done = subprocess.run(
        [str(tool("cast")), "send", "--rpc-url", node.eth_url, "--private-key",
         "0x" + key.hex(), "--json", "--value", str(sats * WEI_PER_SAT),
         "0x" + BRIDGE_ADDRESS.hex(), "requestPegOut(bytes)", "0x" + address.encode().hex()],
        capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    sent = json.loads(done.stdout)
    assert sent["status"] == "0x1", sent
    return str(sent["transactionHash"])


def agreed_on(nodes: list[DevNode], burn: str, *states: str) -> str | None:
    """The Bitcoin txid every node's ``getpegstatus`` gives the peg-out ``burn`` when all
    of them have it in one of ``states`` and name the same transaction; else None."""
    found = [peg_out_status(n, burn) for n in nodes]
    if not all(f.get("state") in states for f in found):
        return None
    txids = {f["bitcoin_txid"] for f in found}
    return txids.pop() if len(txids) == 1 else None


def test_a_peg_out_is_mined_by_btcd_with_2_of_3_schnorr_signatures(net: Net) -> None:
    # The federation's coins: a peg-in of its own (earlier tests' deposits are there too).
    funder = random_address()
    funding = net.deposit(funder, 50_000_000)
    net.btcd.generate(CONFIRMATIONS)
    poll(lambda: net.credited_everywhere(funding, funder, 50_000_000),
         "the federation's funding credited everywhere", CREDIT_TIMEOUT, net.logs)
    # To a P2WPKH of a fresh key, burned with cast as the README shows.
    program = hash160(PrivateKey(secrets.token_bytes(32)).public_key.format())
    address, script = address_from_witness(0, program, "regtest"), b"\x00\x14" + program
    sats = 3_210_000
    burn = request_peg_out(net.nodes[1], 2, address, sats)

    def agreed(*states: str) -> str | None:
        return agreed_on(net.nodes, burn, *states)

    txid = poll(lambda: agreed("broadcast", "confirmed"),
                "the peg-out broadcast by every node, the same transaction", PEGOUT_TIMEOUT,
                net.logs)
    assert txid in net.btcd.rpc("getrawmempool"), "btcd accepted it into its mempool"
    for node in net.nodes:
        status = peg_out_status(node, burn)
        assert (status["amount_sats"], status["destination"]) == (sats, address), status
        assert status["proposal_txid"] == txid
    [block] = net.btcd.generate(1)
    assert txid in net.btcd.rpc("getblock", block, 1)["tx"], "btcd mined it"
    net.btcd.generate(1)  # bridge.pegout_confirmations (2, the default)
    assert poll(lambda: agreed("confirmed"), "the peg-out confirmed on every node",
                CREDIT_TIMEOUT, net.logs) == txid

    tx = net.btcd.transaction(txid)
    spent = [net.btcd.transaction(i.prevout.txid[::-1].hex()).outputs[i.prevout.vout]
             for i in tx.inputs]
    assert all(out.script_pubkey == net.federation.script_pubkey for out in spent)
    # Each input: the 3 members' elements in reverse key order (2 signatures, 1 empty),
    # the tapleaf script, the control block; each signature valid for its member's key.
    for index, txin in enumerate(tx.inputs):
        *elements, leaf, control = txin.witness
        assert (leaf, control) == (net.federation.script, net.federation.control_block)
        assert len(elements) == 3
        by_member = dict(zip(reversed(range(3)), elements, strict=True))
        signers = [m for m, e in by_member.items() if e]
        assert len(signers) == 2 and all(len(by_member[m]) == 64 for m in signers), elements
        assert [len(e) for e in elements].count(0) == 1
        digest = net.federation.sighash(tx, index, spent)
        for member in signers:
            assert PublicKeyXOnly(net.federation.keys[member]).verify(by_member[member],
                                                                      digest), member
    # The requested amount less its fee share: alone in the transaction, it pays the whole
    # fee of 2 sat/vB (btcd's vsize), the federation at most the cost of its change.
    [paid] = [out.value for out in tx.outputs if out.script_pubkey == script]
    vsize = net.btcd.rpc("getrawtransaction", txid, 1)["vsize"]
    fee = sum(out.value for out in spent) - sum(out.value for out in tx.outputs)
    share = sats - paid
    assert share == FALLBACK_SAT_PER_VBYTE * vsize, (share, vsize)
    assert share <= fee
    assert all(out.script_pubkey in (script, net.federation.script_pubkey)
               for out in tx.outputs)
    # What the README's helper shows for the address.
    shown = subprocess.run([sys.executable, "-m", "node", "received", address, "--dir",
                            str(net.devnet.directory)], capture_output=True, text=True,
                           timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert f"{txid}:" in shown.stdout and f"({paid} sats), 2 confirmations" in shown.stdout


#: Where the node is killed, relative to the deposit's life.
STEPS = ("before it is mined", "detected", "confirmed", "crediting block imported",
         "credited")


@settings(max_examples=CRASH_EXAMPLES, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(step=st.sampled_from(STEPS), victim=st.integers(0, 2),
       sats=st.integers(546, 10**8))
def test_kill_9_at_any_step_still_credits_exactly_once(net: Net, step: str, victim: int,
                                                       sats: int) -> None:
    event(f"killed {step!r}: node{victim + 1}")  # --hypothesis-show-statistics lists them
    to = random_address()
    node = net.nodes[victim]
    others = [n for n in net.nodes if n is not node]

    def kill() -> None:
        net.kill(victim)

    if step == "before it is mined":
        kill()
        tx = net.deposit(to, sats)
        net.btcd.generate(CONFIRMATIONS)
    else:
        tx = net.deposit(to, sats)
        net.btcd.generate(1)
        if step == "detected":
            poll(lambda: (net.status(node, tx) or {}).get("state") == "detected",
                 f"detected on {node.name}", CREDIT_TIMEOUT, net.logs)
            kill()
            net.btcd.generate(CONFIRMATIONS - 1)
        else:
            net.btcd.generate(CONFIRMATIONS - 1)
            if step == "confirmed":
                poll(lambda: (net.status(node, tx) or {}).get("state") in ("confirmed",
                                                                           "credited"),
                     f"confirmed on {node.name}", CREDIT_TIMEOUT, net.logs)
            elif step == "crediting block imported":
                # The moment any node holds the credit: the victim is importing that block
                # or telling its bridge (a few milliseconds apart; Hypothesis varies which).
                poll(lambda: any(net.balance(n, to) for n in net.nodes),
                     "a node credits the deposit", CREDIT_TIMEOUT, net.logs)
            else:
                poll(lambda: net.balance(node, to) == sats * WEI_PER_SAT,
                     f"credited on {node.name}", CREDIT_TIMEOUT, net.logs)
            kill()
    # The two others go on and credit it once.
    poll(lambda: all(net.balance(n, to) == sats * WEI_PER_SAT for n in others),
         "the others credit it", CREDIT_TIMEOUT, net.logs)
    net.restart(victim)
    net.btcd.generate(1)
    credited = poll(lambda: net.credited_everywhere(tx, to, sats),
                    f"one credit everywhere after {node.name} was killed {step!r}",
                    PROGRESS_TIMEOUT, net.logs)
    # Blocks go on and nothing is credited twice.
    height = net.nodes[victim].status()["head"]["height"]
    poll(lambda: all(n.status()["head"]["height"] >= height + 1 for n in net.nodes),
         "blocks go on", PROGRESS_TIMEOUT, net.logs)
    assert net.credited_everywhere(tx, to, sats) == credited


#: Where the node is killed, relative to the peg-out's life.
PEGOUT_STEPS = ("burn mined", "proposed", "signing", "broadcast", "in btcd's mempool",
                "broadcast, down until mined")
#: Sats one funding peg-in gives the federation for the peg-out crash test's requests.
PEGOUT_FUNDING = 50_000_000
_SIGNING = re.compile(r"signed \d+ peg-out proposals as member|peg-out \w+ signed by \d+ "
                      r"members")


def fund_federation(net: Net, sats: int) -> None:
    """Enough coins in the federation for a request of ``sats`` (a peg-in of its own when
    what this module's crash examples gave it runs low; earlier tests' coins are not
    counted, so the test also runs alone)."""
    if net.pegout_funds >= sats + 1_000_000:
        return
    funder = random_address()
    funding = net.deposit(funder, PEGOUT_FUNDING)
    net.btcd.generate(CONFIRMATIONS)
    poll(lambda: net.credited_everywhere(funding, funder, PEGOUT_FUNDING),
         "the federation's funding credited everywhere", CREDIT_TIMEOUT, net.logs)
    net.pegout_funds += PEGOUT_FUNDING


@settings(max_examples=CRASH_EXAMPLES, deadline=None, database=None,
          phases=[Phase.explicit, Phase.generate],
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(step=st.sampled_from(PEGOUT_STEPS), victim=st.integers(0, 2),
       sats=st.integers(1_000_000, 5_000_000))
def test_kill_9_at_any_step_of_a_peg_out_still_pays_it_exactly_once(net: Net, step: str,
                                                                     victim: int,
                                                                     sats: int) -> None:
    event(f"killed {step!r}: node{victim + 1}")  # --hypothesis-show-statistics lists them
    fund_federation(net, sats)
    node = net.nodes[victim]
    others = [n for n in net.nodes if n is not node]
    program = hash160(PrivateKey(secrets.token_bytes(32)).public_key.format())
    address, script = address_from_witness(0, program, "regtest"), b"\x00\x14" + program
    seen = len(node.log_path.read_text(encoding="utf-8", errors="replace"))
    burn = request_peg_out(others[0], 3, address, sats)
    net.pegout_funds -= sats

    def state(n: DevNode) -> str | None:
        found: str | None = peg_out_status(n, burn).get("state")
        return found

    def signing() -> bool:
        text = node.log_path.read_text(encoding="utf-8", errors="replace")[seen:]
        return bool(_SIGNING.search(text)) or state(node) in ("signed", "broadcast",
                                                              "confirmed")

    def in_mempool() -> bool:
        proposal = peg_out_status(others[0], burn).get("proposal_txid")
        return bool(proposal) and proposal in net.btcd.rpc("getrawmempool")

    if step == "proposed":
        poll(lambda: state(node) in ("proposed", "signed", "broadcast", "confirmed"),
             f"proposed on {node.name}", PEGOUT_TIMEOUT, net.logs)
    elif step == "signing":
        poll(signing, f"{node.name} signs or finalizes", PEGOUT_TIMEOUT, net.logs)
    elif step in ("broadcast", "broadcast, down until mined"):
        poll(lambda: state(node) in ("broadcast", "confirmed"), f"broadcast by {node.name}",
             PEGOUT_TIMEOUT, net.logs)
    elif step == "in btcd's mempool":
        poll(in_mempool, "the peg-out in btcd's mempool", PEGOUT_TIMEOUT, net.logs)
    net.kill(victim)
    if victim != 0:
        # The two others (the miner's node among them) go on: 2 signatures of 3 suffice.
        poll(lambda: agreed_on(others, burn, "broadcast", "confirmed"),
             f"the peg-out broadcast by the others while {node.name} is down",
             PEGOUT_TIMEOUT, net.logs)
    # (node1 killed: no PoW, so no signatures and no AuxPoW block until it is back.)
    if step == "broadcast, down until mined":
        # It comes back to a peg-out Bitcoin mined without it: its replay of the block that
        # carried it sends it again, and it must still agree.
        poll(in_mempool, "the peg-out in btcd's mempool", PEGOUT_TIMEOUT, net.logs)
        net.btcd.generate(CONFIRMATIONS)
    net.restart(victim)
    txid = poll(lambda: agreed_on(net.nodes, burn, "broadcast", "confirmed"),
                f"the peg-out broadcast by every node after {node.name} was killed {step!r}",
                PROGRESS_TIMEOUT, net.logs)
    net.btcd.generate(CONFIRMATIONS)
    assert poll(lambda: agreed_on(net.nodes, burn, "confirmed"),
                "the peg-out confirmed on every node", CREDIT_TIMEOUT, net.logs) == txid
    for n in net.nodes:
        status = peg_out_status(n, burn)
        assert status["proposal_txid"] == txid, (n.name, status)
        assert (status["amount_sats"], status["destination"]) == (sats, address), status
    # Blocks go on (any second proposal for the request would come in them) and btcd mines
    # whatever is in its mempool: still exactly one payment, the agreed transaction's.
    height = net.nodes[victim].status()["head"]["height"]
    poll(lambda: all(n.status()["head"]["height"] >= height + 3 for n in net.nodes),
         "blocks go on", PROGRESS_TIMEOUT, net.logs)
    net.btcd.generate(1)
    payments = payments_to(net.btcd, script)
    assert len(payments) == 1, (step, node.name, payments)
    [paid] = payments
    assert paid.txid == txid and paid.confirmations >= CONFIRMATIONS + 1, paid
    assert sats - 20_000 < paid.sats < sats, (paid, sats)  # less its fee share
    assert agreed_on(net.nodes, burn, "confirmed") == txid
