"""DNS summary records: per client and registered domain per interval, features only.

The schema is documented in ``docs/records.md`` (section ``dns_summary``). No field
holds a query name, a label or a payload byte: the registered domain is a keyed token
pseudonym (``t<epoch>.…``), and everything about the names below it is reduced to counts,
lengths and entropies — what tunnel and exfiltration detection needs, and no more.
"""

# No `from __future__ import annotations`: the store reads these Structs' annotations at
# start-up (msgspec.structs.fields), and each string one costs a typing.ForwardRef compile.
from typing import ClassVar

import msgspec


class DnsSummaryRecord(msgspec.Struct, frozen=True, gc=False):
    """DNS activity of one client under one registered domain in one interval.

    Not ``kw_only``, unlike the other records: the analyzer makes tens of thousands per
    interval and passes the fields by position (field order = the order below).
    """

    kind: ClassVar[str] = "dns_summary"

    summary_id: str  # keyed token of (client, domain token, interval start): replay-stable
    interval_start_ns: int  # aligned interval boundaries (packet time)
    interval_end_ns: int
    first_ns: int  # first and last DNS message of this summary
    last_ns: int
    client_addr: str  # the querying host (pseudonymized downstream if a subscriber)
    domain_token: str  # keyed hash of the registered domain; never the name
    servers: int  # distinct resolver addresses the client asked (capped)
    queries: int
    responses: int
    queries_tcp: int
    query_rate_per_s: float  # queries / (last_ns - first_ns), at least over 1 s
    distinct_subdomains: int  # distinct names below the registered domain (exact up to cap)
    distinct_capped: bool  # true when the cap was reached (the count is a lower bound)
    label_len_mean: float  # longest label below the registered domain, mean over queries
    label_len_max: int
    subdomain_len_mean: float  # characters below the registered domain, per query
    subdomain_len_max: int
    subdomain_chars_distinct: int  # characters below the domain summed over distinct names
    entropy_mean: float  # Shannon entropy (bits/char) of the part below the domain
    entropy_max: float
    char_entropy: float  # entropy of the characters of all distinct names below, pooled
    txt_null_share: float  # share of queries of type TXT or NULL
    qtypes: dict[str, int]  # queries per type; keys from dns_message.QTYPE_LABELS
    rcodes: dict[str, int]  # responses per rcode; keys from dns_message.RCODE_LABELS
    query_bytes: int  # DNS message bytes client → resolver
    response_bytes: int  # DNS message bytes resolver → client
    response_bytes_mean: float
    response_bytes_max: int
