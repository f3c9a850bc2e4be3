"""Which detectors run: built from ``DetectConfig`` in a fixed order (one place).

Adding a detector: write it on :class:`trafficguard.detect.base.Detector`, give it a
config section in ``DetectConfig``, and append it here behind its ``enabled`` flag.
"""

from __future__ import annotations

from trafficguard.config import DetectConfig
from trafficguard.decode.packet import PROTO_UDP
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.detect.beacon import BeaconDetector
from trafficguard.detect.blocklist import BlocklistDetector
from trafficguard.detect.broadband import broadband_detectors
from trafficguard.detect.floods import (
    AmplificationDetector,
    PacketFloodDetector,
    SynFloodDetector,
    icmp_protos,
)
from trafficguard.detect.fraud import RobocallDetector, TollFraudDetector, WangiriDetector
from trafficguard.detect.scans import HostSweepDetector, PortScanDetector
from trafficguard.detect.sip import InviteFloodDetector, SipBruteforceDetector, SipScanDetector
from trafficguard.detect.spam import SmtpSpamDetector


def build_detectors(cfg: DetectConfig, env: DetectorEnv) -> list[Detector]:
    """The enabled detectors, in a fixed order."""
    out: list[Detector] = []
    if cfg.syn_flood.enabled:
        out.append(SynFloodDetector(env, cfg.syn_flood))
    if cfg.udp_flood.enabled:
        out.append(PacketFloodDetector(env, cfg.udp_flood, "udp_flood", (PROTO_UDP,)))
    if cfg.icmp_flood.enabled:
        out.append(PacketFloodDetector(env, cfg.icmp_flood, "icmp_flood", icmp_protos()))
    if cfg.amplification.enabled:
        out.append(AmplificationDetector(env, cfg.amplification))
    if cfg.port_scan.enabled:
        out.append(PortScanDetector(env, cfg.port_scan))
    if cfg.host_sweep.enabled:
        out.append(HostSweepDetector(env, cfg.host_sweep))
    if cfg.smtp_spam.enabled:
        out.append(SmtpSpamDetector(env, cfg.smtp_spam))
    if cfg.beaconing.enabled:
        out.append(BeaconDetector(env, cfg.beaconing))
    if cfg.blocklist.enabled:
        out.append(BlocklistDetector(env, cfg.blocklist))
    if cfg.sip_scan.enabled:
        out.append(SipScanDetector(env, cfg.sip_scan))
    if cfg.sip_bruteforce.enabled:
        out.append(SipBruteforceDetector(env, cfg.sip_bruteforce))
    if cfg.invite_flood.enabled:
        out.append(InviteFloodDetector(env, cfg.invite_flood))
    if cfg.toll_fraud.enabled:
        out.append(TollFraudDetector(env, cfg.toll_fraud))
    if cfg.wangiri.enabled:
        out.append(WangiriDetector(env, cfg.wangiri))
    if cfg.robocall.enabled:
        out.append(RobocallDetector(env, cfg.robocall))
    out.extend(broadband_detectors(cfg.broadband, env))
    return out
