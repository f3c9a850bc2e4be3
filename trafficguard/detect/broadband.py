"""The broadband abuse and acceptable-use detectors, built from ``detect.broadband``.

Login brute force / credential stuffing and the acceptable-use signals read flow records;
DNS tunnelling reads the DNS analyzer's ``dns_summary`` records. Each is switched on and
off by its own ``enabled`` key; see ``docs/detectors.md`` (section Broadband).
"""

from __future__ import annotations

from trafficguard.config import BroadbandConfig
from trafficguard.detect.base import Detector, DetectorEnv
from trafficguard.detect.broadband_dns import DnsTunnelDetector
from trafficguard.detect.broadband_login import LoginBruteforceDetector
from trafficguard.detect.broadband_use import (
    OpenProxyDetector,
    OpenResolverDetector,
    ResidentialSmtpDetector,
    ServerHostingDetector,
)
from trafficguard.detect.broadband_volume import VolumeAnomalyDetector


def broadband_detectors(cfg: BroadbandConfig, env: DetectorEnv) -> list[Detector]:
    """The enabled broadband detectors, in a fixed order."""
    out: list[Detector] = []
    if cfg.login_bruteforce.enabled:
        out.append(LoginBruteforceDetector(env, cfg.login_bruteforce))
    if cfg.dns_tunnel.enabled:
        out.append(DnsTunnelDetector(env, cfg.dns_tunnel))
    if cfg.open_resolver.enabled:
        out.append(OpenResolverDetector(env, cfg.open_resolver))
    if cfg.open_proxy.enabled:
        out.append(OpenProxyDetector(env, cfg.open_proxy))
    if cfg.residential_smtp.enabled:
        out.append(ResidentialSmtpDetector(env, cfg.residential_smtp))
    if cfg.server_hosting.enabled:
        out.append(ServerHostingDetector(env, cfg.server_hosting))
    if cfg.volume_anomaly.enabled:
        out.append(VolumeAnomalyDetector(env, cfg.volume_anomaly))
    return out
