"""The network layer's errors, under :class:`node.errors.NodeError`."""

from __future__ import annotations

from ..errors import NodeError


class NetworkError(NodeError):
    """A problem with a peer or a connection."""


class FrameError(NetworkError, ValueError):
    """Bytes that are not a valid frame. ``what`` names the problem's kind (``size``,
    ``version``, ``cbor``, ``field``, ``payload``) and ``where`` the position in the frame
    (``frame``, ``frame.body.start``, ``consensus_block.execution_payload``...)."""

    def __init__(self, what: str, where: str, problem: str) -> None:
        super().__init__(f"bad frame ({what}) at {where}: {problem}")
        self.what = what
        self.where = where
        self.problem = problem


class FrameTooLarge(FrameError):
    """A frame over the size limit: the connection is closed."""

    def __init__(self, size: int, limit: int) -> None:
        super().__init__("size", "frame", f"{size} bytes, over the limit of {limit}")
        self.size = size
        self.limit = limit


class ConnectionClosed(NetworkError):
    """The connection is closed (by either side, or lost); ``reason`` says why when known."""

    def __init__(self, reason: str = "closed") -> None:
        super().__init__(reason)
        self.reason = reason


class MessageTooBig(ConnectionClosed):
    """The connection was closed because the peer sent a message over the size limit (the
    transport refused it before handing it over)."""


class HandshakeRefused(NetworkError):
    """The handshake failed: the peers are on another chain or protocol, or one side would
    not take the other (banned, full, itself). ``reason`` is what both sides log."""

    def __init__(self, reason: str, *, by_peer: bool = False) -> None:
        super().__init__(("refused by the peer: " if by_peer else "refused: ") + reason)
        self.reason = reason
        self.by_peer = by_peer
