"""Configuration: YAML validated once at load into typed models.

Unknown keys and wrong types fail with the file, the key path and the reason
(``ConfigError``); ``trafficguard check-config`` prints the same messages. Values the hot
path needs are derived here once (timeouts in ns), so no stage reads the raw mapping.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from trafficguard.errors import ConfigError

NS_PER_S = 1_000_000_000


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CaptureConfig(_Section):
    batch_frames: int = Field(
        512, ge=1, le=65536, description="frames handed to the decoder at once"
    )
    read_chunk_bytes: int = Field(1 << 20, ge=4096, description="file read size")


class FragmentConfig(_Section):
    max_datagrams: int = Field(4096, ge=1, description="incomplete datagrams held at once")
    max_datagram_bytes: int = Field(65535 + 8, ge=576, description="largest datagram reassembled")
    max_total_bytes: int = Field(16 << 20, ge=65536, description="bytes held for reassembly")
    timeout_s: float = Field(
        30.0, gt=0, description="packet-time timeout of an incomplete datagram"
    )


class DecodeConfig(_Section):
    max_tunnel_depth: int = Field(4, ge=0, le=16, description="nested tunnels stripped at most")
    vxlan_ports: tuple[int, ...] = (4789, 8472)
    geneve_ports: tuple[int, ...] = (6081,)
    gtpu_ports: tuple[int, ...] = (2152,)
    fragments: FragmentConfig = FragmentConfig()


class IdleTimeouts(_Section):
    tcp: float = Field(300.0, gt=0, description="established TCP flow with no packet")
    tcp_closing: float = Field(10.0, gt=0, description="TCP flow after FIN from both sides or RST")
    tcp_embryonic: float = Field(
        30.0, gt=0, description="TCP flow that never completed a handshake"
    )
    udp: float = Field(60.0, gt=0)
    icmp: float = Field(30.0, gt=0)
    other: float = Field(60.0, gt=0)


class FlowConfig(_Section):
    max_flows: int = Field(
        1_000_000,
        ge=16,
        description="flow-table capacity; the oldest idle flow is evicted beyond it",
    )
    idle_timeout_s: IdleTimeouts = IdleTimeouts()
    active_timeout_s: float = Field(
        1800.0, gt=0, description="long flows emit an interim record this often"
    )
    expiry_scan_per_tick: int = Field(1000, ge=1, description="flows examined per expiry tick")
    tick_interval_s: float = Field(
        1.0, gt=0, description="packet-time interval between expiry ticks"
    )
    classify_packets: int = Field(
        4, ge=1, le=32, description="payload packets per flow inspected by signatures"
    )


class SqliteConfig(_Section):
    enabled: bool = True
    path: Path = Path("var/trafficguard.db")
    batch_records: int = Field(2000, ge=1)
    synchronous: Literal["off", "normal", "full"] = "normal"


class JsonlConfig(_Section):
    enabled: bool = False
    path: Path = Path("var/flows.jsonl")


class StoreConfig(_Section):
    flush_interval_s: float = Field(5.0, gt=0, description="wall-clock interval between commits")
    sqlite: SqliteConfig = SqliteConfig()
    jsonl: JsonlConfig = JsonlConfig()


class MetricsConfig(_Section):
    enabled: bool = True
    listen: str = "127.0.0.1:9108"

    @field_validator("listen")
    @classmethod
    def _host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT with a port 0-65535")
        if host.startswith("[") and host.endswith("]"):
            host = host[1:-1]
        if host not in ("", "localhost"):
            ipaddress.ip_address(host)
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]") or "0.0.0.0", int(port)


class LoggingConfig(_Section):
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class VoipConfig(_Section):
    """SIP dialogs, call/registration records, RTP/RTCP quality and KPIs (issue: VoIP)."""

    enabled: bool = True


class DetectConfig(_Section):
    """Detectors and the alert model (issues: detection engine, broadband detectors)."""

    enabled: bool = True


class PrivacyConfig(_Section):
    """Keys, pseudonyms, retention and subject rights (issue: privacy tiers)."""

    keys_dir: Path = Field(
        Path("var/keys"),
        description="pseudonym and audit keys (0600 files); created on first start if missing",
    )
    create_keys: bool = Field(
        True, description="create keys in keys_dir when none exist (else refuse to start)"
    )


class EscalationConfig(_Section):
    """Policy, grants, the content gate, evidence and the audit log (issue: privacy tiers)."""


class LiveConfig(_Section):
    """Live capture and the daemon (issue: operations)."""


class ExportConfig(_Section):
    """IPFIX (and other) flow export (issue: operations)."""


class Config(_Section):
    """The whole ``trafficguard.yaml``."""

    capture: CaptureConfig = CaptureConfig()
    decode: DecodeConfig = DecodeConfig()
    flow: FlowConfig = FlowConfig()
    store: StoreConfig = StoreConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    voip: VoipConfig = VoipConfig()
    detect: DetectConfig = DetectConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    escalation: EscalationConfig = EscalationConfig()
    live: LiveConfig = LiveConfig()
    export: ExportConfig = ExportConfig()
    home_networks: tuple[str, ...] = ()

    @field_validator("home_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value


def _path_of(loc: tuple[int | str, ...]) -> str:
    parts = []
    for item in loc:
        parts.append(f"[{item}]" if isinstance(item, int) else f".{item}")
    return "$" + "".join(parts)


def format_validation_error(err: ValidationError) -> list[str]:
    """One line per problem: ``at $.flow.idle_timeout_s.tcp: Input should be greater than 0``."""
    lines = []
    for e in err.errors():
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        lines.append(f"at {_path_of(tuple(e['loc']))}: {msg}")
    return lines


def parse_config(data: Any, source: str = "<config>") -> Config:
    """Validate an already-parsed mapping; raise ConfigError naming every problem."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(source, ["at $: the top level must be a mapping of sections"])
    try:
        return Config.model_validate(data)
    except ValidationError as err:
        raise ConfigError(source, format_validation_error(err)) from None


def load_config(path: str | Path | None) -> Config:
    """Load and validate a YAML file; ``None`` gives the documented defaults."""
    if path is None:
        return Config()
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(str(p), [f"cannot read: {err.strerror or err}"]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(err, "problem", None) or str(err)
        raise ConfigError(str(p), [f"invalid YAML: {where}{problem}"]) from None
    return parse_config(data, str(p))
