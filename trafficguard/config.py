"""Configuration: YAML validated once at load into typed models.

Unknown keys and wrong types fail with the file, the key path and the reason
(``ConfigError``); ``trafficguard check-config`` prints the same messages. Values the hot
path needs are derived here once (timeouts in ns), so no stage reads the raw mapping.

No ``from __future__ import annotations`` here: pydantic would turn each of the ~270 field
annotations back into a type through a ``typing.ForwardRef`` (one ``compile()`` each) when
the models are built at import, which every command pays for.
"""

import ipaddress
from pathlib import Path
from typing import Any, Literal

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
    fast_path: Literal["auto", "on", "off"] = Field(
        "auto",
        description="compiled decoder + flow table (trafficguard.fast): auto = when built",
    )


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
    dns: float = Field(
        10.0,
        gt=0,
        description="UDP flow with port 53 on either side (one DNS transaction; "
        "Zeek's dns_session_timeout)",
    )
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
    expiry_scan_per_tick: int = Field(
        1000,
        ge=1,
        description="flows examined per expiry tick on top of the flows started since the "
        "previous tick (so expiry keeps up with any arrival rate)",
    )
    tick_interval_s: float = Field(
        1.0, gt=0, description="packet-time interval between expiry ticks"
    )
    classify_packets: int = Field(
        4, ge=1, le=32, description="payload packets per flow inspected by signatures"
    )


class SqliteConfig(_Section):
    enabled: bool = True
    path: Path = Path("var/trafficguard.db")
    batch_records: int = Field(
        8192,
        ge=1,
        description="rows buffered before a commit by themselves; larger transactions cost "
        "less per row (B-tree pages are written once per commit): 8192 vs 2000 rows is "
        "~25% cheaper, for a few MB of buffered rows",
    )
    synchronous: Literal["off", "normal", "full"] = "normal"
    writer: Literal["process", "inline"] = Field(
        "process",
        description="where commits run: a store-writer process on another core, or inline "
        "in the packet process",
    )


class JsonlConfig(_Section):
    enabled: bool = False
    path: Path = Path("var/flows.jsonl")


class StoreConfig(_Section):
    flush_interval_s: float = Field(5.0, gt=0, description="wall-clock interval between commits")
    record_process: bool = Field(
        True,
        description="replay: run the detectors, the privacy edge and every sink in a second "
        "process fed finished records (a second core); not with escalation or --purge",
    )
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


class VoipTimeoutsConfig(_Section):
    """Packet-time limits of the SIP call tracker (same keys as voip.dialogs.CallTimeouts)."""

    invite_s: float = Field(32.0, gt=0, description="no response to an INVITE (Timer B)")
    ringing_s: float = Field(180.0, gt=0, description="provisional but no final (Timer C)")
    challenge_s: float = Field(
        64.0, gt=0, description="wait for the request with credentials after 401/407"
    )
    max_call_s: float = Field(14400.0, gt=0, description="answered call without BYE")
    linger_s: float = Field(32.0, ge=0, description="ended call kept to absorb retransmissions")
    register_s: float = Field(32.0, gt=0, description="no final response to a REGISTER")


class NumberPlanConfig(_Section):
    """Prefix table that classes numbers before they are pseudonymized (voip.numbers)."""

    emergency: tuple[str, ...] = ("112", "911", "999", "110", "000")
    premium_prefixes: tuple[str, ...] = ("900", "0900", "1900", "+1900")
    international_prefix: str = "00"
    country_code: str = Field("", pattern=r"^[0-9]{0,3}$", description="'' = none")
    trunk_prefix: str = Field("0", pattern=r"^[0-9]{0,2}$")
    short_code_max_digits: int = Field(6, ge=0, le=15)


class VoipConfig(_Section):
    """SIP dialogs, call/registration records, RTP/RTCP quality and KPIs (issue: VoIP)."""

    enabled: bool = True
    sip_ports: tuple[int, ...] = Field(
        (5060,), description="UDP/TCP/SCTP ports analysed as SIP (besides flows labelled sip)"
    )
    sip_tls_ports: tuple[int, ...] = Field(
        (5061,), description="SIP over TLS: counted as flows, never decrypted"
    )
    max_calls: int = Field(100_000, ge=1, description="calls tracked at once")
    max_registrations: int = Field(100_000, ge=1, description="registrations tracked at once")
    timeouts: VoipTimeoutsConfig = VoipTimeoutsConfig()
    number_plan: NumberPlanConfig = NumberPlanConfig()
    rtp_heuristic: bool = Field(
        True, description="meter RTP on UDP flows no SDP announced (first packets decide)"
    )
    max_rtp_streams: int = Field(16, ge=1, le=1024, description="SSRCs metered per flow direction")
    kpi_interval_s: float = Field(60.0, gt=0, description="length of a voip_interval record")
    kpi_grace_s: float = Field(
        90.0, ge=0, description="packet time an interval stays open for late records"
    )


class DnsAnalyzerConfig(_Section):
    """DNS metadata analyzer: per client and registered domain features, no names."""

    enabled: bool = True
    interval_s: float = Field(
        60.0, gt=0, le=3600, description="packet-time length of one dns_summary interval"
    )
    max_pairs: int = Field(
        100_000, ge=16, description="client/domain pairs held per interval (beyond: counted)"
    )
    max_distinct_subdomains: int = Field(
        4096, ge=16, description="distinct names counted exactly per pair, then capped"
    )


class AnalyzersConfig(_Section):
    """Metadata analyzers after the flow table (issue: broadband detectors, DNS)."""

    dns: DnsAnalyzerConfig = DnsAnalyzerConfig()


class AlertsConfig(_Section):
    """How reports of one activity become one alert (packet time)."""

    update_interval_s: float = Field(
        60.0, gt=0, description="an open alert emits an update record at most this often"
    )
    quiet_period_s: float = Field(
        120.0, gt=0, description="an alert resolves after this long without a new report"
    )
    max_active: int = Field(100_000, ge=1, description="open alerts held at once")


class FloodConfig(_Section):
    """Volumetric flood against one victim (packets per second over a window)."""

    enabled: bool = True
    window_s: float = Field(10.0, gt=0, description="counting window (packet time)")
    min_packets: int = Field(2000, ge=1, description="packets to the victim within the window")
    min_rate_pps: float = Field(500.0, gt=0, description="packets per second over the activity")
    max_response_ratio: float = Field(
        1.0, ge=0, description="victim's answer packets / attack packets at most (UDP: 0.2)"
    )


class SynFloodConfig(_Section):
    """TCP SYN flood: half-open handshakes concentrated on one victim."""

    enabled: bool = True
    window_s: float = Field(10.0, gt=0)
    min_half_open: int = Field(1000, ge=1, description="failed handshakes to one victim")
    min_rate_pps: float = Field(200.0, gt=0, description="failed handshakes per second")
    max_ports: int = Field(
        8, ge=1, description="distinct victim ports at most (more ports = a port scan)"
    )


class AmplificationConfig(_Section):
    """Reflection/amplification: many reflectors' service responses to one victim."""

    enabled: bool = True
    window_s: float = Field(60.0, gt=0)
    min_reflectors: int = Field(20, ge=1, description="distinct reflectors to one victim")
    min_response_bytes: int = Field(100_000, ge=1, description="response bytes to the victim")
    min_ratio: float = Field(
        5.0, gt=0, description="response/request bytes at least (request unseen = infinite)"
    )


class PortScanConfig(_Section):
    """Port scan: threshold random walk (Jung et al. 2004) over first contacts."""

    enabled: bool = True
    window_s: float = Field(600.0, gt=0, description="a source's walk restarts after this idle")
    theta0: float = Field(0.8, gt=0, lt=1, description="P(success) of a benign first contact")
    theta1: float = Field(0.2, gt=0, lt=1, description="P(success) of a scanner's first contact")
    false_positive_rate: float = Field(0.01, gt=0, lt=1, description="alpha of the walk")
    detection_rate: float = Field(0.99, gt=0, lt=1, description="beta of the walk")
    min_ports: int = Field(5, ge=1, description="distinct ports probed before a port scan alert")
    min_stealth_ports: int = Field(
        3, ge=1, description="ports probed with NULL/FIN/Xmas packets (alone enough)"
    )


class HostSweepConfig(_Section):
    """Host sweep: one source probing many hosts on one port (or ICMP echo)."""

    enabled: bool = True
    window_s: float = Field(300.0, gt=0)
    min_hosts: int = Field(32, ge=1, description="distinct hosts probed on one port")
    min_failure_ratio: float = Field(
        0.6, ge=0, le=1, description="share of probes without an answer"
    )


class SmtpSpamConfig(_Section):
    """Spam bot: a subscriber host opening SMTP sessions to many mail servers."""

    enabled: bool = True
    window_s: float = Field(600.0, gt=0)
    ports: tuple[int, ...] = (25,)
    min_servers: int = Field(20, ge=1, description="distinct SMTP servers in the window")
    subscribers_only: bool = Field(
        True, description="only sources in home_networks (all sources if none configured)"
    )


class BeaconingConfig(_Section):
    """C2 beaconing: regular connections to one destination, scored as RITA does."""

    enabled: bool = True
    min_connections: int = Field(20, ge=3, description="connections before a pair is scored")
    max_samples: int = Field(64, ge=8, description="latest connections kept per pair")
    min_score: float = Field(0.85, gt=0, le=1, description="RITA beacon score to alert")
    min_duration_s: float = Field(300.0, ge=0, description="span of the connections at least")
    ignore_ports: tuple[int, ...] = Field(
        (53, 123, 5353, 5060, 5061), description="infrastructure ports never scored"
    )
    max_pairs: int = Field(50_000, ge=16, description="source/destination pairs followed")


class BlocklistConfig(_Section):
    """Blocklist matches: flows to or from listed addresses/prefixes (one per line)."""

    enabled: bool = True
    files: tuple[Path, ...] = Field((), description="text files of addresses/prefixes; reloadable")


class SipScanConfig(_Section):
    """SIP scanning: one source probing many extensions or many SIP hosts."""

    enabled: bool = True
    window_s: float = Field(300.0, gt=0)
    min_extensions: int = Field(20, ge=1, description="distinct extensions/accounts probed")
    min_hosts: int = Field(20, ge=1, description="distinct SIP hosts probed")
    min_failure_ratio: float = Field(0.5, ge=0, le=1)


class SipBruteforceConfig(_Section):
    """REGISTER/INVITE credential brute force: failed authentications per source/account."""

    enabled: bool = True
    window_s: float = Field(300.0, gt=0)
    min_failures: int = Field(20, ge=1, description="failed authentications in the window")
    min_failure_ratio: float = Field(0.8, ge=0, le=1)


class InviteFloodConfig(_Section):
    """INVITE flood: call attempts per source per second."""

    enabled: bool = True
    window_s: float = Field(10.0, gt=0)
    min_invites: int = Field(100, ge=1, description="INVITEs from one source in the window")


class TollFraudConfig(_Section):
    """Toll fraud: an account's international/premium calls above its baseline."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0, description="counting window")
    classes: tuple[str, ...] = ("international", "premium")
    min_calls: int = Field(10, ge=1, description="calls of those classes in the window")
    baseline_factor: float = Field(
        5.0, gt=1, description="and more than this times the account's baseline per window"
    )
    baseline_alpha: float = Field(0.2, gt=0, le=1, description="EWMA weight of a new window")
    max_concurrent: int = Field(
        4, ge=1, description="simultaneous answered calls of those classes (alone enough)"
    )


class WangiriConfig(_Section):
    """Wangiri: one-ring calls from one origin to many subscribers."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0)
    max_ring_s: float = Field(5.0, gt=0, description="cancelled after at most this long")
    min_callees: int = Field(20, ge=1, description="distinct subscribers called")


class RobocallConfig(_Section):
    """Robocall/spam: one source, many distinct callees, short calls, low answer rate."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0)
    min_callees: int = Field(50, ge=1, description="distinct callees in the window")
    max_asr: float = Field(0.3, ge=0, le=1, description="answer-seizure ratio at most, or ...")
    max_mean_duration_s: float = Field(
        20.0, gt=0, description="... mean answered duration at most"
    )


class LoginBruteforceConfig(_Section):
    """Login guessing / credential stuffing on SSH, FTP, Telnet, RDP, mail and SIP-TCP."""

    enabled: bool = True
    window_s: float = Field(900.0, gt=0, description="counting window (packet time)")
    ports: tuple[int, ...] = Field(
        (21, 22, 23, 110, 143, 465, 587, 993, 995, 3389, 5060),
        description="TCP service ports watched (login services)",
    )
    min_sessions: int = Field(
        20, ge=2, description="short sessions from one source to one server and service"
    )
    min_servers: int = Field(
        10, ge=2, description="servers of one service tried by one source (credential stuffing)"
    )
    max_session_s: float = Field(
        30.0, gt=0, description="a login attempt lasts at most this long"
    )
    max_server_bytes: int = Field(
        20_000, ge=1, description="server-to-client payload bytes of an attempt at most"
    )
    data_min_client_bytes: int = Field(
        1_000, ge=1, description="a session whose client sent at least this many payload bytes"
    )
    data_min_ratio: float = Field(
        3.0, gt=0, description="... and this many times the server's carried data (not a login)"
    )
    success_min_s: float = Field(
        60.0, gt=0, description="a later session this long after the attempts = success signal"
    )
    success_min_bytes: int = Field(
        100_000, ge=1, description="... or with this many payload bytes"
    )
    success_min_attempts: int = Field(
        5, ge=1, description="attempts that must precede a success signal"
    )


class DnsTunnelConfig(_Section):
    """DNS tunnelling and exfiltration, judged from dns_summary records."""

    enabled: bool = True
    min_queries: int = Field(20, ge=1, description="queries of one client to one domain")
    min_distinct_subdomains: int = Field(20, ge=1, description="distinct names below it")
    min_subdomain_len: float = Field(
        20.0, gt=0, description="mean characters below the registered domain per query"
    )
    min_char_entropy: float = Field(
        4.3, gt=0, description="pooled character entropy of the names (bits; hex is 4.0)"
    )
    exfil_min_chars: int = Field(
        4096, ge=1, description="distinct name characters per interval: exfiltration volume"
    )


class OpenResolverConfig(_Section):
    """A subscriber host answering DNS queries from external sources."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0)
    min_external_clients: int = Field(5, ge=1, description="distinct external clients answered")


class OpenProxyConfig(_Section):
    """A subscriber host relaying for many external peers on proxy ports."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0)
    ports: tuple[int, ...] = (1080, 3128, 8080, 8118)
    min_peers: int = Field(10, ge=1, description="distinct external peers with sizable sessions")
    min_session_bytes: int = Field(
        10_000, ge=1, description="wire bytes of a session (both ways) to count its peer"
    )


class ResidentialSmtpConfig(_Section):
    """Outbound SMTP from residential ranges (business ranges may run mail servers)."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0)
    ports: tuple[int, ...] = (25,)
    residential_networks: tuple[str, ...] = Field(
        (), description="residential prefixes; empty = every home network not listed below"
    )
    business_networks: tuple[str, ...] = Field(
        (), description="business prefixes (never alerted on)"
    )
    min_sessions: int = Field(5, ge=1, description="outbound SMTP sessions in the window")
    min_servers: int = Field(3, ge=1, description="distinct external mail servers in the window")

    @field_validator("residential_networks", "business_networks")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value


class ServerHostingConfig(_Section):
    """A subscriber host serving many external peers on one port."""

    enabled: bool = True
    window_s: float = Field(3600.0, gt=0)
    min_peers: int = Field(20, ge=1, description="distinct external peers answered on one port")
    ignore_ports: tuple[int, ...] = Field(
        (53, 1080, 3128, 8080, 8118), description="ports judged by the resolver/proxy rules"
    )


class VolumeAnomalyConfig(_Section):
    """Sudden traffic volume of a subscriber against its own EWMA baseline."""

    enabled: bool = True
    bucket_s: float = Field(300.0, gt=0, description="packet-time bucket the volume is summed in")
    alpha: float = Field(0.1, gt=0, le=1, description="EWMA weight of a new bucket")
    warmup_buckets: int = Field(12, ge=1, description="buckets of baseline before judging")
    min_bytes: int = Field(500_000_000, ge=1, description="bytes in the bucket at least")
    min_ratio: float = Field(10.0, gt=1, description="and this many times the baseline mean")
    min_zscore: float = Field(6.0, gt=0, description="and this many standard deviations above")


class BroadbandConfig(_Section):
    """Broadband abuse and acceptable-use detectors (issue: broadband detectors)."""

    login_bruteforce: LoginBruteforceConfig = LoginBruteforceConfig()
    dns_tunnel: DnsTunnelConfig = DnsTunnelConfig()
    open_resolver: OpenResolverConfig = OpenResolverConfig()
    open_proxy: OpenProxyConfig = OpenProxyConfig()
    residential_smtp: ResidentialSmtpConfig = ResidentialSmtpConfig()
    server_hosting: ServerHostingConfig = ServerHostingConfig()
    volume_anomaly: VolumeAnomalyConfig = VolumeAnomalyConfig()


class DetectConfig(_Section):
    """Detectors and the alert model (issues: detection engine, broadband detectors)."""

    enabled: bool = True
    allowlist: tuple[str, ...] = Field(
        (), description="sources (addresses/prefixes) never alerted on"
    )
    max_keys: int = Field(
        100_000, ge=16, description="per-detector bound on keys held (LRU, evictions counted)"
    )
    alerts: AlertsConfig = AlertsConfig()
    syn_flood: SynFloodConfig = SynFloodConfig()
    udp_flood: FloodConfig = FloodConfig(max_response_ratio=0.2)
    icmp_flood: FloodConfig = FloodConfig()
    amplification: AmplificationConfig = AmplificationConfig()
    port_scan: PortScanConfig = PortScanConfig()
    host_sweep: HostSweepConfig = HostSweepConfig()
    smtp_spam: SmtpSpamConfig = SmtpSpamConfig()
    beaconing: BeaconingConfig = BeaconingConfig()
    blocklist: BlocklistConfig = BlocklistConfig()
    sip_scan: SipScanConfig = SipScanConfig()
    sip_bruteforce: SipBruteforceConfig = SipBruteforceConfig()
    invite_flood: InviteFloodConfig = InviteFloodConfig()
    toll_fraud: TollFraudConfig = TollFraudConfig()
    wangiri: WangiriConfig = WangiriConfig()
    robocall: RobocallConfig = RobocallConfig()
    broadband: BroadbandConfig = BroadbandConfig()

    @field_validator("allowlist")
    @classmethod
    def _prefixes(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value


class RetentionConfig(_Section):
    """How long each record type is kept, in seconds ("no longer than necessary")."""

    flows_s: int = Field(30 * 86400, ge=0, description="flow records")
    calls_s: int = Field(90 * 86400, ge=0, description="call and registration records")
    rtp_s: int = Field(30 * 86400, ge=0, description="RTP stream quality records")
    alerts_s: int = Field(180 * 86400, ge=0, description="alerts")
    evidence_after_expiry_s: int = Field(
        30 * 86400, ge=0, description="evidence, counted from its grant's expiry"
    )
    logs_s: int = Field(30 * 86400, ge=0, description="operational logs (rotated by journald)")
    audit_log_kept: bool = Field(True, description="the audit log is never purged")


class PrivacyConfig(_Section):
    """Keys, pseudonyms, retention and subject rights (issue: privacy tiers)."""

    keys_dir: Path = Field(
        Path("var/keys"),
        description="pseudonym and audit keys (0600 files); created on first start if missing",
    )
    create_keys: bool = Field(
        True, description="create keys in keys_dir when none exist (else refuse to start)"
    )
    retention: RetentionConfig = RetentionConfig()
    purge_interval_s: float = Field(
        3600.0,
        ge=0,
        description="interval of the store purge while 'trafficguard run' runs (wall clock; "
        "also at start); 0 = only 'trafficguard retention run'. 'replay --purge' purges once "
        "at the end, as of the newest packet",
    )


class EscalationConfig(_Section):
    """Policy, grants, the content gate, evidence and the audit log (issue: privacy tiers).

    Paths are relative to the working directory. The gate runs only when ``enabled``;
    it then needs ``analyst_public_key`` (evidence is sealed to it; the sensor never
    holds the private half).
    """

    enabled: bool = Field(
        False, description="run the content gate (policy, grants, auto-escalation, evidence)"
    )
    policy: Path = Field(Path("config/policy.yaml"), description="escalation policy file")
    grants_dir: Path = Field(Path("var/grants"), description="signed grants and revoked.yaml")
    audit_log: Path = Field(Path("var/audit.jsonl"), description="hash-chained audit log")
    evidence_dir: Path = Field(Path("var/evidence"), description="sealed per-grant evidence")
    analyst_public_key: Path | None = Field(
        None, description="X25519 public key (PEM) evidence is sealed to"
    )
    reload_interval_s: float = Field(
        60.0, gt=0, description="packet-time interval at which the grants dir is re-read"
    )
    checkpoint_every: int = Field(100, ge=1, description="signed audit checkpoint every N entries")
    checkpoint_interval_s: float = Field(
        300.0, gt=0, description="... or every this many seconds of packet time"
    )


class LiveConfig(_Section):
    """Live capture and the daemon (issue: operations): ``trafficguard run``."""

    interfaces: tuple[str, ...] = Field((), description="interfaces to capture on (SPAN/TAP)")
    bpf_filter: str = Field("", description="pcap-filter(7) expression; '' = every packet")
    workers: int = Field(1, ge=1, le=64, description="capture processes in one fanout group")
    backend: Literal["auto", "ring", "socket"] = Field(
        "auto", description="ring = TPACKET_V3 mmap; socket = recv loop; auto = ring if possible"
    )
    block_size: int = Field(1 << 20, ge=4096, le=1 << 28, description="ring block bytes")
    block_count: int = Field(64, ge=2, le=65536, description="ring blocks per socket")
    frame_size: int = Field(2048, ge=128, le=1 << 20, description="ring frame slot hint")
    snaplen: int = Field(65535, ge=64, le=262144, description="bytes kept of each frame")
    block_timeout_ms: int = Field(100, ge=1, le=60000, description="a partly full block is retired")
    poll_timeout_ms: int = Field(200, ge=1, le=10000, description="idle wake-up of the loop")
    fanout_group: int = Field(4242, ge=0, le=65535, description="PACKET_FANOUT id (+ iface index)")
    promiscuous: bool = Field(True, description="put the interfaces in promiscuous mode")
    socket_rcvbuf_bytes: int = Field(32 << 20, ge=65536, description="socket backend buffer")
    stats_interval_s: float = Field(1.0, gt=0, le=60, description="workers report counters")
    drain_timeout_s: float = Field(20.0, gt=0, le=600, description="SIGTERM drain bound")

    @field_validator("block_size")
    @classmethod
    def _page_multiple(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError("must be a power of two (and a multiple of the page size)")
        return value

    @field_validator("frame_size")
    @classmethod
    def _aligned(cls, value: int) -> int:
        if value % 16:
            raise ValueError("must be a multiple of 16 (TPACKET_ALIGNMENT)")
        return value


DOCUMENTATION_PEN = 32473  # RFC 5612: the IANA enterprise number reserved for documentation


class IpfixConfig(_Section):
    """RFC 7011 export of flow and RTP-stream records over UDP (docs/records.md, ## IPFIX)."""

    enabled: bool = False
    collector: str = Field(
        "127.0.0.1:4739", description="HOST:PORT of the collector (host name, IPv4 or [IPv6])"
    )
    observation_domain_id: int = Field(1, ge=0, le=0xFFFFFFFF)
    enterprise_number: int = Field(
        DOCUMENTATION_PEN,
        ge=1,
        le=0xFFFFFFFF,
        description="PEN of trafficguard's own information elements",
    )
    template_refresh_s: float = Field(
        60.0, gt=0, description="templates are resent at least this often (wall clock)"
    )
    template_refresh_messages: int = Field(
        100, ge=1, description="... and at least every this many messages"
    )
    mtu: int = Field(
        1500, ge=576, le=65535, description="path MTU: IP + UDP + IPFIX message fit in it"
    )
    rtp_streams: bool = Field(True, description="also export rtp_stream records")

    @field_validator("collector")
    @classmethod
    def _collector(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
            raise ValueError("must be HOST:PORT with a port 1-65535")
        return value

    @property
    def host_port(self) -> tuple[str, int]:
        host, _, port = self.collector.rpartition(":")
        return host.strip("[]"), int(port)

    def with_collector(self, collector: str, source: str = "--ipfix") -> "IpfixConfig":
        """This section enabled and pointed at ``collector`` (the ``--ipfix`` option)."""
        try:
            return IpfixConfig.model_validate(
                {**self.model_dump(), "collector": collector, "enabled": True}
            )
        except ValidationError as err:
            raise ConfigError(source, format_validation_error(err)) from None


class ExportConfig(_Section):
    """IPFIX (and other) flow export (issue: operations)."""

    ipfix: IpfixConfig = IpfixConfig()


class Config(_Section):
    """The whole ``trafficguard.yaml``."""

    capture: CaptureConfig = CaptureConfig()
    decode: DecodeConfig = DecodeConfig()
    flow: FlowConfig = FlowConfig()
    store: StoreConfig = StoreConfig()
    metrics: MetricsConfig = MetricsConfig()
    logging: LoggingConfig = LoggingConfig()
    voip: VoipConfig = VoipConfig()
    analyzers: AnalyzersConfig = AnalyzersConfig()
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
    import yaml  # noqa: PLC0415 (only when there is a file to read)

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
