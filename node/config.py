"""The node's configuration: a typed schema, layered from four sources.

Layers, each overriding the one before: built-in defaults < a TOML file (``--config FILE``,
or ``./alys.toml`` when present) < environment variables ``ALYS_*`` < ``--set key=value``.
An environment variable names its key with ``__`` between sections:
``ALYS_CHAIN__SLOT_DURATION_MS=200`` sets ``chain.slot_duration_ms``; ``ALYS_DATA_DIR`` sets
``data_dir``. Values from the environment and ``--set`` are read as TOML values when they
parse as one (``200``, ``true``, ``"x"``, ``[1, 2]``), else taken as strings.

Every mistake (unknown key, wrong type, bad value) is reported at once in a
:class:`ConfigError` naming the key path and where the value came from.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import cattrs

import otp

from .errors import NodeError
from .workflows.sync import SyncConfig

ENV_PREFIX = "ALYS_"


class ConfigError(NodeError, ValueError):
    """Invalid configuration; ``problems`` lists every mistake as ``key path: message``."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("invalid configuration:\n  " + "\n  ".join(problems))


def _positive(_inst: Any, attribute: Any, value: Any) -> None:
    if value <= 0:
        raise ValueError(f"{attribute.name} must be > 0, not {value}")


def _non_negative(_inst: Any, attribute: Any, value: Any) -> None:
    if value < 0:
        raise ValueError(f"{attribute.name} must be >= 0, not {value}")


def _port(_inst: Any, attribute: Any, value: Any) -> None:
    if not 0 <= value <= 65535:
        raise ValueError(f"{attribute.name} must be a TCP port (0-65535), not {value}")


def _niceness(_inst: Any, attribute: Any, value: Any) -> None:
    if not 0 <= value <= 19:
        raise ValueError(f"{attribute.name} must be in 0..19, not {value}")


def _evm_address(_inst: Any, attribute: Any, value: Any) -> None:
    text = value[2:] if value.startswith("0x") else value
    if len(text) != 40 or any(c not in "0123456789abcdefABCDEF" for c in text):
        raise ValueError(f"{attribute.name} must be a 20-byte hex address, not {value!r}")


def _federation_keys(_inst: Any, attribute: Any, value: Any) -> None:
    from .workflows.federation import MAX_MEMBERS

    if len(value) > MAX_MEMBERS:
        raise ValueError(f"{attribute.name}: at most {MAX_MEMBERS} members, not {len(value)}")
    for i, key in enumerate(value):
        text = key[2:] if key.startswith("0x") else key
        if len(text) != 64 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"{attribute.name}[{i}] must be a 32-byte x-only public key in "
                             f"hex, not {key!r:.80}")
    if len({k.removeprefix("0x").lower() for k in value}) != len(value):
        raise ValueError(f"{attribute.name}: a key appears twice")


@attrs.frozen
class ChainConfig:
    """Consensus and merged-mining parameters (the original's chain spec, in TOML)."""

    #: Aura slot length; our dev default is 2 s (the original's dev spec: 4 s, main: 5 s).
    slot_duration_ms: int = attrs.field(default=2000, validator=_positive)
    #: BLS public keys (hex) of the authorities, in order. Empty: a single-authority dev chain
    #: whose one authority is this node's own key.
    authorities: tuple[str, ...] = ()
    #: A block without PoW is refused past this many blocks after the last finalized one.
    max_blocks_without_pow: int = attrs.field(default=20, validator=_positive)
    #: The merged-mining chain id (the original's dev spec: 121212).
    chain_id: int = attrs.field(default=121212, validator=_non_negative)
    #: The compact PoW target at genesis: the original's dev spec, 0x1e25cdf2 (505794034),
    #: about 444,000 hashes (0.3 s of a CPU here). 0x207fffff needs a couple of hashes.
    bits: int = attrs.field(default=0x1E25CDF2, validator=_positive)
    pow_target_timespan: int = attrs.field(default=60, validator=_positive)
    pow_target_spacing: int = attrs.field(default=5, validator=_positive)
    max_pow_adjustment: int = attrs.field(default=20, validator=_positive)
    pow_limit: int = attrs.field(default=0x207FFFFF, validator=_positive)
    pow_lower_limit: int = attrs.field(default=0x1D00FFFF, validator=_positive)
    #: Where an AuxPoW block's fee share goes when a miner gives no address.
    fee_recipient: str = attrs.field(
        default="0x000000000000000000000000000000000000dEaD", validator=_evm_address
    )
    #: The execution layer's chain id.
    execution_chain_id: int = attrs.field(default=121212, validator=_positive)
    #: EVM addresses of the federation (they share 20% of each AuxPoW block's fees).
    federation_evm_addresses: tuple[str, ...] = ()
    #: The federation members' Bitcoin keys (x-only, hex), in order: the peg's taproot
    #: address (``getdepositaddress``; ``node.workflows.federation``).
    federation_bitcoin_keys: tuple[str, ...] = attrs.field(default=(),
                                                           validator=_federation_keys)
    #: The Bitcoin network the federation's address is written for.
    bitcoin_network: str = attrs.field(default="regtest", validator=attrs.validators.in_(
        ("mainnet", "testnet", "testnet4", "signet", "regtest")))
    #: Blocks after a peg-out's signed form was carried before a producer that still sees it
    #: unmined on Bitcoin proposes a fee bump (BIP125) in its place, and before validators
    #: accept one: a consensus rule, hence here. The default is an hour at 2-second slots,
    #: about six Bitcoin blocks: a peg-out paying the estimate for the next block is rarely
    #: that late, so bumps stay rare (each raises the recipients' fee).
    pegout_bump_after: int = attrs.field(default=1800, validator=_positive)


@attrs.frozen
class RpcConfig:
    """The node's JSON-RPC server (miners and users)."""

    host: str = "127.0.0.1"
    port: int = attrs.field(default=3000, validator=_port)
    #: Larger request bodies are refused (HTTP 413) before they are read.
    max_body_bytes: int = attrs.field(default=1 << 20, validator=_positive)
    #: The reply cache's bound: encoded blocks, least recently used first out.
    cache_bytes: int = attrs.field(default=64 << 20, validator=_non_negative)
    #: How long (seconds) a request waits for a restarting storage, chain or AuxPoW actor
    #: before it is answered HTTP 503 "not ready".
    sibling_wait: float = attrs.field(default=2.0, validator=_non_negative)


@attrs.frozen
class MetricsConfig:
    host: str = "127.0.0.1"
    port: int = attrs.field(default=9001, validator=_port)


@attrs.frozen
class EngineConfig:
    """``kind = "embedded"`` runs the in-process execution engine; ``"http"`` talks to Geth
    or Reth over the Engine API at ``url`` with the JWT secret in ``jwt_secret_path``."""

    kind: str = attrs.field(
        default="embedded", validator=attrs.validators.in_(("embedded", "http"))
    )
    #: The execution client's authenticated Engine API (Geth: ``--authrpc.port``).
    url: str = "http://127.0.0.1:8551"
    jwt_secret_path: str | None = None
    #: Where the node reads the execution client's eth JSON-RPC (receipts, for fees): empty
    #: for the Engine API port itself, with the JWT (Geth serves the eth namespace there);
    #: else its public port (Geth ``--http.port``, ethereumjs ``--rpcPort``: 8545).
    eth_url: str = ""
    #: Seconds one HTTP call to the execution client may take.
    timeout: float = attrs.field(default=8.0, validator=_positive)
    #: Seconds one request to the EngineActor may take in all (a build or an import: several
    #: calls, and re-sending stored blocks to a client that lacks them, which goes on at the
    #: next request when time is up). The ChainActor waits a little longer than this, so a
    #: slow client is reported as an engine error, never as a call timeout. More than
    #: ``timeout``.
    request_timeout: float = attrs.field(default=45.0)
    #: Seconds the node waits at boot for the execution client to answer.
    connect_timeout: float = attrs.field(default=30.0, validator=_positive)
    #: Seconds between asking the execution client to build a payload and fetching it:
    #: Geth answers getPayload with an empty payload until its first full build is done
    #: (100 transfers took ~10 ms here). Not used by the embedded engine.
    build_time: float = attrs.field(default=0.05, validator=_non_negative)
    #: The embedded engine's genesis: a geth-format genesis file (what ``geth init`` takes).
    #: None: the dev chain's, shipped with the node (``node/genesis/dev.json``).
    genesis: str | None = None

    @request_timeout.validator
    def _longer_than_a_call(self, attribute: Any, value: float) -> None:
        if not value > self.timeout:
            raise ValueError(f"request_timeout ({value}) must be more than timeout "
                             f"({self.timeout}): a request makes several calls")


@attrs.frozen
class EthRpcConfig:
    """Ethereum's JSON-RPC, HTTP and WebSocket on one port, served in embedded mode (with
    Geth or Reth, they serve their own)."""

    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = attrs.field(default=8545, validator=_port)
    #: Larger request bodies (or WebSocket messages) are refused (geth: 5 MB).
    max_body_bytes: int = attrs.field(default=5 << 20, validator=_positive)
    #: The most requests in one batch (geth's BatchRequestLimit).
    batch_limit: int = attrs.field(default=1000, validator=_positive)
    #: A filter not polled for this long (seconds) is removed, as geth's.
    filter_timeout: float = attrs.field(default=300.0, validator=_positive)
    #: The most filters and subscriptions at once, in all.
    max_filters: int = attrs.field(default=10_000, validator=_positive)
    #: How long (seconds) a request waits for a restarting engine before "not ready".
    engine_wait: float = attrs.field(default=5.0, validator=_non_negative)
    #: Print the dev accounts (addresses, keys) and the URL when the server is up.
    banner: bool = True


@attrs.frozen
class MinerConfig:
    """The dev CPU merged miner (``--dev-miner``): the DevMinerActor asks the AuxPowActor for
    work and grinds it in a separate OS process."""

    enabled: bool = False
    #: The miner's EVM address for its fee share.
    address: str = attrs.field(
        default="0x000000000000000000000000000000000000dEaD", validator=_evm_address
    )
    #: Seconds between attempts to fetch work.
    interval: float = attrs.field(default=1.0, validator=_positive)
    #: The grinding process's niceness (0-19): at 19 (and, on Linux, SCHED_IDLE with it) it
    #: takes only CPU nothing else wants, so the node's RPC and blocks keep their speed.
    niceness: int = attrs.field(default=19, validator=_niceness)
    #: ``"process"``: grind in a separate OS process (``python -m node.miner``). ``"inline"``:
    #: grind in the actor's own task, a chunk of nonces at a time (for a chain whose bits
    #: need a few hashes; what a simulation uses, since it runs in virtual time).
    grinder: str = attrs.field(default="process",
                               validator=attrs.validators.in_(("process", "inline")))


def _frame_limit(_inst: Any, attribute: Any, value: Any) -> None:
    if not 4096 <= value <= 1 << 20:
        raise ValueError(f"{attribute.name} must be in 4096..1048576 (1 MiB), not {value}")


def _node_key(_inst: Any, attribute: Any, value: Any) -> None:
    if value:
        from .network.identity import NodeKey
        NodeKey.from_hex(value, attribute.name)


@attrs.frozen
class NetworkConfig:
    """Peers over WebSockets (the NetworkActor). Off by default: a single-authority dev
    chain has no peers. When on, it listens on ``ws://host:port/`` (127.0.0.1: this machine
    only, unless configured) and dials each of ``bootnodes`` (``host:port`` or ``ws://``
    URLs), redialling with backoff (2^min(n,12) s, giving up after 12 failures in a row)."""

    enabled: bool = False
    host: str = "127.0.0.1"
    port: int = attrs.field(default=55444, validator=_port)
    bootnodes: tuple[str, ...] = ()
    #: This node's network key (64 hex digits of a secp256k1 secret; its node id is derived
    #: from it and proven in every handshake: node/network/identity.py). Empty: a key made
    #: once and kept in ``<data_dir>/keys/node_key`` (readable by its owner only).
    node_key: str = attrs.field(default="", validator=_node_key, repr=False)
    max_peers: int = attrs.field(default=25, validator=_positive)
    #: How long a peer whose score fell to the threshold stays banned (seconds).
    ban_seconds: float = attrs.field(default=600.0, validator=_positive)
    #: The largest frame sent or accepted; a larger one closes the connection.
    max_frame_bytes: int = attrs.field(default=1 << 20, validator=_frame_limit)
    #: Seconds a request to a peer (blocks_by_range, status, ping) may take.
    request_timeout: float = attrs.field(default=10.0, validator=_positive)
    #: Seconds each side has to send its hello.
    handshake_timeout: float = attrs.field(default=5.0, validator=_positive)
    #: Seconds between pings to each peer; one unanswered within request_timeout ends it.
    ping_interval: float = attrs.field(default=15.0, validator=_positive)
    #: A peer sending more frames a second than this (bursts of twice as many allowed) is
    #: flooding: disconnected and banned.
    max_frames_per_second: float = attrs.field(default=200.0, validator=_positive)
    #: How many gossip message ids are remembered to drop duplicates.
    seen_cache: int = attrs.field(default=16384, validator=_positive)


@attrs.frozen
class BridgeConfig:
    """The peg-in side of the bridge (the BridgeActor). Off by default, like the network: the
    dev chain has no Bitcoin node. When on, it reads Bitcoin over ``bitcoin_url`` (Bitcoin
    Core's JSON-RPC, or btcd's) with ``bitcoin_user``/``bitcoin_password`` or Core's
    ``bitcoin_cookie_file``, scans from ``start_height`` (or the stored rescan height, if
    further) every ``poll_interval`` seconds, and treats a deposit as confirmed once its
    block has ``confirmations`` confirmations (itself included). The dev default is 2;
    production uses 144, as the original (``required_btc_txn_confirmations``)."""

    enabled: bool = False
    bitcoin_url: str = "http://127.0.0.1:18443"
    bitcoin_user: str = ""
    bitcoin_password: str = ""
    bitcoin_cookie_file: str = attrs.field(default="")
    start_height: int = attrs.field(default=0, validator=_non_negative)
    confirmations: int = attrs.field(default=2, validator=_positive)
    poll_interval: float = attrs.field(default=1.0, validator=_positive)
    #: Seconds one Bitcoin RPC call may take.
    timeout: float = attrs.field(default=10.0, validator=_positive)
    #: The most Bitcoin blocks scanned in one poll (a long backlog is taken in steps, so the
    #: actor keeps answering the chain in between).
    max_blocks_per_poll: int = attrs.field(default=200, validator=_positive)
    #: Peg-out (the FederationActor). This node's federation member key: a file holding the
    #: 32-byte Bitcoin secret key in hex, like ``keys/authority.key``; empty means
    #: ``<data_dir>/keys/bitcoin.key``. A node without the file, or whose key is not one of
    #: ``chain.federation_bitcoin_keys``, checks and broadcasts peg-outs but does not sign.
    #: Never generated: a member's key is chosen when the federation is formed.
    bitcoin_key_file: str = ""
    #: Confirmations after which a broadcast peg-out is ``confirmed``.
    pegout_confirmations: int = attrs.field(default=2, validator=_positive)
    #: The highest fee rate (sat/vB) a proposal may pay for the recipients; a proposal
    #: above it is refused. Proposals use ``estimatesmartfee 1`` (fallback 2 sat/vB).
    pegout_max_fee_rate: int = attrs.field(default=500, validator=_positive)

    def bitcoin_auth(self) -> dict[str, str]:
        """The BitcoinClient's credentials: the cookie file if one is set, else user and
        password."""
        if self.bitcoin_cookie_file:
            return {"cookie_file": self.bitcoin_cookie_file}
        return {"user": self.bitcoin_user, "password": self.bitcoin_password}

    @bitcoin_cookie_file.validator
    def _auth(self, attribute: Any, value: str) -> None:
        if value and (self.bitcoin_user or self.bitcoin_password):
            raise ValueError("give bitcoin_user and bitcoin_password, or bitcoin_cookie_file, "
                             "not both")


def _upper(value: Any) -> Any:
    return value.upper() if isinstance(value, str) else value


@attrs.frozen
class NodeConfig:
    data_dir: str = ".alys"
    #: debug, info, warning, error or critical, in any case.
    log_level: str = attrs.field(
        default="INFO",
        converter=_upper,
        validator=attrs.validators.in_(("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")),
    )
    #: "text" (one line per record, the process in brackets) or "json" (one object per line).
    log_format: str = attrs.field(default="text", validator=attrs.validators.in_(("text", "json")))
    chain: ChainConfig = ChainConfig()
    rpc: RpcConfig = RpcConfig()
    metrics: MetricsConfig = MetricsConfig()
    engine: EngineConfig = EngineConfig()
    eth_rpc: EthRpcConfig = EthRpcConfig()
    miner: MinerConfig = MinerConfig()
    network: NetworkConfig = NetworkConfig()
    bridge: BridgeConfig = BridgeConfig()
    #: How the SyncActor downloads, verifies and imports (``node.workflows.sync``).
    sync: SyncConfig = attrs.field(factory=SyncConfig)

    def as_mapping(self) -> dict[str, Any]:
        """The configuration as plain values: what ``${node.x}`` references in a tree read."""
        return {"node": _converter.unstructure(self)}


def _strict(kind: type[Any]) -> Any:
    def hook(value: Any, _type: Any) -> Any:
        ok = isinstance(value, kind) and not (kind is not bool and isinstance(value, bool))
        if kind is float and isinstance(value, int) and not isinstance(value, bool):
            return float(value)
        if not ok:
            raise TypeError(f"expected {kind.__name__}, got {type(value).__name__} {value!r}")
        return value

    return hook


_converter = cattrs.Converter(forbid_extra_keys=True, detailed_validation=True)
for _kind in (int, float, str, bool):
    _converter.register_structure_hook(_kind, _strict(_kind))


def env_layer(environ: Mapping[str, str]) -> dict[str, Any]:
    """The ``ALYS_*`` variables as a nested mapping (``ALYS_CHAIN__SLOT_DURATION_MS`` is
    ``chain.slot_duration_ms``), each value read as ``--set`` reads one."""
    layer: dict[str, Any] = {}
    problems = []
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or name == ENV_PREFIX:
            continue
        dotted = ".".join(part.lower() for part in name[len(ENV_PREFIX):].split("__"))
        try:
            otp.config.set_path(layer, dotted, otp.config.parse_value(raw))
        except ValueError as exc:
            problems.append(f"{name}: {exc}")
    if problems:
        raise ConfigError(problems)
    return layer


def set_layer(items: Sequence[str]) -> dict[str, Any]:
    """``--set key=value`` items as a nested mapping (``otp.config.parse_set``)."""
    try:
        return otp.config.parse_set(items)
    except ValueError as exc:
        raise ConfigError(str(exc).split("; ")) from None


def _leaves(data: Mapping[str, Any], prefix: str = "") -> list[str]:
    """The dotted paths of every value (not table) in a nested mapping."""
    paths = []
    for key, value in data.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, Mapping):
            paths.extend(_leaves(value, path))
        else:
            paths.append(path)
    return paths


_HEADER = re.compile(r"^\s*\[\s*([A-Za-z0-9_.\-]+)\s*\]")
_KEY = re.compile(r"^\s*([A-Za-z0-9_\-]+)\s*=")


def _file_lines(text: str) -> dict[str, int]:
    """The line of each ``section.key = value`` of a configuration file (tables and plain
    keys; a light scan, enough to point at a bad value)."""
    lines: dict[str, int] = {}
    section = ""
    for number, raw in enumerate(text.splitlines(), start=1):
        header = _HEADER.match(raw)
        if header:
            section = header.group(1)
            continue
        key = _KEY.match(raw)
        if key:
            lines.setdefault(f"{section}.{key.group(1)}" if section else key.group(1), number)
    return lines


def load_config(
    file: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    sets: Sequence[str] = (),
) -> NodeConfig:
    """Build the configuration from its layers (see the module docs). A problem names where
    its value came from: the file and line, the ``ALYS_*`` variable, or the ``--set``."""
    layer: dict[str, Any] = {}
    origins: dict[str, str] = {}
    if file is None and Path("alys.toml").is_file():
        file = "alys.toml"
    if file is not None:
        try:
            text = Path(file).read_text(encoding="utf-8")
            layer = tomllib.loads(text)
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError([f"{file}: cannot read: {exc}"]) from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError([f"{file}: not valid TOML: {exc}"]) from None
        lines = _file_lines(text)
        for path in _leaves(layer):
            line = lines.get(path)
            origins[path] = f"{file}:{line}" if line else str(file)
    env = os.environ if environ is None else environ
    env_values = env_layer(env)
    for path in _leaves(env_values):
        origins[path] = ENV_PREFIX + "__".join(part.upper() for part in path.split("."))
    set_values = set_layer(sets)
    for item in sets:
        key = item.partition("=")[0].strip()
        for path in _leaves(set_values):
            if path == key or path.startswith(key + "."):
                origins[path] = f"--set {item}"
    layer = otp.config.merge(otp.config.merge(layer, env_values), set_values)
    try:
        return structure(layer)
    except ConfigError as exc:
        raise ConfigError([_with_origin(problem, origins) for problem in exc.problems]) from None


def _with_origin(problem: str, origins: Mapping[str, str]) -> str:
    """``problem`` (``config.a.b: message``) with where ``a.b`` (or, for unknown keys, each
    of them) was set, when it was set at all (defaults have no origin)."""
    where, _, message = problem.partition(": ")
    path = where.removeprefix("config.").removeprefix("config")
    found = []
    if message.startswith("unknown key(s): "):
        for key in message.removeprefix("unknown key(s): ").split(", "):
            full = f"{path}.{key}" if path else key
            found += [o for p, o in origins.items() if p == full or p.startswith(full + ".")]
    elif path in origins:
        found.append(origins[path])
    else:
        # An attrs validator reports at the section ("port must be ...", "'kind' must be
        # in ..."): its first word names the key.
        first = message.split(" ", 1)[0].strip("'")
        full = f"{path}.{first}" if path else first
        if full in origins:
            found.append(origins[full])
    if not found:
        return problem
    return f"{problem} (from {', '.join(dict.fromkeys(found))})"


def structure(data: Mapping[str, Any]) -> NodeConfig:
    """A :class:`NodeConfig` from a mapping; every problem in one :class:`ConfigError`."""
    config: NodeConfig = structure_section(data, NodeConfig, "config")
    return config


def _describe(exc: BaseException, _type: Any) -> str:
    if isinstance(exc, cattrs.ForbiddenExtraKeysError):
        return f"unknown key(s): {', '.join(sorted(exc.extra_fields))}"
    if isinstance(exc, KeyError):
        return "required key missing"
    if exc.args and isinstance(exc.args[0], str):
        return exc.args[0]
    return str(exc)


def structure_section(data: Mapping[str, Any], kind: type[Any], name: str) -> Any:
    """One section (``chain``, ``rpc``...) from a mapping, as actors receive theirs through
    ``${node.<section>}`` references; problems raise :class:`ConfigError`."""
    if isinstance(data, kind):
        return data
    try:
        return _converter.structure(dict(data), kind)
    except Exception as exc:
        if isinstance(exc, cattrs.BaseValidationError):
            messages = []
            for line in cattrs.transform_error(exc, path=name, format_exception=_describe):
                message, _, where = line.rpartition(" @ ")
                messages.append(f"{where}: {message}" if message else line)
        else:
            messages = [f"{name}: {exc}"]
        raise ConfigError(messages) from None
