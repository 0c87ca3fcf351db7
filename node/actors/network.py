"""NetworkActor: the node's peers — handshake, gossip, blocks by range, scoring and bans.

Thin by design: frames are :mod:`node.network.frames`, the handshake's checks
:mod:`node.network.handshake`, gossip payloads and de-duplication :mod:`node.network.gossip`,
and every peer-management decision (scores, bans, flood limits, redial backoff, admission)
a pure rule of :mod:`node.workflows.peers`. This actor holds the state and runs the tasks;
its interface (messages and bus events) is :mod:`node.messages.network`.

Tasks (owned by the actor: they stop with it):

* the listener (``network.host:port``, 127.0.0.1:55444 by default), one task per inbound
  connection;
* one dialler per bootnode: dial; on failure wait ``2 ** min(n, 12)`` s and dial again,
  giving up after 12 failures in a row (with a log line); after a session ends, dial again
  a second later; while that node is connected by another route, wait for it to leave;
* per connected peer: a reader (decodes each frame, checks the flood limit, dispatches), a
  writer (its outbox, so a slow peer never blocks the others: gossip to a peer whose outbox
  is full is dropped for that peer), a pinger (every ``ping_interval``; no pong within
  ``request_timeout`` ends the connection), and a task per request being served (at most
  :data:`MAX_SERVING` at once, beyond that the peer is answered "busy").

Gossip is forwarded to the other peers when it arrives, except blocks and approvals
(``VALIDATED_TOPICS``), which wait for the ChainActor's ``Relay``: a node passes on only
what it found valid, so an honest node is never blamed (and banned) for a liar's block.

State values (snap sync): a peer's ``GetStateNodes`` is answered from the EngineActor
(``engine``), up to :data:`MAX_SERVING` at once like blocks; ``RequestStateNodes`` asks a
peer and checks every value it returns hashes to its hash.

Faults: a frame that does not decode, a gossip payload that does not decode, flooding, a
frame over ``max_frame_bytes``: the peer is penalised (100 points: banned at once) and
disconnected. A request that times out costs 20 points, an answer that does not fit its
request 50. A peer's fault never crashes the actor. If the actor crashes anyway, its
supervisor restarts it: peers reconnect, nothing of the chain is touched (this actor only
reads the storage).

Duplicate connections (both nodes dialled each other at once): of two connections between
the same nodes, both sides keep the one dialled by the node with the smaller id.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

import attrs
import trio
from eth_hash.auto import keccak

import otp

from ..config import ChainConfig, NetworkConfig, structure_section
from ..errors import CALL_FAILURES
from ..execution.embedded import STATE_ANSWER_BYTES
from ..messages import engine as engine_msgs
from ..messages import storage as storage_msgs
from ..messages.chain import BLOCKS_TOPIC, BlockImported
from ..messages.network import (
    PEERS_TOPIC,
    VALIDATED_TOPICS,
    GetNetworkInfo,
    GetPeers,
    GossipReceived,
    NetworkInfo,
    PeerBanned,
    PeerConnected,
    PeerDisconnected,
    PeerInfo,
    Publish,
    Relay,
    ReportPeer,
    RequestBlocks,
    RequestFailed,
    RequestStateNodes,
    RequestStatus,
    gossip_topic,
)
from ..network import frames as f
from ..network.errors import (
    ConnectionClosed,
    FrameError,
    FrameTooLarge,
    HandshakeRefused,
    MessageTooBig,
    NetworkError,
)
from ..network.gossip import CONSENSUS_BLOCK, SeenCache, decode_payload, encode_payload, message_id
from ..network.handshake import auth_for, check_auth, check_hello, hello_for
from ..network.identity import NodeKey, load_or_create_node_key
from ..network.transport import Connection, Transport
from ..network.websocket import WebSocketTransport
from ..types import encoding
from ..types.chain import BlockRef, SignedConsensusBlock
from ..workflows import peers as rules
from . import sibling

logger = logging.getLogger("alys.network")

#: Requests served to one peer at once; more are answered "busy".
MAX_SERVING: Final = 2
#: Frames waiting to be written to one peer.
OUTBOX: Final = 64
#: Room left in a chunk for the frame's own fields.
CHUNK_OVERHEAD: Final = 64
_F = TypeVar("_F")

#: How long queued frames may take to leave once a peer is being disconnected.
DRAIN_SECONDS: Final = 1.0
#: How long the actor waits at start for a restarting storage.
INIT_WAIT: Final = 30.0


@attrs.define(eq=False)
class _Pending:
    """A request of ours waiting for its answer."""

    kind: type[Any]
    done: trio.Event = attrs.field(factory=trio.Event)
    chunks: list[bytes] = attrs.field(factory=list)
    answer: Any = None


@attrs.define(eq=False)
class _Peer:
    """A connected peer (after the handshake)."""

    node_id: str
    conn: Connection
    inbound: bool
    status: f.Status
    bucket: rules.TokenBucket
    outbox: trio.MemorySendChannel[bytes]
    inbox: trio.MemoryReceiveChannel[bytes]
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    pending: dict[int, _Pending] = attrs.field(factory=dict)
    pings: dict[int, trio.Event] = attrs.field(factory=dict)
    serving: int = 0
    reason: str | None = None
    gone: trio.Event = attrs.field(factory=trio.Event)


class NetworkActor(otp.GenServer):
    owns_tasks = True

    async def init(
        self,
        config: Any = None,
        chain: Any = None,
        data_dir: str = ".alys",
        storage: str = "storage",
        transport: Transport | None = None,
        bus_prefix: str = "",
        engine: str = "engine",
    ) -> Any:
        """``config`` is the ``network`` section, ``chain`` the ``chain`` section (its chain
        id goes in the hello). ``transport`` replaces the WebSocket transport (tests,
        simulations: :class:`node.network.memory.MemoryTransport`). ``bus_prefix`` is put
        before every bus topic this actor publishes or subscribes to, so several nodes can
        share one runtime in a simulation. ``engine`` is the EngineActor's name, asked for
        the state values peers request (snap sync). Returns ``otp.Ignore`` when
        ``network.enabled`` is false."""
        self.cfg: NetworkConfig = structure_section(config or {}, NetworkConfig, "network")
        if not self.cfg.enabled:
            logger.info("network disabled (network.enabled = false): no peers")
            return otp.Ignore
        chain_cfg: ChainConfig = structure_section(chain or {}, ChainConfig, "chain")
        self.chain_id = chain_cfg.chain_id
        self.storage = storage
        self.engine = engine
        self.prefix = bus_prefix
        self.key = (NodeKey.from_hex(self.cfg.node_key, "network.node_key")
                    if self.cfg.node_key
                    else load_or_create_node_key(Path(data_dir) / "keys" / "node_key"))
        self.node_id = self.key.node_id
        self.transport: Transport = transport or WebSocketTransport(
            self.cfg.host, self.cfg.port, max_message_bytes=self.cfg.max_frame_bytes,
            connect_timeout=self.cfg.handshake_timeout)
        genesis = await sibling.call_storage(storage_msgs.GetBlockByHeight(0), storage=storage,
                                             wait=INIT_WAIT)
        if genesis is None:
            raise NetworkError("the storage holds no genesis block yet: the chain actor "
                               "writes it before the network starts")
        self.genesis_hash = genesis.hash()
        info = await sibling.call_storage(storage_msgs.GetChainInfo(), storage=storage,
                                          wait=INIT_WAIT)
        assert info.head is not None and info.finalized is not None
        self.status = f.Status(info.head, info.finalized)
        self.peers: dict[str, _Peer] = {}
        self.scores: dict[str, rules.Score] = {}
        self.bans = rules.Bans()
        self.seen = SeenCache(self.cfg.seen_cache)
        #: The SHA-256 of each gossip frame seen (received or sent), so that a copy is
        #: dropped before it is decoded: every node encodes a message into the same bytes.
        self.seen_frames = SeenCache(self.cfg.seen_cache)
        self.redial: dict[str, rules.Redial] = {}
        #: The node id behind each bootnode address, once a handshake told us.
        self.bootnode_ids: dict[str, str] = {}
        self._next_request = 1
        otp.bus.subscribe(self.prefix + BLOCKS_TOPIC)
        self.listening: str | None = await otp.start_task(self.transport.listen, self._inbound)
        logger.info("network: node %s listening on %s, %d bootnode(s)", self.node_id,
                    self.listening, len(self.cfg.bootnodes))
        for address in self.cfg.bootnodes:
            self.redial[address] = rules.Redial()
            otp.start_task_soon(self._dialler, address)
        return None

    # -- the actor's interface -------------------------------------------------------------------

    async def handle_cast(self, msg: Any) -> None:
        await trio.lowlevel.checkpoint()
        match msg:
            case Publish(topic, payload):
                self._publish(topic, encode_payload(topic, payload))
            case Relay(topic, payload, source):
                self._publish(topic, encode_payload(topic, payload), source=source)
            case ReportPeer(peer, offence, detail):
                self._offence(peer, offence, detail or "reported")
            case _:
                raise otp.UnexpectedMessage(self, "cast", msg)

    async def handle_call(self, request: Any, from_: otp.From) -> Any:
        await trio.lowlevel.checkpoint()
        match request:
            case RequestBlocks(peer_id, start, count):
                peer = self.peers.get(peer_id)
                if peer is None:
                    return RequestFailed(peer_id, "no_peer", "not connected")
                otp.start_task_soon(self._request_blocks, from_, peer, start, count)
                return otp.NoReply
            case RequestStateNodes(peer_id, hashes):
                peer = self.peers.get(peer_id)
                if peer is None:
                    return RequestFailed(peer_id, "no_peer", "not connected")
                otp.start_task_soon(self._request_state, from_, peer, hashes)
                return otp.NoReply
            case RequestStatus(peer_id):
                peer = self.peers.get(peer_id)
                if peer is None:
                    return RequestFailed(peer_id, "no_peer", "not connected")
                otp.start_task_soon(self._request_status, from_, peer)
                return otp.NoReply
            case GetPeers():
                return self._peer_infos()
            case GetNetworkInfo():
                now = trio.current_time()
                self.bans = self.bans.expire(now)
                return NetworkInfo(self.node_id, self.listening, tuple(self._peer_infos()),
                                   tuple(sorted(self.bans.until)))
        raise otp.UnexpectedMessage(self, "call", request)

    async def handle_info(self, msg: Any) -> None:
        match msg:
            case BlockImported(ref, _slot, finalized, produced):
                self.status = f.Status(ref, finalized)
                if produced and self.peers:
                    await self._gossip_own_block(ref)
                else:
                    await trio.lowlevel.checkpoint()
            case _:
                await super().handle_info(msg)

    def _peer_infos(self) -> list[PeerInfo]:
        now = trio.current_time()
        return [PeerInfo(p.node_id, p.conn.remote, p.inbound, p.status,
                         self.scores.get(p.node_id, rules.Score()).now(now))
                for p in self.peers.values()]

    async def _gossip_own_block(self, ref: BlockRef) -> None:
        try:
            block = await sibling.call_storage(storage_msgs.GetBlock(ref.hash),
                                               storage=self.storage, wait=2.0)
        except CALL_FAILURES as exc:
            logger.warning("block #%d not gossiped: the storage did not answer: %s",
                           ref.height, exc)
            return
        if block is not None:
            self._publish(CONSENSUS_BLOCK, encoding.encode_signed_block(block))

    # -- gossip ----------------------------------------------------------------------------------

    def _publish(self, topic: str, data: bytes, source: str | None = None) -> int:
        """Send ``data`` on ``topic`` to every peer but ``source``; remembered as seen."""
        self.seen.add(message_id(topic, data))
        try:
            frame = f.encode_frame(f.Gossip(topic, data), self.cfg.max_frame_bytes)
        except FrameTooLarge as exc:
            logger.warning("%s message not gossiped: %s", topic, exc)
            return 0
        self.seen_frames.add(hashlib.sha256(frame).digest())  # its echoes need no decoding
        sent = 0
        for peer in list(self.peers.values()):
            if peer.node_id != source:
                sent += self._send_nowait(peer, frame)
        return sent

    def _send_nowait(self, peer: _Peer, data: bytes) -> bool:
        try:
            peer.outbox.send_nowait(data)
        except trio.WouldBlock:
            logger.debug("outbox of %s full: a frame is dropped for it", peer.node_id)
            return False
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            return False
        return True

    async def _on_gossip(self, peer: _Peer, frame: f.Gossip, mid: bytes) -> None:
        """A gossip frame whose message id is ``mid``: dropped if seen, else published on
        the bus (and passed on at once, unless its topic waits for the chain's Relay)."""
        if mid in self.seen:
            await trio.lowlevel.checkpoint()
            return
        payload = decode_payload(frame.topic, frame.data)  # FrameError: the reader's to handle
        if frame.topic in VALIDATED_TOPICS:
            # Forwarded once the chain found it valid (Relay): never pass on a bad block.
            self.seen.add(mid)
        else:
            self._publish(frame.topic, frame.data, source=peer.node_id)
        await otp.bus.publish(self.prefix + gossip_topic(frame.topic),
                              GossipReceived(frame.topic, payload, peer.node_id, mid))

    # -- scoring ---------------------------------------------------------------------------------

    def _offence(self, peer_id: str, offence: rules.Offence, detail: str) -> None:
        now = trio.current_time()
        score = rules.penalise(self.scores.get(peer_id, rules.Score(0.0, now)), offence, now)
        self.scores[peer_id] = score
        logger.warning("peer %s: %s (%s); score %.0f", peer_id, offence.value, detail,
                       score.value)
        if rules.should_ban(score, now):
            self.bans = self.bans.expire(now).ban(peer_id, now, self.cfg.ban_seconds)
            self.scores.pop(peer_id, None)
            logger.warning("peer %s banned for %g s: %s", peer_id, self.cfg.ban_seconds,
                           offence.value)
            otp.bus.publish_nowait(self.prefix + PEERS_TOPIC, PeerBanned(
                peer_id, offence, self.bans.until[peer_id], detail))
            peer = self.peers.get(peer_id)
            if peer is not None:
                self._disconnect(peer, f"banned: {offence.value}")

    def _disconnect(self, peer: _Peer, reason: str, *, goodbye: bool = True) -> None:
        """End ``peer``'s connection: a goodbye (best effort) after the frames already
        queued, then the connection closes; its tasks are cancelled within
        :data:`DRAIN_SECONDS` at most."""
        if peer.reason is None:
            peer.reason = reason
            if goodbye:
                self._send_nowait(peer, f.encode_frame(f.Goodbye(reason[:f.MAX_TEXT])))
        peer.outbox.close()
        peer.scope.deadline = min(peer.scope.deadline, trio.current_time() + DRAIN_SECONDS)

    # -- connections -----------------------------------------------------------------------------

    async def _inbound(self, conn: Connection) -> None:
        await self._session(conn, inbound=True)

    async def _dialler(self, address: str) -> None:
        while True:
            known = self.bootnode_ids.get(address)
            if known is not None and known in self.peers:
                await self.peers[known].gone.wait()
                self.redial[address] = rules.Redial().disconnected(trio.current_time())
            state = self.redial[address]
            if state.next_at is None:
                logger.warning("bootnode %s: giving up after %d failed dials", address,
                               state.failures)
                return
            await trio.sleep_until(state.next_at)
            try:
                async with self.transport.connect(address) as conn:
                    connected = await self._session(conn, inbound=False, bootnode=address)
            except ConnectionClosed as exc:
                connected = False
                logger.info("bootnode %s: %s", address, exc.reason)
            now = trio.current_time()
            if connected:
                self.redial[address] = rules.Redial().disconnected(now)
            else:
                self.redial[address] = self.redial[address].failed(now)
                if self.redial[address].next_at is not None:
                    logger.info("bootnode %s: dial %d failed; next in %g s", address,
                                self.redial[address].failures,
                                rules.backoff_delay(self.redial[address].failures))

    async def _handshake(self, conn: Connection, inbound: bool,
                         bootnode: str | None) -> tuple[f.Hello, _Peer | None]:
        """Hellos both ways, then the checks; returns the peer's hello and the connected peer
        it replaces (a duplicate connection), or raises :class:`HandshakeRefused`."""
        ours = hello_for(self.key, self.chain_id, self.genesis_hash, self.status)
        deadline = trio.current_time() + self.cfg.handshake_timeout
        await conn.send(f.encode_frame(ours))
        frame = await self._handshake_frame(conn, deadline, f.Hello, "hello")
        problem = check_hello(ours, frame)
        if problem is not None:
            await self._refuse(conn, problem)
        # Prove our key by signing the peer's nonce; the peer proves its key by ours.
        await conn.send(f.encode_frame(auth_for(self.key, ours, frame)))
        auth = await self._handshake_frame(conn, deadline, f.Auth, "handshake signature")
        problem = check_auth(ours, frame, auth)
        if problem is not None:
            await self._refuse(conn, problem)
        if bootnode is not None:
            self.bootnode_ids[bootnode] = frame.node_id
        now = trio.current_time()
        replaced = None
        existing = self.peers.get(frame.node_id)
        connected = set(self.peers)
        if existing is not None and self._preferred(frame.node_id, inbound) and (
                not self._preferred(frame.node_id, existing.inbound)):
            replaced = existing
            connected.discard(frame.node_id)
        problem = rules.admit(frame.node_id, self_id=self.node_id, connected=connected,
                              bans=self.bans, now=now, max_peers=self.cfg.max_peers)
        if problem is not None:
            await self._refuse(conn, problem)
        return frame, replaced

    async def _handshake_frame(self, conn: Connection, deadline: float, kind: type[_F],
                               what: str) -> _F:
        """The next handshake frame, which must be a ``kind`` (a refusal raises
        :class:`HandshakeRefused`, anything else refuses the peer)."""
        with trio.move_on_at(deadline) as scope:
            data = await conn.receive()
        if scope.cancelled_caught:
            raise HandshakeRefused(f"no {what} within the handshake timeout")
        frame = f.decode_frame(data, self.cfg.max_frame_bytes)
        if isinstance(frame, f.Refuse):
            raise HandshakeRefused(frame.reason, by_peer=True)
        if isinstance(frame, kind):
            return frame
        await self._refuse(conn, f"expected a {what}, got {type(frame).__name__}")

    def _preferred(self, peer_id: str, inbound: bool) -> bool:
        """Whether a connection to ``peer_id`` in this direction is the one both sides keep
        when there are two: the one dialled by the smaller node id."""
        dialler = peer_id if inbound else self.node_id
        return dialler == min(peer_id, self.node_id)

    async def _refuse(self, conn: Connection, reason: str) -> NoReturn:
        with trio.move_on_after(1.0):
            try:
                await conn.send(f.encode_frame(f.Refuse(reason[:f.MAX_TEXT])))
            except ConnectionClosed:
                pass
        raise HandshakeRefused(reason)

    async def _session(self, conn: Connection, *, inbound: bool,
                       bootnode: str | None = None) -> bool:
        """One connection from handshake to close; True if the handshake succeeded. Never
        raises for anything the peer does."""
        try:
            hello, replaced = await self._handshake(conn, inbound, bootnode)
        except HandshakeRefused as exc:
            logger.warning("handshake with %s %s", conn.remote, exc)
            return False
        except FrameError as exc:
            logger.warning("handshake with %s failed: %s", conn.remote, exc)
            return False
        except ConnectionClosed as exc:
            logger.info("handshake with %s: connection closed (%s)", conn.remote, exc.reason)
            return False
        if replaced is not None:
            self._disconnect(replaced, "duplicate connection")
            with trio.move_on_after(self.cfg.handshake_timeout):
                await replaced.gone.wait()
        now = trio.current_time()
        outbox, inbox = trio.open_memory_channel[bytes](OUTBOX)
        rate = self.cfg.max_frames_per_second
        peer = _Peer(hello.node_id, conn, inbound, hello.status,
                     rules.TokenBucket.full(rate, 2 * rate, now), outbox, inbox)
        self.peers[peer.node_id] = peer
        logger.info("peer %s connected (%s, %s): head #%d, finalized #%d", peer.node_id,
                    conn.remote, "inbound" if inbound else "outbound", hello.status.head.height,
                    hello.status.finalized.height)
        otp.bus.publish_nowait(self.prefix + PEERS_TOPIC, PeerConnected(
            peer.node_id, conn.remote, inbound, hello.status))
        try:
            with peer.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, peer)
                    nursery.start_soon(self._pinger, peer, nursery)
                    await self._reader(peer, nursery)
                    # The writer sends what is queued (a goodbye), then ends the session.
                    self._disconnect(peer, peer.reason or "closed", goodbye=False)
        finally:
            if self.peers.get(peer.node_id) is peer:
                del self.peers[peer.node_id]
            for pending in peer.pending.values():
                pending.done.set()
            outbox.close()
            reason = peer.reason or "closed"
            peer.gone.set()
            logger.info("peer %s disconnected: %s", peer.node_id, reason)
            otp.bus.publish_nowait(self.prefix + PEERS_TOPIC,
                                   PeerDisconnected(peer.node_id, reason))
        return True

    async def _writer(self, peer: _Peer) -> None:
        try:
            async for data in peer.inbox:  # a checkpoint per frame
                if not peer.conn.send_nowait(data):  # a transport that need not wait
                    await peer.conn.send(data)
        except ConnectionClosed as exc:
            peer.reason = peer.reason or exc.reason
        peer.scope.cancel()

    async def _pinger(self, peer: _Peer, nursery: trio.Nursery) -> None:
        nonces = itertools.count(1)
        while True:
            await trio.sleep(self.cfg.ping_interval)
            nonce = next(nonces)
            event = peer.pings[nonce] = trio.Event()
            self._send_nowait(peer, f.encode_frame(f.Ping(nonce)))
            with trio.move_on_after(self.cfg.request_timeout):
                await event.wait()
            peer.pings.pop(nonce, None)
            if not event.is_set():
                self._offence(peer.node_id, rules.Offence.TIMEOUT, "no pong")
                self._disconnect(peer, "ping timeout")
                return

    async def _reader(self, peer: _Peer, nursery: trio.Nursery) -> None:
        max_bytes = self.cfg.max_frame_bytes
        while True:
            try:
                data = await peer.conn.receive()
            except MessageTooBig as exc:
                peer.reason = exc.reason
                self._offence(peer.node_id, rules.Offence.MALFORMED_FRAME, exc.reason)
                return
            except ConnectionClosed as exc:
                peer.reason = peer.reason or exc.reason
                return
            except FrameError as exc:
                self._offence(peer.node_id, rules.Offence.MALFORMED_FRAME, str(exc))
                self._disconnect(peer, "malformed frame")
                return
            peer.bucket, within = peer.bucket.take(trio.current_time())
            if not within:
                self._offence(peer.node_id, rules.Offence.FLOODING,
                              f"over {self.cfg.max_frames_per_second:g} frames/s")
                self._disconnect(peer, "flooding")
                return
            try:
                unseen = self._unseen(data, max_bytes)
                if unseen is not None:
                    frame, digest, mid = unseen
                    if isinstance(frame, f.Gossip) and mid is not None:
                        # FrameError for a bad payload: the next copy is decoded (and its
                        # sender judged) too.
                        await self._on_gossip(peer, frame, mid)
                        self.seen_frames.add(digest)
                    else:
                        await self._dispatch(peer, frame, nursery)
            except FrameError as exc:
                self._offence(peer.node_id, rules.Offence.MALFORMED_FRAME, str(exc))
                self._disconnect(peer, "malformed frame")
                return
            if peer.reason is not None:
                return

    def _unseen(self, data: bytes, max_bytes: int
                ) -> tuple[f.Frame, bytes, bytes | None] | None:
        """The frame in ``data`` with the SHA-256 of ``data`` and, for gossip, its message
        id; None for a copy of gossip seen already, dropped (the reader's receive was its
        checkpoint): a copy of the same bytes before it is even decoded (every node encodes
        a message into the same bytes), a copy in other bytes by its message id. FrameError
        for a frame that does not decode."""
        digest = hashlib.sha256(data).digest()
        if digest in self.seen_frames:
            return None
        frame = f.decode_frame(data, max_bytes)
        if type(frame) is not f.Gossip:
            return frame, digest, None
        mid = message_id(frame.topic, frame.data)
        if mid in self.seen:
            # Its bytes are not remembered: a digest enters the cache only with its message
            # id (sent, or first received), so it is forgotten no later than the id is.
            return None
        return frame, digest, mid

    async def _dispatch(self, peer: _Peer, frame: f.Frame, nursery: trio.Nursery) -> None:
        match frame:
            case f.Gossip():
                await self._on_gossip(peer, frame, message_id(frame.topic, frame.data))
                return  # a checkpoint in itself
            case f.Ping(nonce):
                self._send_nowait(peer, f.encode_frame(f.Pong(nonce)))
            case f.Pong(nonce):
                event = peer.pings.get(nonce)
                if event is not None:
                    event.set()
            case f.StatusRequest(request_id):
                self._send_nowait(peer, f.encode_frame(f.StatusResponse(request_id,
                                                                        self.status)))
            case f.BlocksByRange(request_id, start, count):
                if peer.serving >= MAX_SERVING:
                    self._send_nowait(peer, f.encode_frame(f.ErrorResponse(request_id,
                                                                           "busy")))
                else:
                    peer.serving += 1
                    nursery.start_soon(self._serve_blocks, peer, request_id, start, count)
            case f.GetStateNodes(request_id, hashes):
                if peer.serving >= MAX_SERVING:
                    self._send_nowait(peer, f.encode_frame(f.ErrorResponse(request_id,
                                                                           "busy")))
                else:
                    peer.serving += 1
                    nursery.start_soon(self._serve_state, peer, request_id, hashes)
            case f.BlocksChunk() | f.StatusResponse() | f.StateNodes() | f.ErrorResponse():
                self._on_response(peer, frame)
            case f.Goodbye(reason):
                peer.reason = f"goodbye: {reason}"
            case f.Refuse(reason):
                logger.warning("peer %s refused this node: %s", peer.node_id, reason)
                peer.reason = f"refused by the peer: {reason}"
            case f.Hello():
                self._offence(peer.node_id, rules.Offence.PROTOCOL_VIOLATION,
                              "a second hello")
        await trio.lowlevel.checkpoint()

    # -- serving requests ------------------------------------------------------------------------

    async def _serve_blocks(self, peer: _Peer, request_id: int, start: int, count: int) -> None:
        try:
            try:
                blocks = await sibling.call_storage(
                    storage_msgs.GetEncodedRange(start, count), storage=self.storage, wait=5.0)
            except CALL_FAILURES as exc:
                logger.warning("blocks_by_range for %s not served: %s", peer.node_id, exc)
                self._send_nowait(peer, f.encode_frame(f.ErrorResponse(
                    request_id, "storage unavailable")))
                return
            limit = self.cfg.max_frame_bytes - CHUNK_OVERHEAD
            chunk: list[bytes] = []
            size = 0
            for raw in blocks:
                # Each block costs its bytes and a few for its CBOR header.
                cost = len(raw) + 9
                if cost > limit:
                    await peer.outbox.send(f.encode_frame(f.ErrorResponse(
                        request_id, f"block #{start + len(chunk)} is larger than a frame")))
                    return
                if size + cost > limit:
                    await peer.outbox.send(f.encode_frame(
                        f.BlocksChunk(request_id, tuple(chunk), False), self.cfg.max_frame_bytes))
                    chunk, size = [], 0
                chunk.append(raw)
                size += cost
            await peer.outbox.send(f.encode_frame(f.BlocksChunk(request_id, tuple(chunk), True),
                                                  self.cfg.max_frame_bytes))
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer left meanwhile
        finally:
            peer.serving -= 1

    async def _serve_state(self, peer: _Peer, request_id: int, hashes: tuple[bytes, ...]
                           ) -> None:
        """Answer a peer's ``GetStateNodes`` from the EngineActor (embedded engine only: any
        other answer — an external engine, no engine, no answer in time — is an
        ErrorResponse), within a frame."""
        try:
            # Room for the frame's fields and each value's CBOR header.
            budget = min(STATE_ANSWER_BYTES, self.cfg.max_frame_bytes
                         - CHUNK_OVERHEAD - 9 * len(hashes))
            try:
                answer = await sibling.call(
                    self.engine, engine_msgs.GetStateNodes(hashes, budget),
                    timeout=self.cfg.request_timeout / 2, wait=self.cfg.request_timeout / 2)
            except CALL_FAILURES as exc:
                logger.warning("state nodes for %s not served: %s", peer.node_id, exc)
                answer = None
            if not isinstance(answer, tuple):
                reason = ("state not served here" if answer is not None
                          else "execution engine unavailable")
                await peer.outbox.send(f.encode_frame(f.ErrorResponse(request_id, reason)))
                return
            try:
                frame = f.encode_frame(f.StateNodes(request_id, answer),
                                       self.cfg.max_frame_bytes)
            except FrameTooLarge:
                frame = f.encode_frame(f.ErrorResponse(request_id, "a value is larger "
                                                       "than a frame"))
            await peer.outbox.send(frame)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            pass  # the peer left meanwhile
        finally:
            peer.serving -= 1

    # -- our requests ----------------------------------------------------------------------------

    def _on_response(self, peer: _Peer, frame: f.BlocksChunk | f.StatusResponse
                     | f.StateNodes | f.ErrorResponse) -> None:
        pending = peer.pending.get(frame.request_id)
        if pending is None:
            # A late answer to a request that timed out is no offence; one to a request we
            # never made is.
            if frame.request_id >= self._next_request:
                self._offence(peer.node_id, rules.Offence.PROTOCOL_VIOLATION,
                              f"an answer to request {frame.request_id}, never made")
            return
        if isinstance(frame, f.ErrorResponse):
            pending.answer = frame
            pending.done.set()
        elif not isinstance(frame, pending.kind):
            pending.answer = f.ErrorResponse(frame.request_id,
                                             f"answered with {type(frame).__name__}")
            self._offence(peer.node_id, rules.Offence.BAD_RESPONSE, pending.answer.reason)
            pending.done.set()
        elif isinstance(frame, f.BlocksChunk):
            pending.chunks.extend(frame.blocks)
            if len(pending.chunks) > f.MAX_BLOCKS_PER_REQUEST:
                pending.answer = f.ErrorResponse(frame.request_id, "too many blocks")
                pending.done.set()
            elif frame.last:
                # Every chunk's blocks, in order, as one answer.
                pending.answer = f.BlocksChunk(frame.request_id, tuple(pending.chunks), True)
                pending.done.set()
        else:
            pending.answer = frame
            pending.done.set()

    async def _ask(self, peer: _Peer,
                   request: f.BlocksByRange | f.StatusRequest | f.GetStateNodes,
                   kind: type[Any]) -> Any:
        """Send ``request`` and wait for its answer: the final frame, or a RequestFailed."""
        pending = peer.pending[request.request_id] = _Pending(kind)
        try:
            try:
                await peer.outbox.send(f.encode_frame(request))
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                return RequestFailed(peer.node_id, "disconnected", "before the request left")
            with trio.move_on_after(self.cfg.request_timeout):
                await pending.done.wait()
            if not pending.done.is_set():
                self._offence(peer.node_id, rules.Offence.TIMEOUT,
                              f"no answer to {type(request).__name__} within "
                              f"{self.cfg.request_timeout:g} s")
                return RequestFailed(peer.node_id, "timeout",
                                     f"no answer within {self.cfg.request_timeout:g} s")
            if pending.answer is None:
                return RequestFailed(peer.node_id, "disconnected", peer.reason or "closed")
            if isinstance(pending.answer, f.ErrorResponse):
                return RequestFailed(peer.node_id, "refused", pending.answer.reason)
            return pending.answer
        finally:
            peer.pending.pop(request.request_id, None)

    async def _request_blocks(self, from_: otp.From, peer: _Peer, start: int,
                              count: int) -> None:
        answer = await self._ask(peer, f.BlocksByRange(self._next_id(), start, count),
                                 f.BlocksChunk)
        if isinstance(answer, RequestFailed):
            otp.reply(from_, answer)
            return
        otp.reply(from_, self._check_blocks(peer, start, count, list(answer.blocks)))

    async def _request_state(self, from_: otp.From, peer: _Peer,
                             hashes: tuple[bytes, ...]) -> None:
        answer = await self._ask(peer, f.GetStateNodes(self._next_id(), hashes), f.StateNodes)
        if isinstance(answer, RequestFailed):
            otp.reply(from_, answer)
            return
        values = answer.values
        problem = None
        if len(values) > len(hashes):
            problem = f"{len(values)} values for {len(hashes)} hashes"
        else:
            for i, value in enumerate(values):
                if value and keccak(value) != hashes[i]:
                    problem = f"value {i} does not hash to 0x{hashes[i].hex()}"
                    break
        if problem is not None:
            self._offence(peer.node_id, rules.Offence.BAD_RESPONSE, problem)
            otp.reply(from_, RequestFailed(peer.node_id, "invalid", problem))
            return
        otp.reply(from_, tuple(values) + (b"",) * (len(hashes) - len(values)))

    async def _request_status(self, from_: otp.From, peer: _Peer) -> None:
        answer = await self._ask(peer, f.StatusRequest(self._next_id()), f.StatusResponse)
        if isinstance(answer, f.StatusResponse):
            peer.status = answer.status
            otp.reply(from_, answer.status)
        else:
            otp.reply(from_, answer)

    def _next_id(self) -> int:
        request_id = self._next_request
        self._next_request = (request_id + 1) & 0xFFFFFFFF
        return request_id

    def _check_blocks(self, peer: _Peer, start: int, count: int,
                      raw: list[bytes]) -> list[SignedConsensusBlock] | RequestFailed:
        """The blocks of an answer, checked to be the range asked for: in height order
        from ``start``, at most ``count``, each the parent of the next."""
        blocks: list[SignedConsensusBlock] = []
        problem = None
        if len(raw) > count:
            problem = f"{len(raw)} blocks for a request of {count}"
        else:
            for i, data in enumerate(raw):
                try:
                    block = encoding.decode_signed_block(data)
                except encoding.DecodeError as exc:
                    problem = f"block {i} does not decode: {exc}"
                    break
                if block.height != start + i:
                    problem = f"block {i} is at #{block.height}, not #{start + i}"
                    break
                if blocks and block.message.parent_hash != blocks[-1].hash():
                    problem = f"block #{block.height} does not extend #{block.height - 1}"
                    break
                blocks.append(block)
        if problem is not None:
            self._offence(peer.node_id, rules.Offence.BAD_RESPONSE, problem)
            return RequestFailed(peer.node_id, "invalid", problem)
        return blocks
