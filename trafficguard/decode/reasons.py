"""The closed sets of names the decoder counts frames under.

Every frame handed to ``Decoder.decode_batch`` ends up in exactly one place: a returned
``Packet``, the fragment buffer, ``Decoder.errors[reason]`` (malformed, or a fragment that
was dropped) or ``Decoder.skipped[kind]`` (well-formed but not IP). Closed sets keep the
Prometheus label values bounded and let operators grep for a reason, like Zeek's weirds.
"""

from __future__ import annotations

from typing import Final

# -- malformed frames (DecodeError reasons) --------------------------------------------
UNKNOWN_LINKTYPE: Final = "unknown_linktype"
TRUNCATED: Final = "truncated"  # a header runs past the captured bytes
MALFORMED: Final = "malformed"  # a value the decoder could not interpret (ValueError)
BAD_IP_VERSION: Final = "bad_ip_version"
IPV4_BAD_HEADER_LEN: Final = "ipv4_bad_header_len"
IPV4_BAD_LENGTH: Final = "ipv4_bad_length"
IPV6_BAD_LENGTH: Final = "ipv6_bad_length"
IPV6_TOO_MANY_EXT: Final = "ipv6_too_many_ext_headers"
TCP_BAD_HEADER_LEN: Final = "tcp_bad_header_len"
UDP_BAD_LENGTH: Final = "udp_bad_length"
VLAN_TOO_DEEP: Final = "vlan_too_deep"
MPLS_TOO_DEEP: Final = "mpls_too_deep"
PPPOE_BAD_HEADER: Final = "pppoe_bad_header"
GRE_BAD_HEADER: Final = "gre_bad_header"
ERSPAN_BAD_HEADER: Final = "erspan_bad_header"
GTPU_BAD_HEADER: Final = "gtpu_bad_header"
TUNNEL_TOO_DEEP: Final = "tunnel_too_deep"
FRAGMENT_TIMEOUT: Final = "fragment_timeout"
FRAGMENT_OVERLAP: Final = "fragment_overlap"
FRAGMENT_BUFFER_FULL: Final = "fragment_buffer_full"
FRAGMENT_TOO_LARGE: Final = "fragment_too_large"
FRAGMENT_TOO_MANY: Final = "fragment_too_many"
FRAGMENT_BAD_LENGTH: Final = "fragment_bad_length"

DECODE_REASONS: Final = (
    UNKNOWN_LINKTYPE,
    TRUNCATED,
    MALFORMED,
    BAD_IP_VERSION,
    IPV4_BAD_HEADER_LEN,
    IPV4_BAD_LENGTH,
    IPV6_BAD_LENGTH,
    IPV6_TOO_MANY_EXT,
    TCP_BAD_HEADER_LEN,
    UDP_BAD_LENGTH,
    VLAN_TOO_DEEP,
    MPLS_TOO_DEEP,
    PPPOE_BAD_HEADER,
    GRE_BAD_HEADER,
    ERSPAN_BAD_HEADER,
    GTPU_BAD_HEADER,
    TUNNEL_TOO_DEEP,
    FRAGMENT_TIMEOUT,
    FRAGMENT_OVERLAP,
    FRAGMENT_BUFFER_FULL,
    FRAGMENT_TOO_LARGE,
    FRAGMENT_TOO_MANY,
    FRAGMENT_BAD_LENGTH,
)

# Reasons under which frames that were (or would have been) fragments are counted.
FRAGMENT_REASONS: Final = (
    FRAGMENT_TIMEOUT,
    FRAGMENT_OVERLAP,
    FRAGMENT_BUFFER_FULL,
    FRAGMENT_TOO_LARGE,
    FRAGMENT_TOO_MANY,
    FRAGMENT_BAD_LENGTH,
)

# -- well-formed frames that carry no IP packet ------------------------------------------
SKIP_ARP: Final = "arp"  # ARP and RARP
SKIP_LLDP: Final = "lldp"
SKIP_STP: Final = "stp"  # 802.3 + LLC with the spanning-tree SAP
SKIP_LLC: Final = "llc"  # other 802.3 length frames (CDP, IPX, NetBIOS, ...)
SKIP_PPPOE_DISCOVERY: Final = "pppoe_discovery"
SKIP_PPP_CONTROL: Final = "ppp_control"  # LCP, IPCP, IPv6CP, CCP, ... and non-IP PPP
SKIP_EAPOL: Final = "eapol"
SKIP_SLOW_PROTOCOLS: Final = "slow_protocols"  # LACP, marker, OAM
SKIP_MAC_CONTROL: Final = "mac_control"  # pause frames
SKIP_MPLS_OTHER: Final = "mpls_other"  # MPLS payload that is neither IP nor a pseudowire
SKIP_OTHER_ETHERTYPE: Final = "other_ethertype"
SKIP_OTHER_FAMILY: Final = "other_family"  # NULL/LOOP link with a non-IP address family

SKIP_REASONS: Final = (
    SKIP_ARP,
    SKIP_LLDP,
    SKIP_STP,
    SKIP_LLC,
    SKIP_PPPOE_DISCOVERY,
    SKIP_PPP_CONTROL,
    SKIP_EAPOL,
    SKIP_SLOW_PROTOCOLS,
    SKIP_MAC_CONTROL,
    SKIP_MPLS_OTHER,
    SKIP_OTHER_ETHERTYPE,
    SKIP_OTHER_FAMILY,
)
