"""The peer-to-peer network: frames, transports, handshake and gossip.

One concept per module:

* :mod:`.frames` — the versioned frames peers exchange (``otp.codec``), their limits;
* :mod:`.transport` — the transport interface (connect, listen, send, receive, close);
* :mod:`.websocket` — real WebSockets (trio-websocket), 127.0.0.1:55444 by default;
* :mod:`.memory` — an in-memory network for simulations: latency, loss, reordering and
  partitions under a seeded random generator;
* :mod:`.handshake` — what a hello must agree on;
* :mod:`.gossip` — topics, payloads, message ids, the seen-cache;
* :mod:`.errors` — the errors of all of the above.

The rules for peers (scores, bans, flood limits, redial backoff, admission) are in
:mod:`node.workflows.peers`; the actor that runs it all is
:class:`node.actors.network.NetworkActor`, its interface :mod:`node.messages.network`.
"""
