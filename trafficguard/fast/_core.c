/* trafficguard fast path: pcap record framing, common-path L2-L4 decode, the flow table
 * and payload signatures, in C, on batches.
 *
 * The reference semantics are the Python modules decode/decoder.py, flow/table.py,
 * flow/state.py, flow/classify.py and flow/signatures.py; this file ports them line for
 * line so that records are identical. A frame the common path does not cover (another
 * link type, fragments, tunnels, MPLS, PPPoE, IPv6 extension headers, anything malformed)
 * is handed back to Python, which decodes it with the reference decoder and feeds the
 * resulting Packet into the same C table (Core.update_packets), so flow order is kept.
 *
 * Memory: flows live in a pool of fixed 176-byte slots (indices stay stable while a flow
 * is open; freed slots are reused first, so resident pages follow the peak number of open
 * flows, not the file length) and an open-addressing hash table of 8-byte buckets (slot
 * number and flow hash; linear probing, backward-shift deletion, load <= 1/2). feed_pcap
 * works in groups of GROUP frames, prefetching buckets and slots. Each of the seven idle-timeout
 * lanes is a doubly linked LRU list threaded through the slots.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

#define NIL 0xFFFFFFFFu
#define MAX_CAPLEN 262144
#define GROUP 16 /* frames per prefetch group in feed_pcap and feed_block */

/* the order of flow/table.py LANE_NAMES; LANE_DNS: UDP with port 53 on either side */
enum { LANE_TCP, LANE_EMB, LANE_CLOSING, LANE_UDP, LANE_ICMP, LANE_OTHER, LANE_DNS, NLANES };
enum { ST_NONE, ST_SYN_SENT, ST_SYN_RECEIVED, ST_ESTABLISHED, ST_FIN_WAIT, ST_CLOSED,
       ST_RESET, ST_MIDSTREAM };
enum { R_IDLE, R_ACTIVE, R_FIN, R_RST, R_EVICTED, R_FLUSH, NREASONS };
enum { SRC_PORT, SRC_SIGNATURE, SRC_NONE };
enum { EV_START, EV_PACKET, EV_END };
/* flow_t.wanted: which events Python wants (set by the callback's answer / set_interest) */
enum { W_PKT = 1, W_END = 2, W_NONRTP = 4 };
/* feed status */
enum { S_FULL, S_MORE, S_SLOW, S_BAD };

/* labels: the order of flow.classify.APP_LABELS (checked at import by the wrapper) */
enum { L_SIP, L_SIP_TLS, L_RTP, L_RTCP, L_DNS, L_MDNS, L_HTTP, L_TLS, L_QUIC, L_SSH, L_SMTP,
       L_IMAP, L_POP3, L_NTP, L_SSDP, L_MEMCACHED, L_STUN, L_FTP, L_TELNET, L_RDP, L_SNMP,
       L_LDAP, L_DHCP, L_NETBIOS, L_UNKNOWN, NLABELS, L_NONE = 255 };
static const char *LABELS[NLABELS] = {
    "sip", "sip-tls", "rtp", "rtcp", "dns", "mdns", "http", "tls", "quic", "ssh", "smtp",
    "imap", "pop3", "ntp", "ssdp", "memcached", "stun", "ftp", "telnet", "rdp", "snmp", "ldap",
    "dhcp", "netbios", "unknown"};

#define TCP_FIN 0x01
#define TCP_SYN 0x02
#define TCP_RST 0x04
#define TCP_ACK 0x10
#define SYN_ACK (TCP_SYN | TCP_ACK)

static const uint8_t STATE_LANE[8] = {LANE_OTHER, LANE_EMB, LANE_EMB, LANE_TCP, LANE_TCP,
                                      LANE_CLOSING, LANE_CLOSING, LANE_TCP};

typedef struct {
    uint8_t a[16], b[16]; /* canonical endpoints: (a, pa) <= (b, pb) */
    uint16_t pa, pb, vlan;
    uint8_t proto, v6;
} fkey_t; /* 40 bytes, compared with memcmp */

typedef struct {
    fkey_t k;
    uint32_t hash, prev, next, seq;
    uint16_t flags; /* fwd flags in bits 0-7, rev in 8-15 */
    uint8_t a_is_src, tcp_state, lane, app, cls_left, classified, encap, wanted;
    uint32_t rtp_ix; /* 1 + index into Core.rtps when RTP is accounted here, else 0 */
    int64_t first_ns, start_ns, last_ns;
    int64_t pk[2], by[2], l2[2], pl[2]; /* [0] = fwd (initiator), [1] = rev */
    uint64_t rtp[2];                     /* pending RTP candidate per direction, 0 = none */
} flow_t;

_Static_assert(sizeof(flow_t) == 176, "flow slot grew");

typedef struct {
    uint32_t slot1; /* 1 + pool index, 0 = empty */
    uint32_t hash;  /* the flow's key_hash, so probes compare it without the slot */
} bucket_t;

typedef struct {
    int64_t ts, wire_len, ip_len, frames;
    const uint8_t *src, *dst, *data;
    Py_ssize_t datalen, poff, plen;
    uint16_t vlan, sport, dport;
    uint8_t v6, proto, flags, encap;
    PyObject *obj; /* the Python Packet (slow path) or NULL */
    int linktype, icmp_type;
} pkt_t;

typedef struct {
    PyObject_HEAD
    flow_t *pool;
    uint32_t pool_cap, pool_used, free_head, max_flows;
    bucket_t *tab;
    uint32_t tab_mask;
    uint32_t head[NLANES], tail[NLANES];
    int64_t idle_ns[NLANES], active_ns;
    uint32_t scan_per_tick, classify_packets, next_lane;
    uint8_t port_tab[3][65536]; /* TCP, UDP, SCTP -> label or L_NONE */
    uint8_t tunnel_port[65536];  /* UDP destination ports decoded as tunnels (slow path) */
    int64_t active, started, evicted, interim, ended[NREASONS], packets, fast_frames;
    int64_t started_at_tick; /* `started` at the last tick (the expiry budget) */
    int64_t app_pk[NLABELS][2], app_by[NLABELS][2];
    PyObject *records;  /* list of record tuples */
    PyObject *callback; /* hooks: callback(event, slot, packet_or_frame, arg) or None */
    struct rtp_flow **rtps; /* RTP state of tracked flows (flow_t.rtp_ix - 1) */
    uint32_t *rtps_free, rtps_len, rtps_cap, rtps_nfree;
    uint32_t *flush_order, flush_len, flush_pos; /* a final flush in progress (flush_some) */
    PyObject *packet_type; /* decode.packet.Packet: hooks get one built here, or None */
    /* set_record_factory: records are built here as record_type(**fields) (NULL: tuples) */
    PyObject *record_type, *record_kwnames, *record_labels[5], *record_addr_text;
    /* set_start_filter: EV_START only for flows some hook may want (sf_on 0: every flow) */
    uint8_t sf_on, sf_protos;  /* protocol bits: 1 TCP, 2 UDP, 4 SCTP */
    uint16_t sf_udp_min;       /* unknown-label UDP flows with both ports >= it (0: none) */
    uint64_t sf_labels;        /* bit per label: flows of these labels */
    uint8_t sf_port[65536];    /* flows with one of these ports on either side */
    uint16_t sf_watch[65536];  /* the same, counted: ports hooks announce while running */
    /* set_tap: (ts_ns, src, dst, proto, payload) of TCP/UDP payloads on a tap port */
    uint8_t tap_on, tap_port[65536];
    PyObject *taps; /* list, taken by take_taps */
} Core;

/* ---------------------------------------------------------------------------------- */
/* helpers                                                                              */

static inline uint16_t be16(const uint8_t *p) { return (uint16_t)(p[0] << 8 | p[1]); }
static inline uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}
static inline uint32_t rd32(const uint8_t *p, int big) {
    return big ? be32(p) : ((uint32_t)p[3] << 24 | (uint32_t)p[2] << 16 | (uint32_t)p[1] << 8 | p[0]);
}

/* bytes.startswith(s, off) on the whole buffer d[0:n] */
static inline int sw(const uint8_t *d, Py_ssize_t n, Py_ssize_t off, const char *s) {
    size_t l = strlen(s);
    return off >= 0 && off + (Py_ssize_t)l <= n && memcmp(d + off, s, l) == 0;
}
static int sw_any(const uint8_t *d, Py_ssize_t n, Py_ssize_t off, const char *const *list) {
    for (; *list; list++)
        if (sw(d, n, off, *list)) return 1;
    return 0;
}
/* data[i:j].isdigit() for i < j within bounds */
static int isdig(const uint8_t *d, Py_ssize_t i, Py_ssize_t j) {
    if (j <= i) return 0;
    for (; i < j; i++)
        if (d[i] < '0' || d[i] > '9') return 0;
    return 1;
}
static inline int has_port(uint16_t s, uint16_t d, uint16_t port) { return s == port || d == port; }

/* ---------------------------------------------------------------------------------- */
/* signatures (flow/signatures.py)                                                       */

#define FIRST_LINE_MAX 512
static const char *const SIP_METHODS[] = {"INVITE", "REGISTER", "OPTIONS", "ACK", "BYE",
    "CANCEL", "PRACK", "SUBSCRIBE", "NOTIFY", "PUBLISH", "INFO", "REFER", "MESSAGE", "UPDATE",
    NULL};
static const char *const SIP_SCHEMES[] = {"sip:", "sips:", "tel:", "SIP:", "SIPS:", "TEL:", NULL};
static const char *const HTTP_METHODS[] = {"GET ", "POST ", "HEAD ", "PUT ", "DELETE ",
    "OPTIONS ", "CONNECT ", "PATCH ", "TRACE ", NULL};
static const char *const SSDP_STARTS[] = {"M-SEARCH * HTTP/1.1", "NOTIFY * HTTP/1.1", NULL};
static const char *const MEMCACHED_WORDS[] = {"get ", "gets ", "set ", "add ", "replace ",
    "append ", "prepend ", "cas ", "delete ", "incr ", "decr ", "touch ", "stats", "version",
    "flush_all", "VALUE ", "STAT ", "END\r\n", "STORED", "NOT_", "DELETED", "ERROR", "mn\r\n",
    "me ", "mg ", "ms ", "md ", "ma ", NULL};

/* length of the first line at off (without CRLF), or -1 */
static Py_ssize_t first_line(const uint8_t *d, Py_ssize_t off, Py_ssize_t end) {
    Py_ssize_t stop = end < off + FIRST_LINE_MAX ? end : off + FIRST_LINE_MAX;
    for (Py_ssize_t i = off; i + 1 < stop; i++)
        if (d[i] == '\r' && d[i + 1] == '\n') return i - off;
    return -1;
}

static int is_sip(const uint8_t *d, Py_ssize_t n, Py_ssize_t off, Py_ssize_t end) {
    if (sw(d, n, off, "SIP/2.0 ")) return end - off >= 11 && isdig(d, off + 8, off + 11);
    if (!sw_any(d, n, off, SIP_METHODS)) return 0;
    Py_ssize_t len = first_line(d, off, end);
    if (len < 8 || memcmp(d + off + len - 8, " SIP/2.0", 8) != 0) return 0;
    const uint8_t *sp = memchr(d + off, ' ', (size_t)len);
    if (sp == NULL || sp == d + off) return 0;
    return sw_any(d, off + len, sp + 1 - d, SIP_SCHEMES);
}

static int is_http(const uint8_t *d, Py_ssize_t n, Py_ssize_t off, Py_ssize_t end) {
    if (sw(d, n, off, "HTTP/1."))
        return end - off >= 9 && (d[off + 7] == '0' || d[off + 7] == '1') && d[off + 8] == ' ';
    if (!sw_any(d, n, off, HTTP_METHODS)) return 0;
    Py_ssize_t len = first_line(d, off, end);
    if (len < 9) return 0;
    const uint8_t *l = d + off;
    return memcmp(l + len - 9, " HTTP/1.", 8) == 0 && (l[len - 1] == '0' || l[len - 1] == '1');
}

static int is_tls(const uint8_t *d, Py_ssize_t off, Py_ssize_t end) {
    if (end - off < 6 || d[off] != 22 || d[off + 1] != 3 || d[off + 2] > 4) return 0;
    unsigned rec = be16(d + off + 3);
    return rec >= 4 && rec <= 18432 && (d[off + 5] == 1 || d[off + 5] == 2);
}

static int is_quic(const uint8_t *d, Py_ssize_t n, Py_ssize_t off, Py_ssize_t end) {
    if (end - off < 7) return 0;
    uint8_t first = d[off];
    if ((first & 0xC0) == 0xC0) {
        uint32_t v = be32(d + off + 1);
        if (v == 0x00000001 || v == 0x6B3343CF || v == 0x709A50C4 || v >> 8 == 0xFF0000) return 1;
        return sw(d, n, off + 1, "Q0") && isdig(d, off + 3, off + 5);
    }
    return (first & 0x09) == 0x09 && end - off >= 13 && sw(d, n, off + 9, "Q0") &&
           isdig(d, off + 11, off + 13);
}

static int is_stun(const uint8_t *d, Py_ssize_t off, Py_ssize_t end) {
    if (end - off < 20 || (d[off] & 0xC0)) return 0;
    if (be32(d + off + 4) != 0x2112A442) return 0;
    unsigned len = be16(d + off + 2);
    return len % 4 == 0 && 20 + (Py_ssize_t)len <= end - off;
}

static int is_ntp(const uint8_t *d, Py_ssize_t off, Py_ssize_t end) {
    Py_ssize_t len = end - off;
    if (len != 48 && len != 68 && len != 72) return 0;
    uint8_t b0 = d[off];
    unsigned v = (b0 >> 3) & 7, m = b0 & 7;
    return v >= 1 && v <= 4 && m >= 1 && m <= 5;
}

static int is_memcached_udp(const uint8_t *d, Py_ssize_t n, Py_ssize_t off, Py_ssize_t end) {
    if (end - off < 12 || d[off + 6] || d[off + 7]) return 0;
    return be16(d + off + 2) < be16(d + off + 4) && sw_any(d, n, off + 8, MEMCACHED_WORDS);
}

static Py_ssize_t dns_name_end(const uint8_t *d, Py_ssize_t pos, Py_ssize_t end) {
    for (int i = 0; i < 128; i++) {
        if (pos >= end) return -1;
        uint8_t c = d[pos];
        if (c == 0) return pos + 1;
        if (c > 63) return -1;
        pos += 1 + c;
    }
    return -1;
}

static int is_dns(const uint8_t *d, Py_ssize_t off, Py_ssize_t end, int strict) {
    if (end - off < 12) return 0;
    unsigned flags = be16(d + off + 2), qd = be16(d + off + 4), an = be16(d + off + 6),
             ns = be16(d + off + 8), ar = be16(d + off + 10);
    unsigned opcode = (flags >> 11) & 0xF;
    if (qd != 1 || !(opcode <= 2 || opcode == 4 || opcode == 5) || an > 64 || ns > 64 || ar > 64)
        return 0;
    if (!strict) return 1;
    if (flags & 0x0040) return 0;
    Py_ssize_t ne = dns_name_end(d, off + 12, end);
    if (ne < 0 || ne + 4 > end) return 0;
    unsigned qclass = be16(d + ne + 2) & 0x7FFF;
    return qclass == 1 || qclass == 3 || qclass == 4 || qclass == 255;
}

static int is_dns_tcp(const uint8_t *d, Py_ssize_t off, Py_ssize_t end) {
    if (end - off < 14 || (Py_ssize_t)be16(d + off) != end - off - 2) return 0;
    return is_dns(d, off + 2, end, 0);
}

static int is_rtcp(const uint8_t *d, Py_ssize_t off, Py_ssize_t end) {
    if (end - off < 8 || d[off + 1] < 200 || d[off + 1] > 204) return 0;
    Py_ssize_t pos = off;
    for (int i = 0; i < 16; i++) {
        if (d[pos] >> 6 != 2 || d[pos + 1] < 192 || d[pos + 1] > 223) return 0;
        pos += ((Py_ssize_t)be16(d + pos + 2) + 1) * 4;
        if (pos == end) return 1;
        if (pos + 4 > end) return 0;
    }
    return 0;
}

static int64_t rtp_header(const uint8_t *d, Py_ssize_t off, Py_ssize_t end) {
    if (end - off < 12) return -1;
    uint8_t b0 = d[off], pt = d[off + 1] & 0x7F;
    if (b0 >> 6 != 2 || !(pt <= 34 || pt >= 96)) return -1;
    if (12 + 4 * (b0 & 0x0F) > end - off) return -1;
    return (int64_t)be32(d + off + 8) << 16 | be16(d + off + 2);
}

static int tcp_banner(const uint8_t *d, Py_ssize_t n, Py_ssize_t off, Py_ssize_t end) {
    if (sw(d, n, off, "220 ") || sw(d, n, off, "220-")) {
        Py_ssize_t len = first_line(d, off, end);
        if (len < 4) return L_NONE;
        for (Py_ssize_t i = off; i + 4 <= off + len; i++)
            if (memcmp(d + i, "SMTP", 4) == 0) return L_SMTP;
        return L_NONE;
    }
    if (sw(d, n, off, "EHLO ") || sw(d, n, off, "HELO ")) return L_SMTP;
    if (sw(d, n, off, "* OK")) return L_IMAP;
    if (sw(d, n, off, "+OK")) return L_POP3;
    return L_NONE;
}

static int strong_label(const uint8_t *d, Py_ssize_t n, Py_ssize_t off, Py_ssize_t end,
                        int proto, uint16_t sport, uint16_t dport) {
    if (end <= off) return L_NONE;
    int text = d[off] >= 0x41 && d[off] <= 0x5A;
    if (proto == 17) {
        if (text) {
            if (is_sip(d, n, off, end)) return L_SIP;
            if (sw_any(d, n, off, SSDP_STARTS) ||
                (has_port(sport, dport, 1900) && sw(d, n, off, "HTTP/1.1 ")))
                return L_SSDP;
        }
        if (is_quic(d, n, off, end)) return L_QUIC;
        if (is_stun(d, off, end)) return L_STUN;
        if (has_port(sport, dport, 123) && is_ntp(d, off, end)) return L_NTP;
        if (is_memcached_udp(d, n, off, end)) return L_MEMCACHED;
        return L_NONE;
    }
    if (proto == 6) {
        if (is_tls(d, off, end)) return has_port(sport, dport, 5061) ? L_SIP_TLS : L_TLS;
        if (!text && !memchr("0123456789*+", d[off], 12)) return L_NONE;
        if (is_sip(d, n, off, end)) return L_SIP;
        if (sw(d, n, off, "SSH-") && end - off >= 8) return L_SSH;
        if (is_http(d, n, off, end)) return L_HTTP;
        return tcp_banner(d, n, off, end);
    }
    if (proto == 132 && text && is_sip(d, n, off, end)) return L_SIP;
    return L_NONE;
}

static int dns_label(const uint8_t *d, Py_ssize_t off, Py_ssize_t end, uint16_t sp, uint16_t dp) {
    if (has_port(sp, dp, 5353)) return is_dns(d, off, end, 0) ? L_MDNS : L_NONE;
    if (has_port(sp, dp, 53)) return is_dns(d, off, end, 0) ? L_DNS : L_NONE;
    return is_dns(d, off, end, 1) ? L_DNS : L_NONE;
}

#define RTP_VALID ((uint64_t)1 << 48)

/* Classifier.inspect: a label, or L_NONE (and maybe a new RTP candidate in f->rtp) */
static int inspect(flow_t *f, const pkt_t *p, int fwd) {
    const uint8_t *d = p->data;
    Py_ssize_t n = p->datalen, off = p->poff;
    Py_ssize_t end = off + p->plen < n ? off + p->plen : n;
    if (end <= off) return L_NONE;
    int label = strong_label(d, n, off, end, p->proto, p->sport, p->dport);
    if (label != L_NONE) return label;
    if (p->proto == 17) {
        label = dns_label(d, off, end, p->sport, p->dport);
        if (label != L_NONE) return label;
        if (p->sport >= 1024 && p->dport >= 1024) {
            if (is_rtcp(d, off, end)) return L_RTCP;
            int64_t head = rtp_header(d, off, end);
            if (head < 0) return L_NONE;
            int dir = fwd ? 0 : 1;
            uint64_t prev = f->rtp[dir];
            if ((prev & RTP_VALID) && ((prev >> 16) & 0xFFFFFFFFu) == (uint64_t)head >> 16) {
                unsigned step = (unsigned)(((uint64_t)head & 0xFFFF) - (prev & 0xFFFF)) & 0xFFFF;
                if (step > 0 && step <= 16) return L_RTP;
            }
            f->rtp[dir] = RTP_VALID | (uint64_t)head;
        }
    } else if (p->proto == 6 && has_port(p->sport, p->dport, 53) && is_dns_tcp(d, off, end)) {
        return L_DNS;
    }
    return L_NONE;
}

static void classify(flow_t *f, const pkt_t *p, int fwd) {
    int label = inspect(f, p, fwd);
    if (label != L_NONE) {
        f->app = (uint8_t)label;
        f->classified = 1;
        f->cls_left = 0;
        f->rtp[0] = f->rtp[1] = 0;
    } else if (--f->cls_left == 0) {
        f->rtp[0] = f->rtp[1] = 0;
    }
}

static int by_port(Core *c, int proto, uint16_t src_port, uint16_t dst_port) {
    int t = proto == 6 ? 0 : proto == 17 ? 1 : proto == 132 ? 2 : -1;
    if (t < 0) return L_UNKNOWN;
    uint8_t l = c->port_tab[t][dst_port];
    if (l == L_NONE) l = c->port_tab[t][src_port];
    return l == L_NONE ? L_UNKNOWN : l;
}

/* ---------------------------------------------------------------------------------- */
/* hash table and lanes                                                                  */

static inline uint32_t key_hash(const fkey_t *k) {
    uint64_t w[5], h = 0x9E3779B97F4A7C15ull;
    memcpy(w, k, sizeof w);
    for (int i = 0; i < 5; i++) {
        h ^= w[i];
        h *= 0xBF58476D1CE4E5B9ull;
        h ^= h >> 31;
    }
    return (uint32_t)(h ^ (h >> 32));
}

/* Open addressing with linear probing; a bucket keeps the flow's hash next to its slot
 * number, so probing past other flows, growing and deleting never touch their slots
 * (with a million flows every slot access is a cache miss). */
static uint32_t lookup(Core *c, const fkey_t *k, uint32_t h) {
    uint32_t i = h & c->tab_mask;
    for (;;) {
        bucket_t e = c->tab[i];
        if (e.slot1 == 0) return NIL;
        if (e.hash == h && memcmp(&c->pool[e.slot1 - 1].k, k, sizeof *k) == 0) return e.slot1 - 1;
        i = (i + 1) & c->tab_mask;
    }
}

static void tab_put(bucket_t *tab, uint32_t mask, uint32_t h, uint32_t idx) {
    uint32_t i = h & mask;
    while (tab[i].slot1) i = (i + 1) & mask;
    tab[i].slot1 = idx + 1;
    tab[i].hash = h;
}

static int tab_grow(Core *c) {
    uint32_t size = (c->tab_mask + 1) * 2;
    bucket_t *tab = PyMem_RawCalloc(size, sizeof *tab);
    if (tab == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (uint32_t i = 0; i <= c->tab_mask; i++)
        if (c->tab[i].slot1) tab_put(tab, size - 1, c->tab[i].hash, c->tab[i].slot1 - 1);
    PyMem_RawFree(c->tab);
    c->tab = tab;
    c->tab_mask = size - 1;
    return 0;
}

static void tab_del(Core *c, uint32_t idx) {
    uint32_t mask = c->tab_mask, i = c->pool[idx].hash & mask;
    while (c->tab[i].slot1 != idx + 1) i = (i + 1) & mask;
    uint32_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (c->tab[j].slot1 == 0) break;
        uint32_t k = c->tab[j].hash & mask;
        /* move entry j back to the hole at i unless its home lies cyclically in (i, j] */
        if ((j > i && (k <= i || k > j)) || (j < i && (k <= i && k > j))) {
            c->tab[i] = c->tab[j];
            i = j;
        }
    }
    c->tab[i].slot1 = 0;
    c->tab[i].hash = 0;
}

static void lane_unlink(Core *c, flow_t *f) {
    if (f->prev != NIL) c->pool[f->prev].next = f->next; else c->head[f->lane] = f->next;
    if (f->next != NIL) c->pool[f->next].prev = f->prev; else c->tail[f->lane] = f->prev;
}

static void lane_append(Core *c, flow_t *f, uint32_t idx, int lane) {
    f->lane = (uint8_t)lane;
    f->next = NIL;
    f->prev = c->tail[lane];
    if (f->prev != NIL) c->pool[f->prev].next = idx; else c->head[lane] = idx;
    c->tail[lane] = idx;
}

static inline void move_to_end(Core *c, flow_t *f, uint32_t idx) {
    if (c->tail[f->lane] == idx) return;
    lane_unlink(c, f);
    lane_append(c, f, idx, f->lane);
}

static uint32_t flow_alloc(Core *c) {
    if (c->free_head != NIL) {
        uint32_t idx = c->free_head;
        c->free_head = c->pool[idx].next;
        return idx;
    }
    if (c->pool_used == c->pool_cap) {
        uint32_t cap = c->pool_cap * 2;
        if (cap > c->max_flows) cap = c->max_flows;
        flow_t *pool = PyMem_RawRealloc(c->pool, (size_t)cap * sizeof *pool);
        if (pool == NULL) {
            PyErr_NoMemory();
            return NIL;
        }
        c->pool = pool;
        c->pool_cap = cap;
    }
    return c->pool_used++;
}

/* ---------------------------------------------------------------------------------- */
/* records and hooks                                                                     */

static Py_ssize_t pack_key(const flow_t *f, uint8_t *out) {
    int alen = f->k.v6 ? 16 : 4;
    uint8_t *o = out;
    memcpy(o, f->k.a, alen); o += alen;
    memcpy(o, f->k.b, alen); o += alen;
    *o++ = f->k.pa >> 8; *o++ = f->k.pa & 0xFF;
    *o++ = f->k.pb >> 8; *o++ = f->k.pb & 0xFF;
    *o++ = f->k.proto;
    *o++ = f->k.vlan >> 8; *o++ = f->k.vlan & 0xFF;
    return o - out;
}

/* flow_id (flow/export.py): blake2b-64 of key + first_ns (8 bytes big-endian), hex.
 * One message block is enough (the key is 15 or 39 bytes), so this is one compression. */
static const uint64_t B2_IV[8] = {
    0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
    0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
static const uint8_t B2_SIGMA[12][16] = {
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
    {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
    {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
    {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
    {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
    {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
    {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
    {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
    {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
    {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
    {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

static inline uint64_t rotr64(uint64_t x, int n) { return x >> n | x << (64 - n); }
#define B2G(a, b, c, d, x, y)                                  \
    do {                                                      \
        a = a + b + (x); d = rotr64(d ^ a, 32);              \
        c = c + d; b = rotr64(b ^ c, 24);                    \
        a = a + b + (y); d = rotr64(d ^ a, 16);              \
        c = c + d; b = rotr64(b ^ c, 63);                    \
    } while (0)

static void flow_id_hex(const uint8_t *key, Py_ssize_t klen, int64_t first_ns, char out[16]) {
    uint8_t block[128];
    uint64_t m[16], v[16], h0;
    memset(block, 0, sizeof block);
    memcpy(block, key, (size_t)klen);
    for (int i = 0; i < 8; i++) block[klen + i] = (uint8_t)((uint64_t)first_ns >> (56 - 8 * i));
    for (int i = 0; i < 16; i++) {
        uint64_t w = 0;
        for (int j = 7; j >= 0; j--) w = w << 8 | block[8 * i + j];
        m[i] = w;
    }
    for (int i = 0; i < 8; i++) v[i] = v[i + 8] = B2_IV[i];
    v[0] ^= 0x01010008ULL; /* digest 8 bytes, no key, fanout 1, depth 1 */
    h0 = v[0];
    v[12] ^= (uint64_t)(klen + 8);
    v[14] = ~v[14];
    for (int r = 0; r < 12; r++) {
        const uint8_t *s = B2_SIGMA[r];
        B2G(v[0], v[4], v[8], v[12], m[s[0]], m[s[1]]);
        B2G(v[1], v[5], v[9], v[13], m[s[2]], m[s[3]]);
        B2G(v[2], v[6], v[10], v[14], m[s[4]], m[s[5]]);
        B2G(v[3], v[7], v[11], v[15], m[s[6]], m[s[7]]);
        B2G(v[0], v[5], v[10], v[15], m[s[8]], m[s[9]]);
        B2G(v[1], v[6], v[11], v[12], m[s[10]], m[s[11]]);
        B2G(v[2], v[7], v[8], v[13], m[s[12]], m[s[13]]);
        B2G(v[3], v[4], v[9], v[14], m[s[14]], m[s[15]]);
    }
    h0 ^= v[0] ^ v[8];
    static const char hex[] = "0123456789abcdef";
    for (int i = 0; i < 8; i++) {
        uint8_t byte = (uint8_t)(h0 >> (8 * i));
        out[2 * i] = hex[byte >> 4];
        out[2 * i + 1] = hex[byte & 15];
    }
}

/* flow/keys.addr_text: IPv4 dotted quad; IPv6 in RFC 5952 form (what ipaddress prints),
 * except IPv4-mapped addresses, which stay bytes for Python to format. */
static PyObject *addr_object(const uint8_t *a, int v6) {
    char buf[48];
    if (!v6) {
        snprintf(buf, sizeof buf, "%u.%u.%u.%u", a[0], a[1], a[2], a[3]);
        return PyUnicode_FromString(buf);
    }
    static const uint8_t mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (memcmp(a, mapped, 12) == 0) return PyBytes_FromStringAndSize((const char *)a, 16);
    unsigned hx[8];
    int best = -1, best_len = 0;
    for (int i = 0; i < 8; i++) hx[i] = be16(a + 2 * i);
    for (int i = 0; i < 8;) {
        if (hx[i]) { i++; continue; }
        int j = i;
        while (j < 8 && hx[j] == 0) j++;
        if (j - i > best_len) { best = i; best_len = j - i; }
        i = j;
    }
    if (best_len < 2) best = -1;
    char *o = buf;
    for (int i = 0; i < 8; i++) {
        if (i == best) {
            *o++ = ':';
            if (i == 0) *o++ = ':';
            i += best_len - 1;
            continue;
        }
        o += sprintf(o, "%x", hx[i]);
        if (i < 7) *o++ = ':';
    }
    *o = 0;
    return PyUnicode_FromString(buf);
}

/* The record form: (flow_id, seq, first, start, end, vlan, ipver, proto, src text, sport,
 * dst text, dport, ... as below ..., reason) */
static PyObject *record_tuple(const flow_t *f, int reason) {
    uint8_t key[40];
    char fid[16];
    Py_ssize_t klen = pack_key(f, key);
    flow_id_hex(key, klen, f->first_ns, fid);
    const uint8_t *src = f->a_is_src ? f->k.a : f->k.b, *dst = f->a_is_src ? f->k.b : f->k.a;
    int sport = f->a_is_src ? f->k.pa : f->k.pb, dport = f->a_is_src ? f->k.pb : f->k.pa;
    int source = f->classified ? SRC_SIGNATURE : f->app == L_UNKNOWN ? SRC_NONE : SRC_PORT;
    PyObject *s = addr_object(src, f->k.v6), *d = s ? addr_object(dst, f->k.v6) : NULL;
    if (d == NULL) {
        Py_XDECREF(s);
        return NULL;
    }
    return Py_BuildValue("(s#kLLLiiiNiNiLLLLLLLLiiiiiii)", fid, (Py_ssize_t)16,
                         (unsigned long)f->seq, (long long)f->first_ns, (long long)f->start_ns,
                         (long long)f->last_ns, (int)f->k.vlan, f->k.v6 ? 6 : 4,
                         (int)f->k.proto, s, sport, d, dport, (long long)f->pk[0],
                         (long long)f->pk[1], (long long)f->by[0], (long long)f->by[1],
                         (long long)(f->by[0] - f->l2[0]), (long long)(f->by[1] - f->l2[1]),
                         (long long)f->pl[0], (long long)f->pl[1], f->flags & 0xFF,
                         f->flags >> 8, (int)f->tcp_state, (int)f->app, source, (int)f->encap,
                         reason);
}

/* (key, seq, first, start, end, vlan, ipver, proto, src, sport, dst, dport, pk_f, pk_r,
 *  by_f, by_r, ipb_f, ipb_r, pl_f, pl_r, flags_f, flags_r, tcp_state, app, app_source,
 *  encap, reason) */
static PyObject *flow_tuple(const flow_t *f, int reason) {
    uint8_t key[40];
    Py_ssize_t klen = pack_key(f, key);
    int alen = f->k.v6 ? 16 : 4;
    const uint8_t *src = f->a_is_src ? f->k.a : f->k.b, *dst = f->a_is_src ? f->k.b : f->k.a;
    int sport = f->a_is_src ? f->k.pa : f->k.pb, dport = f->a_is_src ? f->k.pb : f->k.pa;
    int source = f->classified ? SRC_SIGNATURE : f->app == L_UNKNOWN ? SRC_NONE : SRC_PORT;
    return Py_BuildValue("(y#kLLLiiiy#iy#iLLLLLLLLiiiiiii)", key, klen, (unsigned long)f->seq,
                         (long long)f->first_ns, (long long)f->start_ns, (long long)f->last_ns,
                         (int)f->k.vlan, f->k.v6 ? 6 : 4, (int)f->k.proto, src, (Py_ssize_t)alen,
                         sport, dst, (Py_ssize_t)alen, dport, (long long)f->pk[0],
                         (long long)f->pk[1], (long long)f->by[0], (long long)f->by[1],
                         (long long)(f->by[0] - f->l2[0]), (long long)(f->by[1] - f->l2[1]),
                         (long long)f->pl[0], (long long)f->pl[1], f->flags & 0xFF,
                         f->flags >> 8, (int)f->tcp_state, (int)f->app, source, (int)f->encap,
                         reason);
}

/* labels[i][value] with a bounds check: tcp_state, app, app_source, encap, reason */
static PyObject *record_label(Core *c, int which, int value) {
    PyObject *labels = c->record_labels[which];
    if (value < 0 || value >= PyTuple_GET_SIZE(labels)) {
        PyErr_Format(PyExc_ValueError, "record label %d out of range (table %d)", value, which);
        return NULL;
    }
    PyObject *o = PyTuple_GET_ITEM(labels, value);
    Py_INCREF(o);
    return o;
}

/* IPv4-mapped addresses come back from addr_object as bytes: Python formats them */
static PyObject *record_addr(Core *c, const uint8_t *a, int v6) {
    PyObject *o = addr_object(a, v6);
    if (o == NULL || !PyBytes_Check(o)) return o;
    PyObject *text = PyObject_CallOneArg(c->record_addr_text, o);
    Py_DECREF(o);
    return text;
}

#define RECORD_FIELDS 27

/* The record object itself: the same values as record_tuple, labels looked up, one
 * vectorcall with keyword names (no per-record Python loop). */
static PyObject *record_object(Core *c, const flow_t *f, int reason) {
    uint8_t key[40];
    char fid[16];
    Py_ssize_t klen = pack_key(f, key);
    flow_id_hex(key, klen, f->first_ns, fid);
    const uint8_t *src = f->a_is_src ? f->k.a : f->k.b, *dst = f->a_is_src ? f->k.b : f->k.a;
    int sport = f->a_is_src ? f->k.pa : f->k.pb, dport = f->a_is_src ? f->k.pb : f->k.pa;
    int source = f->classified ? SRC_SIGNATURE : f->app == L_UNKNOWN ? SRC_NONE : SRC_PORT;
    PyObject *v[RECORD_FIELDS] = {
        PyUnicode_FromStringAndSize(fid, 16),
        PyLong_FromUnsignedLong(f->seq),
        PyLong_FromLongLong(f->first_ns),
        PyLong_FromLongLong(f->start_ns),
        PyLong_FromLongLong(f->last_ns),
        PyLong_FromLong(f->k.vlan),
        PyLong_FromLong(f->k.v6 ? 6 : 4),
        PyLong_FromLong(f->k.proto),
        record_addr(c, src, f->k.v6),
        PyLong_FromLong(sport),
        record_addr(c, dst, f->k.v6),
        PyLong_FromLong(dport),
        PyLong_FromLongLong(f->pk[0]),
        PyLong_FromLongLong(f->pk[1]),
        PyLong_FromLongLong(f->by[0]),
        PyLong_FromLongLong(f->by[1]),
        PyLong_FromLongLong(f->by[0] - f->l2[0]),
        PyLong_FromLongLong(f->by[1] - f->l2[1]),
        PyLong_FromLongLong(f->pl[0]),
        PyLong_FromLongLong(f->pl[1]),
        PyLong_FromLong(f->flags & 0xFF),
        PyLong_FromLong(f->flags >> 8),
        record_label(c, 0, f->tcp_state),
        record_label(c, 1, f->app),
        record_label(c, 2, source),
        record_label(c, 3, f->encap),
        record_label(c, 4, reason),
    };
    PyObject *rec = NULL;
    int ok = 1;
    for (int i = 0; i < RECORD_FIELDS; i++) ok &= v[i] != NULL;
    if (ok) rec = PyObject_Vectorcall(c->record_type, v, 0, c->record_kwnames);
    for (int i = 0; i < RECORD_FIELDS; i++) Py_XDECREF(v[i]);
    return rec;
}

static int emit(Core *c, const flow_t *f, int reason) {
    PyObject *t = c->record_type ? record_object(c, f, reason) : record_tuple(f, reason);
    if (t == NULL) return -1;
    int rc = PyList_Append(c->records, t);
    Py_DECREF(t);
    return rc;
}

/* the packet as Python sees it: the Packet object, or a (ts, linktype, data, wire_len) frame */
static PyObject *pkt_object(Core *c, const pkt_t *p) {
    if (p->obj) {
        Py_INCREF(p->obj);
        return p->obj;
    }
    if (c->packet_type != Py_None) /* a Packet from the fields decode() found */
        return PyObject_CallFunction(c->packet_type, "LLiiy#y#iiiiy#nnLiLi", (long long)p->ts,
            (long long)p->wire_len, (int)p->vlan, p->v6 ? 6 : 4, (const char *)p->src,
            (Py_ssize_t)(p->v6 ? 16 : 4), (const char *)p->dst, (Py_ssize_t)(p->v6 ? 16 : 4),
            (int)p->proto, (int)p->sport, (int)p->dport, (int)p->flags, (const char *)p->data,
            p->datalen, p->poff, p->plen, (long long)p->ip_len, (int)p->encap,
            (long long)p->frames, p->icmp_type);
    return Py_BuildValue("(Liy#L)", (long long)p->ts, p->linktype, p->data, p->datalen,
                         (long long)p->wire_len);
}

static PyObject *call_hook(Core *c, int event, uint32_t idx, const pkt_t *p, int arg) {
    PyObject *obj = p ? pkt_object(c, p) : (Py_INCREF(Py_None), Py_None);
    if (obj == NULL) return NULL;
    PyObject *r = PyObject_CallFunction(c->callback, "iIOi", event, idx, obj, arg);
    Py_DECREF(obj);
    return r;
}

static void rtp_detach(Core *c, flow_t *f);

static int end_flow(Core *c, uint32_t idx, int reason) {
    flow_t *f = &c->pool[idx];
    lane_unlink(c, f);
    tab_del(c, idx);
    c->active--;
    c->ended[reason]++;
    int rc = emit(c, f, reason);
    if (rc == 0 && (f->wanted & W_END) && c->callback != Py_None) {
        PyObject *r = call_hook(c, EV_END, idx, NULL, reason);
        if (r == NULL) rc = -1;
        Py_XDECREF(r);
    }
    f = &c->pool[idx];
    rtp_detach(c, f);
    f->wanted = 0;
    f->next = c->free_head;
    c->free_head = idx;
    return rc;
}

static int idle_reason(const flow_t *f) {
    return f->tcp_state == ST_CLOSED ? R_FIN : f->tcp_state == ST_RESET ? R_RST : R_IDLE;
}

static int evict_lru(Core *c) {
    uint32_t victim = NIL;
    for (int l = 0; l < NLANES; l++) {
        uint32_t h = c->head[l];
        if (h != NIL && (victim == NIL || c->pool[h].last_ns < c->pool[victim].last_ns))
            victim = h;
    }
    if (victim == NIL) return 0;
    c->evicted++;
    return end_flow(c, victim, R_EVICTED);
}

static void tcp_transition(Core *c, flow_t *f, uint32_t idx, int fl, int fwd) {
    int state = f->tcp_state, nw = state;
    if (state == ST_CLOSED || state == ST_RESET) return;
    if (fl & TCP_RST) nw = ST_RESET;
    else if (fl & TCP_FIN) nw = (f->flags & 0x0101) == 0x0101 ? ST_CLOSED : ST_FIN_WAIT;
    else if (fl & TCP_SYN) {
        if ((fl & TCP_ACK) && state == ST_SYN_SENT && !fwd) nw = ST_SYN_RECEIVED;
    } else if ((fl & TCP_ACK) && (state == ST_SYN_RECEIVED || (state == ST_SYN_SENT && fwd)))
        nw = ST_ESTABLISHED;
    if (nw == state) return;
    f->tcp_state = (uint8_t)nw;
    int target = STATE_LANE[nw];
    if (target != f->lane) {
        lane_unlink(c, f);
        lane_append(c, f, idx, target);
    }
}

/* ---------------------------------------------------------------------------------- */
/* RTP accounting (voip/rtp.py RtpStreams/RtpStreamStats, same arithmetic)               */

#define RTP_MAX_DROPOUT 3000
#define RTP_MAX_MISORDER 100
#define RTP_WINDOW 128
typedef unsigned __int128 u128;

typedef struct {
    uint32_t ssrc, clock_rate, last_rtp_ts;
    int32_t pt, bad_seq;
    int64_t packets, payload_bytes, duplicates, reordered, seq_resets;
    int64_t first_ns, last_ns, max_delta_ns, last_arrival, jitter_samples;
    int64_t base, ext_max, received, expected_prior;
    double jitter, jitter_sum, jitter_max;
    u128 window;
} rtp_stream_t;

typedef struct rtp_flow {
    uint32_t rates[128]; /* payload type -> clock rate (SDP rtpmap, else the static table) */
    rtp_stream_t *s[2];
    uint32_t n[2], cap[2], max_streams;
    int64_t dropped[2];
} rtp_flow_t;

/* (ts_ns - last) * rate / 1e9 exactly as Python's int / int (correctly rounded) */
static int rtp_arrival(int64_t dt, uint32_t rate, double *out) {
    __int128 prod = (__int128)dt * rate;
    if (prod < ((__int128)1 << 53) && prod > -((__int128)1 << 53)) {
        *out = (double)(int64_t)prod / 1e9;
        return 0;
    }
    PyObject *a = PyLong_FromLongLong(dt), *b = PyLong_FromUnsignedLong(rate), *ab = NULL,
             *ns = PyLong_FromLong(1000000000L), *q = NULL;
    if (a && b && ns) ab = PyNumber_Multiply(a, b);
    if (ab) q = PyNumber_TrueDivide(ab, ns);
    if (q) *out = PyFloat_AsDouble(q);
    Py_XDECREF(a); Py_XDECREF(b); Py_XDECREF(ns); Py_XDECREF(ab); Py_XDECREF(q);
    return q == NULL || PyErr_Occurred() ? -1 : 0;
}

static int rtp_observe(rtp_stream_t *s, int64_t ts, uint32_t seq, uint32_t rtp_ts, int pt,
                       int64_t plen) {
    s->packets++;
    s->payload_bytes += plen;
    if (s->packets == 1) {
        s->pt = pt;
        s->first_ns = s->last_ns = s->last_arrival = ts;
        s->last_rtp_ts = rtp_ts;
        s->base = s->ext_max = seq;
        s->window = 1;
        s->received = 1;
        return 0;
    }
    int64_t delta = ts - s->last_ns;
    if (delta > s->max_delta_ns) s->max_delta_ns = delta;
    s->last_ns = ts;
    uint32_t ud = (uint32_t)((uint64_t)((int64_t)seq - s->ext_max) & 0xFFFF);
    if (ud == 0) {
        s->duplicates++;
        return 0;
    }
    if (ud < RTP_MAX_DROPOUT) {
        s->ext_max += ud;
        s->window = ud >= RTP_WINDOW ? 1 : (s->window << ud) | 1;
        s->received++;
        s->bad_seq = -1;
    } else if (ud > 65536 - RTP_MAX_MISORDER) {
        uint32_t back = 65536 - ud;
        s->reordered++;
        if (back < RTP_WINDOW) {
            u128 bit = (u128)1 << back;
            if (s->window & bit) {
                s->reordered--;
                s->duplicates++;
                return 0;
            }
            s->window |= bit;
        }
        s->received++;
        int64_t ext = s->ext_max - back;
        if (ext < s->base) s->base = ext;
    } else if ((int32_t)seq == s->bad_seq) {
        s->expected_prior += s->ext_max - s->base + 1;
        s->base = s->ext_max = seq;
        s->window = 1;
        s->received++;
        s->bad_seq = -1;
        s->seq_resets++;
    } else {
        s->bad_seq = (int32_t)((seq + 1) & 0xFFFF);
        return 0;
    }
    uint32_t rate = s->clock_rate;
    if (rate) {
        double arrival;
        if (rtp_arrival(ts - s->last_arrival, rate, &arrival) < 0) return -1;
        double sent = (double)(int32_t)(rtp_ts - s->last_rtp_ts);
        double d = arrival - sent;
        if (d < 0) d = -d;
        double jitter = s->jitter + (d - s->jitter) / 16.0;
        s->jitter = jitter;
        s->jitter_sum += jitter;
        s->jitter_samples++;
        if (jitter > s->jitter_max) s->jitter_max = jitter;
    }
    s->last_arrival = ts;
    s->last_rtp_ts = rtp_ts;
    return 0;
}

/* parse_rtp_header + RtpStreams.observe on d[off:end]: 1 = RTP (accounted), 0 = not, -1 error */
static int rtp_account(rtp_flow_t *r, int dir, int64_t ts, const uint8_t *d, Py_ssize_t off,
                       Py_ssize_t end) {
    if (end - off < 12) return 0;
    uint8_t b0 = d[off];
    int pt = d[off + 1] & 0x7F;
    if (b0 >> 6 != 2 || (pt >= 72 && pt <= 76)) return 0;
    Py_ssize_t pos = off + 12 + 4 * (b0 & 0x0F);
    if (b0 & 0x10) {
        if (pos + 4 > end) return 0;
        pos += 4 + 4 * (Py_ssize_t)be16(d + pos + 2);
    }
    if (pos > end) return 0;
    Py_ssize_t stop = end;
    if (b0 & 0x20) {
        uint8_t pad = d[end - 1];
        if (pad == 0 || end - pad < pos) return 0;
        stop = end - pad;
    }
    uint32_t ssrc = be32(d + off + 8);
    rtp_stream_t *s = NULL;
    for (uint32_t i = 0; i < r->n[dir]; i++)
        if (r->s[dir][i].ssrc == ssrc) { s = &r->s[dir][i]; break; }
    if (s == NULL) {
        if (r->n[dir] >= r->max_streams) {
            r->dropped[dir]++;
            return 1;
        }
        if (r->n[dir] == r->cap[dir]) {
            uint32_t cap = r->cap[dir] ? r->cap[dir] * 2 : 1;
            if (cap > r->max_streams) cap = r->max_streams;
            rtp_stream_t *grown = PyMem_RawRealloc(r->s[dir], cap * sizeof *grown);
            if (grown == NULL) { PyErr_NoMemory(); return -1; }
            r->s[dir] = grown;
            r->cap[dir] = cap;
        }
        s = &r->s[dir][r->n[dir]++];
        memset(s, 0, sizeof *s);
        s->ssrc = ssrc;
        s->clock_rate = r->rates[pt];
        s->pt = -1;
        s->bad_seq = -1;
    }
    if (rtp_observe(s, ts, be16(d + off + 2), be32(d + off + 4), pt, stop - pos) < 0) return -1;
    return 1;
}

static void rtp_free(rtp_flow_t *r) {
    if (r == NULL) return;
    PyMem_RawFree(r->s[0]);
    PyMem_RawFree(r->s[1]);
    PyMem_RawFree(r);
}

static PyObject *rtp_state_tuple(const rtp_stream_t *s) {
    return Py_BuildValue("(IIiLLLLLLLLddLdLLNiLLLI)", s->ssrc, s->clock_rate, s->pt,
        (long long)s->packets, (long long)s->payload_bytes, (long long)s->duplicates,
        (long long)s->reordered, (long long)s->seq_resets, (long long)s->first_ns,
        (long long)s->last_ns, (long long)s->max_delta_ns, s->jitter_sum, s->jitter_max,
        (long long)s->jitter_samples, s->jitter, (long long)s->base, (long long)s->ext_max,
        _PyLong_FromByteArray((const unsigned char *)&s->window, sizeof s->window, 1, 0),
        s->bad_seq, (long long)s->received, (long long)s->expected_prior,
        (long long)s->last_arrival, s->last_rtp_ts);
}

/* ((fwd states...), (rev states...), (dropped_fwd, dropped_rev)) */
static PyObject *rtp_states(const rtp_flow_t *r) {
    PyObject *dirs[2] = {NULL, NULL};
    for (int d = 0; d < 2; d++) {
        uint32_t n = r ? r->n[d] : 0;
        dirs[d] = PyTuple_New(n);
        if (dirs[d] == NULL) goto fail;
        for (uint32_t i = 0; i < n; i++) {
            PyObject *t = rtp_state_tuple(&r->s[d][i]);
            if (t == NULL) goto fail;
            PyTuple_SET_ITEM(dirs[d], i, t);
        }
    }
    return Py_BuildValue("(NN(LL))", dirs[0], dirs[1], (long long)(r ? r->dropped[0] : 0),
                         (long long)(r ? r->dropped[1] : 0));
fail:
    Py_XDECREF(dirs[0]);
    Py_XDECREF(dirs[1]);
    return NULL;
}

static int rtp_rates(rtp_flow_t *r, PyObject *rates) {
    Py_buffer b;
    if (PyObject_GetBuffer(rates, &b, PyBUF_SIMPLE) < 0) return -1;
    int ok = b.len == (Py_ssize_t)sizeof r->rates;
    if (ok) memcpy(r->rates, b.buf, sizeof r->rates);
    PyBuffer_Release(&b);
    if (!ok) PyErr_SetString(PyExc_ValueError, "rates: 128 native uint32 clock rates");
    return ok ? 0 : -1;
}

static rtp_flow_t *rtp_new(PyObject *rates, unsigned long max_streams) {
    if (max_streams < 1 || max_streams > 65535) {
        PyErr_SetString(PyExc_ValueError, "max_streams out of range");
        return NULL;
    }
    rtp_flow_t *r = PyMem_RawCalloc(1, sizeof *r);
    if (r == NULL) return (rtp_flow_t *)PyErr_NoMemory();
    r->max_streams = (uint32_t)max_streams;
    if (rtp_rates(r, rates) < 0) {
        rtp_free(r);
        return NULL;
    }
    return r;
}

static int rtp_attach(Core *c, flow_t *f, rtp_flow_t *r) {
    uint32_t i;
    if (c->rtps_nfree) i = c->rtps_free[--c->rtps_nfree];
    else {
        if (c->rtps_len == c->rtps_cap) {
            uint32_t cap = c->rtps_cap ? c->rtps_cap * 2 : 64;
            rtp_flow_t **grown = PyMem_RawRealloc(c->rtps, cap * sizeof *grown);
            if (grown == NULL) { PyErr_NoMemory(); return -1; }
            c->rtps = grown;
            uint32_t *fr = PyMem_RawRealloc(c->rtps_free, cap * sizeof *fr);
            if (fr == NULL) { PyErr_NoMemory(); return -1; }
            c->rtps_free = fr;
            c->rtps_cap = cap;
        }
        i = c->rtps_len++;
    }
    c->rtps[i] = r;
    f->rtp_ix = i + 1;
    return 0;
}

static void rtp_detach(Core *c, flow_t *f) {
    if (!f->rtp_ix) return;
    uint32_t i = f->rtp_ix - 1;
    rtp_free(c->rtps[i]);
    c->rtps[i] = NULL;
    c->rtps_free[c->rtps_nfree++] = i;
    f->rtp_ix = 0;
}

static int rtp_packet(Core *c, flow_t *f, const pkt_t *p, int fwd) {
    Py_ssize_t end = p->poff + p->plen;
    if (end > p->datalen || p->poff < 0) return 0;
    return rtp_account(c->rtps[f->rtp_ix - 1], fwd ? 0 : 1, p->ts, p->data, p->poff, end);
}

/* ---------------------------------------------------------------------------------- */
/* the flow table (flow/table.py)                                                        */

static int proto_bit(int proto) {
    return proto == 6 ? 1 : proto == 17 ? 2 : proto == 132 ? 4 : 0;
}

/* May a hook want this new flow? Hooks declare what they look at (ports, labels, ...);
 * a flow outside all of it never costs a Python call (the hooks would ignore it). */
static int want_start(const Core *c, const flow_t *f, const pkt_t *p) {
    if (!c->sf_on) return 1;
    if (!(c->sf_protos & proto_bit(p->proto))) return 0;
    uint16_t sp = p->sport, dp = p->dport;
    if (c->sf_port[sp] || c->sf_port[dp] || c->sf_watch[sp] || c->sf_watch[dp]) return 1;
    if ((c->sf_labels >> f->app) & 1) return 1;
    return c->sf_udp_min && p->proto == 17 && f->app == L_UNKNOWN && sp >= c->sf_udp_min &&
           dp >= c->sf_udp_min;
}

static int tap_packet(Core *c, const pkt_t *p) {
    int alen = p->v6 ? 16 : 4;
    PyObject *t = Py_BuildValue("(Ly#y#iy#)", (long long)p->ts, (const char *)p->src,
                                (Py_ssize_t)alen, (const char *)p->dst, (Py_ssize_t)alen,
                                (int)p->proto, (const char *)p->data + p->poff, p->plen);
    if (t == NULL) return -1;
    int rc = PyList_Append(c->taps, t);
    Py_DECREF(t);
    return rc;
}

static int start_flow(Core *c, const pkt_t *p, const fkey_t *k, uint32_t h, int a_side) {
    if (c->active >= c->max_flows && evict_lru(c) < 0) return -1;
    int proto = p->proto, state = ST_NONE, a_is_src = a_side, fl = 0, lane;
    if (proto == 6) {
        fl = p->flags;
        if ((fl & SYN_ACK) == TCP_SYN) state = ST_SYN_SENT;
        else if ((fl & SYN_ACK) == SYN_ACK) {
            state = ST_SYN_RECEIVED;
            a_is_src = !a_side;
        } else state = ST_MIDSTREAM;
        lane = STATE_LANE[state];
    } else if (proto == 17) lane = p->sport == 53 || p->dport == 53 ? LANE_DNS : LANE_UDP;
    else if (proto == 1 || proto == 58) lane = LANE_ICMP;
    else lane = LANE_OTHER;
    int fwd = a_is_src == a_side, d = fwd ? 0 : 1;
    int label = fwd ? by_port(c, proto, p->sport, p->dport) : by_port(c, proto, p->dport, p->sport);
    if ((c->active + 1) * 2 > (int64_t)c->tab_mask + 1 && tab_grow(c) < 0) return -1;
    uint32_t idx = flow_alloc(c);
    if (idx == NIL) return -1;
    flow_t *f = &c->pool[idx];
    memset(f, 0, sizeof *f);
    f->k = *k;
    f->hash = h;
    f->a_is_src = (uint8_t)a_is_src;
    f->first_ns = f->start_ns = f->last_ns = p->ts;
    f->pk[d] = p->frames;
    f->by[d] = p->wire_len;
    f->l2[d] = p->wire_len - p->ip_len;
    f->pl[d] = p->plen;
    f->flags = (uint16_t)(fwd ? fl : fl << 8);
    f->tcp_state = (uint8_t)state;
    f->app = (uint8_t)label;
    f->cls_left = (uint8_t)c->classify_packets;
    f->encap = p->encap;
    tab_put(c->tab, c->tab_mask, h, idx);
    lane_append(c, f, idx, lane);
    c->active++;
    c->started++;
    c->app_pk[label][d] += p->frames;
    c->app_by[label][d] += p->wire_len;
    if (fl & (TCP_FIN | TCP_RST)) tcp_transition(c, f, idx, fl, fwd);
    if (p->plen) classify(f, p, fwd);
    if (c->callback != Py_None && want_start(c, f, p)) {
        PyObject *r = call_hook(c, EV_START, idx, p, fwd);
        if (r == NULL) return -1;
        f = &c->pool[idx];
        long bits = PyLong_AsLong(r);
        Py_DECREF(r);
        if (bits == -1 && PyErr_Occurred()) return -1;
        f->wanted = (uint8_t)bits;
        if (f->rtp_ix && rtp_packet(c, f, p, fwd) < 0) return -1;
    }
    return 0;
}

/* The canonical key of a packet's flow; returns 1 when the source is the key's a side. */
static int make_key(const pkt_t *p, fkey_t *k) {
    int alen = p->v6 ? 16 : 4, a_side;
    memset(k, 0, sizeof *k);
    int cmp = memcmp(p->src, p->dst, alen);
    if (cmp < 0 || (cmp == 0 && p->sport <= p->dport)) {
        memcpy(k->a, p->src, alen); memcpy(k->b, p->dst, alen);
        k->pa = p->sport; k->pb = p->dport;
        a_side = 1;
    } else {
        memcpy(k->a, p->dst, alen); memcpy(k->b, p->src, alen);
        k->pa = p->dport; k->pb = p->sport;
        a_side = 0;
    }
    k->vlan = p->vlan;
    k->proto = p->proto;
    k->v6 = p->v6;
    return a_side;
}

static int update_keyed(Core *c, const pkt_t *p, const fkey_t *kp, uint32_t h, int a_side);

static int update(Core *c, const pkt_t *p) {
    fkey_t k;
    int a_side = make_key(p, &k);
    return update_keyed(c, p, &k, key_hash(&k), a_side);
}

/* update() for a packet whose key and hash are already made (feed_pcap's groups) */
static int update_keyed(Core *c, const pkt_t *p, const fkey_t *kp, uint32_t h, int a_side) {
    fkey_t k = *kp;
    c->packets += p->frames;
    if (c->tap_on && p->plen && (p->proto == 6 || p->proto == 17) &&
        (c->tap_port[p->sport] || c->tap_port[p->dport]) && tap_packet(c, p) < 0)
        return -1;
    uint32_t idx = lookup(c, &k, h);
    if (idx == NIL) return start_flow(c, p, &k, h, a_side);
    flow_t *f = &c->pool[idx];
    int64_t ts = p->ts, gap = ts - f->last_ns;
    if (gap >= c->idle_ns[f->lane]) {
        if (end_flow(c, idx, idle_reason(f)) < 0) return -1;
        return start_flow(c, p, &k, h, a_side);
    }
    int fl = p->flags, slow_tcp = 0;
    if (p->proto == 6) {
        slow_tcp = (fl & (TCP_SYN | TCP_FIN | TCP_RST)) || f->tcp_state < ST_ESTABLISHED;
        /* not within the nanosecond the flow began: same flow_id (flow/table.py) */
        if (slow_tcp && (fl & SYN_ACK) == TCP_SYN &&
            (f->tcp_state == ST_CLOSED || f->tcp_state == ST_RESET) && f->first_ns != ts) {
            if (end_flow(c, idx, f->tcp_state == ST_CLOSED ? R_FIN : R_RST) < 0) return -1;
            return start_flow(c, p, &k, h, a_side);
        }
    }
    if (ts - f->start_ns >= c->active_ns) {
        if (emit(c, f, R_ACTIVE) < 0) return -1;
        c->interim++;
        f->seq++;
        f->start_ns = f->last_ns = ts;
        memset(f->pk, 0, sizeof f->pk); memset(f->by, 0, sizeof f->by);
        memset(f->l2, 0, sizeof f->l2); memset(f->pl, 0, sizeof f->pl);
    } else if (gap > 0) {
        f->last_ns = ts;
    }
    int fwd = a_side == f->a_is_src, d = fwd ? 0 : 1;
    f->pk[d] += p->frames;
    f->by[d] += p->wire_len;
    f->l2[d] += p->wire_len - p->ip_len;
    f->pl[d] += p->plen;
    c->app_pk[f->app][d] += p->frames;
    c->app_by[f->app][d] += p->wire_len;
    if (p->proto == 6) {
        f->flags |= (uint16_t)(fwd ? fl : fl << 8);
        if (slow_tcp) tcp_transition(c, f, idx, fl, fwd);
    }
    move_to_end(c, f, idx);
    if (p->plen && f->cls_left > 0) classify(f, p, fwd);
    int rtp = 0;
    if (f->rtp_ix && (rtp = rtp_packet(c, f, p, fwd)) < 0) return -1;
    if (((f->wanted & W_PKT) || ((f->wanted & W_NONRTP) && !rtp)) && c->callback != Py_None) {
        PyObject *r = call_hook(c, EV_PACKET, idx, p, fwd | rtp << 1);
        if (r == NULL) return -1;
        Py_DECREF(r);
    }
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* the common-path decoder (decode/decoder.py); 1 = hand the frame to Python             */

static int decode(Core *c, pkt_t *p, const uint8_t *d, Py_ssize_t n) {
    if (p->linktype != 1 || n < 14) return 1;
    Py_ssize_t off = 14;
    unsigned et = be16(d + 12);
    int vlan = -1;
    if (et == 0x8100 || et == 0x88A8 || et == 0x9100) {
        int tags = 0;
        for (;;) {
            if (off + 4 > n || ++tags > 8) return 1;
            unsigned tci = be16(d + off);
            et = be16(d + off + 2);
            off += 4;
            if (vlan < 0) vlan = tci & 0x0FFF;
            if (et != 0x8100 && et != 0x88A8 && et != 0x9100) break;
        }
    }
    Py_ssize_t end, l4;
    int proto;
    if (et == 0x0800) {
        if (off + 20 > n) return 1;
        uint8_t vihl = d[off];
        unsigned hlen = (vihl & 15u) << 2, total = be16(d + off + 2);
        if (vihl >> 4 != 4 || hlen < 20 || total < hlen) return 1;
        if (be16(d + off + 6) & 0x3FFF) return 1; /* fragment */
        end = off + total;
        if (end > n) return 1;
        l4 = off + hlen;
        proto = d[off + 9];
        p->v6 = 0;
        p->src = d + off + 12;
        p->dst = d + off + 16;
        p->ip_len = total;
    } else if (et == 0x86DD) {
        if (off + 40 > n || d[off] >> 4 != 6) return 1;
        unsigned plen = be16(d + off + 4);
        end = off + 40 + plen;
        if (end > n) return 1;
        proto = d[off + 6];
        if (proto == 0 || proto == 43 || proto == 44 || proto == 51 || proto == 60 || proto == 135)
            return 1;
        l4 = off + 40;
        p->v6 = 1;
        p->src = d + off + 8;
        p->dst = d + off + 24;
        p->ip_len = 40 + plen;
    } else {
        return 1;
    }
    uint16_t sport = 0, dport = 0;
    uint8_t flags = 0;
    int icmp_type = -1;
    Py_ssize_t payload = l4;
    if (proto == 6) {
        if (l4 + 20 > end) return 1;
        sport = be16(d + l4);
        dport = be16(d + l4 + 2);
        flags = d[l4 + 13];
        payload = l4 + ((d[l4 + 12] >> 4) << 2);
        if (payload < l4 + 20 || payload > end) return 1;
    } else if (proto == 17) {
        if (l4 + 8 > end) return 1;
        sport = be16(d + l4);
        dport = be16(d + l4 + 2);
        unsigned ulen = be16(d + l4 + 4);
        if (ulen < 8 || l4 + (Py_ssize_t)ulen > end || c->tunnel_port[dport]) return 1;
        end = l4 + ulen;
        payload = l4 + 8;
    } else if (proto == 1 || proto == 58) {
        if (l4 + 4 > end) return 1;
        payload = l4 + 8 < end ? l4 + 8 : end;
        icmp_type = d[l4];
    } else if (proto == 132) {
        if (l4 + 12 > end) return 1;
        sport = be16(d + l4);
        dport = be16(d + l4 + 2);
        payload = l4 + 12;
    } else if (proto == 4 || proto == 41 || proto == 47) {
        return 1; /* tunnels */
    }
    p->proto = (uint8_t)proto;
    p->sport = sport;
    p->dport = dport;
    p->flags = flags;
    p->vlan = vlan >= 0 ? (uint16_t)vlan : 0;
    p->data = d;
    p->datalen = n;
    p->poff = payload;
    p->plen = end - payload;
    p->frames = 1;
    p->encap = 0;
    p->icmp_type = icmp_type;
    p->obj = NULL;
    return 0;
}

/* ---------------------------------------------------------------------------------- */
/* Python methods                                                                        */

static PyObject *frame_tuple(int64_t ts, int linktype, const uint8_t *d, Py_ssize_t n,
                             int64_t wl) {
    return Py_BuildValue("(Liy#L)", (long long)ts, linktype, d, n, (long long)wl);
}

PyDoc_STRVAR(feed_pcap_doc,
"feed_pcap(buf, off, big_endian, frac_ns, linktype, max_frames)\n"
"-> (off, frames, status, last_ts, wire_bytes, slow_frame)\n\n"
"Frame whole pcap records of buf from off and run them through decode and flows, until\n"
"max_frames are done (status 0), the next record is incomplete (1), a frame needs the\n"
"Python decoder (2: it is returned as a Frame, already counted and consumed) or a record\n"
"header is bad (3: caplen too large, not consumed).");

/* Prefetch groups (feed_pcap, feed_block): a decoded packet's key and hash are made and
 * its hash bucket prefetched as it is decoded; update_group then prefetches the flow slots
 * of the whole group and updates the table in frame order. With a table far larger than
 * the caches the misses of a group overlap instead of being paid one after another;
 * decode reads no table state, so the records are those of one-at-a-time updates. */
static inline void group_key(Core *c, const pkt_t *p, fkey_t *k, uint32_t *h, int *side) {
    *side = make_key(p, k);
    *h = key_hash(k);
    __builtin_prefetch(&c->tab[*h & c->tab_mask]);
}

static int update_group(Core *c, const pkt_t *ps, const fkey_t *ks, const uint32_t *hs,
                        const int *sides, int g) {
    for (int j = 0; j < g; j++) {
        bucket_t e = c->tab[hs[j] & c->tab_mask];
        if (e.slot1) {
            const char *slot = (const char *)&c->pool[e.slot1 - 1];
            __builtin_prefetch(slot);
            __builtin_prefetch(slot + 64);
            __builtin_prefetch(slot + 128);
        }
    }
    for (int j = 0; j < g; j++) {
        c->fast_frames++;
        if (update_keyed(c, &ps[j], &ks[j], hs[j], sides[j]) < 0) return -1;
    }
    return 0;
}

static PyObject *Core_feed_pcap(Core *c, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t off, max_frames;
    int big, linktype;
    long long frac_ns;
    if (!PyArg_ParseTuple(args, "y*npLin", &buf, &off, &big, &frac_ns, &linktype, &max_frames))
        return NULL;
    const uint8_t *b = buf.buf;
    Py_ssize_t n = buf.len, done = 0;
    int status = S_FULL;
    long long last_ts = 0, wire = 0;
    PyObject *slow = NULL;
    /* frames in groups of GROUP (update_group) */
    pkt_t ps[GROUP];
    fkey_t ks[GROUP];
    uint32_t hs[GROUP];
    int sides[GROUP];
    while (done < max_frames && status == S_FULL) {
        int g = 0;
        while (g < GROUP && done < max_frames) {
            if (off + 16 > n) { status = S_MORE; break; }
            const uint8_t *h = b + off;
            uint32_t caplen = rd32(h + 8, big);
            if (caplen > MAX_CAPLEN) { status = S_BAD; break; }
            if (off + 16 + (Py_ssize_t)caplen > n) { status = S_MORE; break; }
            int64_t ts = (int64_t)rd32(h, big) * 1000000000 + (int64_t)rd32(h + 4, big) * frac_ns;
            int64_t wl = rd32(h + 12, big);
            const uint8_t *d = h + 16;
            off += 16 + caplen;
            done++;
            last_ts = ts;
            wire += wl;
            pkt_t *p = &ps[g];
            p->linktype = linktype;
            p->ts = ts;
            p->wire_len = wl;
            if (decode(c, p, d, caplen)) { /* updates before it first, then Python */
                slow = frame_tuple(ts, linktype, d, caplen, wl);
                if (slow == NULL) goto fail;
                status = S_SLOW;
                break;
            }
            group_key(c, p, &ks[g], &hs[g], &sides[g]);
            g++;
        }
        if (update_group(c, ps, ks, hs, sides, g) < 0) goto fail;
    }
    PyBuffer_Release(&buf);
    if (slow == NULL) { slow = Py_None; Py_INCREF(slow); }
    return Py_BuildValue("(nniLLN)", off, done, status, last_ts, wire, slow);
fail:
    Py_XDECREF(slow); /* made before an earlier frame of its group failed */
    PyBuffer_Release(&buf);
    return NULL;
}

PyDoc_STRVAR(feed_frames_doc,
"feed_frames(frames, start) -> index\n\n"
"Run Frames from frames[start] on through decode and flows; return the index of the first\n"
"frame that needs the Python decoder, or len(frames).");

static PyObject *Core_feed_frames(Core *c, PyObject *args) {
    PyObject *frames;
    Py_ssize_t i;
    if (!PyArg_ParseTuple(args, "O!n", &PyList_Type, &frames, &i)) return NULL;
    pkt_t p;
    for (; i < PyList_GET_SIZE(frames); i++) {
        PyObject *fr = PyList_GET_ITEM(frames, i);
        if (!PyTuple_Check(fr) || PyTuple_GET_SIZE(fr) != 4) {
            PyErr_SetString(PyExc_TypeError, "a frame is a (ts_ns, linktype, data, wire_len) tuple");
            return NULL;
        }
        PyObject *data = PyTuple_GET_ITEM(fr, 2);
        if (!PyBytes_Check(data)) return PyLong_FromSsize_t(i);
        p.ts = PyLong_AsLongLong(PyTuple_GET_ITEM(fr, 0));
        p.linktype = (int)PyLong_AsLong(PyTuple_GET_ITEM(fr, 1));
        p.wire_len = PyLong_AsLongLong(PyTuple_GET_ITEM(fr, 3));
        if (PyErr_Occurred()) return NULL;
        if (decode(c, &p, (const uint8_t *)PyBytes_AS_STRING(data), PyBytes_GET_SIZE(data)))
            return PyLong_FromSsize_t(i);
        c->fast_frames++;
        if (update(c, &p) < 0) return NULL;
    }
    return PyLong_FromSsize_t(i);
}

/* ---------------------------------------------------------------------------------- */
/* TPACKET_V3 ring blocks (capture/live.py parse_block): packets straight from the      */
/* mapped block into decode and flows, with no Frame tuple unless Python must decode it. */

typedef struct {
    int64_t ts, wire_len;
    Py_ssize_t start, len, next; /* frame bytes [start, start + len) of buf; next header */
    int vlan;                    /* a stripped 802.1Q tag to put back: tci, tpid */
    uint16_t tci, tpid;
} tp3_t;

static inline uint32_t ne32(const uint8_t *p) { uint32_t v; memcpy(&v, p, 4); return v; }
static inline uint16_t ne16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }

/* the tpacket3_hdr at off, read exactly as parse_block's struct reads (-1: out of range) */
static int tp3_read(const uint8_t *b, Py_ssize_t n, Py_ssize_t off, int linktype, tp3_t *t) {
    if (off < 0 || off > n - 32) return -1;
    const uint8_t *h = b + off;
    uint32_t snap = ne32(h + 12), status = ne32(h + 20);
    t->next = off + (Py_ssize_t)ne32(h);
    t->ts = (int64_t)ne32(h + 4) * 1000000000 + (int64_t)ne32(h + 8);
    t->wire_len = ne32(h + 16);
    Py_ssize_t s = off + ne16(h + 24), e = s + (Py_ssize_t)snap;
    if (s > n) s = n;
    if (e > n) e = n;
    t->start = s;
    t->len = e - s;
    t->vlan = 0;
    if ((status & 0x10) && linktype == 1) { /* TP_STATUS_VLAN_VALID on Ethernet */
        if (off > n - 38) return -1;
        uint16_t tpid = (status & 0x40) ? ne16(h + 36) : 0x8100; /* VLAN_TPID_VALID */
        t->vlan = 1;
        t->tci = (uint16_t)(ne32(h + 32) & 0xFFFF);
        t->tpid = tpid ? tpid : 0x8100;
        t->wire_len += 4;
    }
    return 0;
}

static int tp3_error(Py_ssize_t off) {
    PyErr_Format(PyExc_ValueError, "TPACKET_V3 header at offset %zd runs past the buffer", off);
    return -1;
}

PyDoc_STRVAR(scan_block_doc,
"scan_block(buf, base, linktype) -> (first_off, packets, first_ts, last_ts, wire_bytes)\n\n"
"Check the TPACKET_V3 block at base of buf (every header inside buf, as parse_block reads\n"
"them; ValueError otherwise) and sum it up, without decoding anything.");

static PyObject *scan_block(PyObject *Py_UNUSED(mod), PyObject *args) {
    Py_buffer buf;
    Py_ssize_t base;
    int linktype;
    if (!PyArg_ParseTuple(args, "y*ni", &buf, &base, &linktype)) return NULL;
    const uint8_t *b = buf.buf;
    Py_ssize_t n = buf.len;
    if (base < 0 || base > n - 20) {
        tp3_error(base);
        goto fail;
    }
    uint32_t count = ne32(b + base + 12);
    Py_ssize_t first = base + (Py_ssize_t)ne32(b + base + 16), off = first;
    long long first_ts = 0, last_ts = 0, wire = 0;
    tp3_t t;
    for (uint32_t i = 0; i < count; i++) {
        if (tp3_read(b, n, off, linktype, &t) < 0) {
            tp3_error(off);
            goto fail;
        }
        if (i == 0) first_ts = t.ts;
        last_ts = t.ts;
        wire += t.wire_len;
        off = t.next;
    }
    PyBuffer_Release(&buf);
    return Py_BuildValue("(nkLLL)", first, (unsigned long)count, first_ts, last_ts, wire);
fail:
    PyBuffer_Release(&buf);
    return NULL;
}

PyDoc_STRVAR(feed_block_doc,
"feed_block(buf, off, packets, linktype) -> (off, packets_left, last_ts, slow_frame)\n\n"
"Run the next packets of a TPACKET_V3 block (from its header at off; see scan_block)\n"
"through decode and flows, VLAN tags restored, until none is left or one needs the\n"
"Python decoder (returned as a Frame, already consumed), else slow_frame is None.");

static PyObject *Core_feed_block(Core *c, PyObject *args) {
    Py_buffer buf;
    Py_ssize_t off, left;
    int linktype;
    if (!PyArg_ParseTuple(args, "y*nni", &buf, &off, &left, &linktype)) return NULL;
    const uint8_t *b = buf.buf;
    Py_ssize_t n = buf.len;
    long long last_ts = 0;
    PyObject *slow = NULL;
    /* frames with their VLAN tag put back, one buffer per place in a group: a decoded
     * packet points into its frame until update_group has run */
    uint8_t *scratch[GROUP] = {NULL};
    Py_ssize_t scratch_cap[GROUP] = {0};
    pkt_t ps[GROUP];
    fkey_t ks[GROUP];
    uint32_t hs[GROUP];
    int sides[GROUP];
    tp3_t t;
    int bad = 0; /* a malformed frame header at off: raised after the frames before it */
    while (left > 0 && slow == NULL && !bad) {
        int g = 0;
        while (g < GROUP && left > 0) {
            if (tp3_read(b, n, off, linktype, &t) < 0) {
                bad = 1;
                break;
            }
            off = t.next;
            left--;
            last_ts = t.ts;
            const uint8_t *d = b + t.start;
            Py_ssize_t len = t.len;
            if (t.vlan) {
                if (len + 4 > scratch_cap[g]) {
                    uint8_t *grown = PyMem_RawRealloc(scratch[g], (size_t)len + 4);
                    if (grown == NULL) {
                        PyErr_NoMemory();
                        goto fail;
                    }
                    scratch[g] = grown;
                    scratch_cap[g] = len + 4;
                }
                uint8_t *sc = scratch[g];
                Py_ssize_t cut = len < 12 ? len : 12;
                memcpy(sc, d, (size_t)cut);
                sc[cut] = (uint8_t)(t.tpid >> 8);
                sc[cut + 1] = (uint8_t)t.tpid;
                sc[cut + 2] = (uint8_t)(t.tci >> 8);
                sc[cut + 3] = (uint8_t)t.tci;
                memcpy(sc + cut + 4, d + cut, (size_t)(len - cut));
                d = sc;
                len += 4;
            }
            pkt_t *p = &ps[g];
            p->linktype = linktype;
            p->ts = t.ts;
            p->wire_len = t.wire_len;
            if (decode(c, p, d, len)) { /* the group before it first, then Python */
                slow = frame_tuple(t.ts, linktype, d, len, t.wire_len);
                if (slow == NULL) goto fail;
                break;
            }
            group_key(c, p, &ks[g], &hs[g], &sides[g]);
            g++;
        }
        if (update_group(c, ps, ks, hs, sides, g) < 0) goto fail;
    }
    if (bad) {
        tp3_error(off);
        goto fail;
    }
    for (int j = 0; j < GROUP; j++) PyMem_RawFree(scratch[j]);
    PyBuffer_Release(&buf);
    if (slow == NULL) { slow = Py_None; Py_INCREF(slow); }
    return Py_BuildValue("(nnLN)", off, left, last_ts, slow);
fail:
    Py_XDECREF(slow); /* made before an earlier frame of its group failed */
    for (int j = 0; j < GROUP; j++) PyMem_RawFree(scratch[j]);
    PyBuffer_Release(&buf);
    return NULL;
}

static int get_ll(PyObject *o, const char *name, long long *out) {
    PyObject *v = PyObject_GetAttrString(o, name);
    if (v == NULL) return -1;
    *out = PyLong_AsLongLong(v);
    Py_DECREF(v);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

PyDoc_STRVAR(update_packets_doc,
"update_packets(packets)\n\nAccount decoded Packet objects (from the Python decoder) to flows.");

static PyObject *Core_update_packets(Core *c, PyObject *packets) {
    PyObject *seq = PySequence_Fast(packets, "packets must be a sequence");
    if (seq == NULL) return NULL;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(seq, i);
        long long ts, wl, vlan, ver, proto, sport, dport, flags, poff, plen, ip_len, encap, frames;
        if (get_ll(o, "ts_ns", &ts) || get_ll(o, "wire_len", &wl) || get_ll(o, "vlan", &vlan) ||
            get_ll(o, "ip_version", &ver) || get_ll(o, "proto", &proto) ||
            get_ll(o, "sport", &sport) || get_ll(o, "dport", &dport) ||
            get_ll(o, "tcp_flags", &flags) || get_ll(o, "payload_off", &poff) ||
            get_ll(o, "payload_len", &plen) || get_ll(o, "ip_len", &ip_len) ||
            get_ll(o, "encap", &encap) || get_ll(o, "frames", &frames))
            goto fail;
        PyObject *src = PyObject_GetAttrString(o, "src"), *dst = PyObject_GetAttrString(o, "dst"),
                 *data = PyObject_GetAttrString(o, "data");
        int ok = src && dst && data && PyBytes_Check(src) && PyBytes_Check(dst) &&
                 PyBytes_Check(data) && PyBytes_GET_SIZE(src) == (ver == 6 ? 16 : 4) &&
                 PyBytes_GET_SIZE(dst) == PyBytes_GET_SIZE(src);
        int rc = -1;
        if (!ok) {
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_TypeError, "not a decoded Packet");
        } else {
            pkt_t p;
            p.ts = ts; p.wire_len = wl; p.vlan = (uint16_t)vlan; p.v6 = ver == 6;
            p.proto = (uint8_t)proto; p.sport = (uint16_t)sport; p.dport = (uint16_t)dport;
            p.flags = (uint8_t)flags; p.poff = (Py_ssize_t)poff; p.plen = (Py_ssize_t)plen;
            p.ip_len = ip_len; p.encap = (uint8_t)encap; p.frames = frames;
            p.src = (const uint8_t *)PyBytes_AS_STRING(src);
            p.dst = (const uint8_t *)PyBytes_AS_STRING(dst);
            p.data = (const uint8_t *)PyBytes_AS_STRING(data);
            p.datalen = PyBytes_GET_SIZE(data);
            p.obj = o;
            p.linktype = -1;
            rc = update(c, &p);
        }
        Py_XDECREF(src); Py_XDECREF(dst); Py_XDECREF(data);
        if (rc < 0) goto fail;
    }
    Py_DECREF(seq);
    Py_RETURN_NONE;
fail:
    Py_DECREF(seq);
    return NULL;
}

static PyObject *Core_tick(Core *c, PyObject *arg) {
    long long now = PyLong_AsLongLong(arg);
    if (now == -1 && PyErr_Occurred()) return NULL;
    /* the budget grows with the flows started since the last tick: expiry keeps up with
     * any arrival rate (flow/table.py FlowTable.tick) */
    long long budget = c->scan_per_tick + (c->started - c->started_at_tick);
    c->started_at_tick = c->started;
    uint32_t first = c->next_lane;
    c->next_lane = (first + 1) % NLANES;
    for (int i = 0; i < NLANES; i++) {
        int lane = (first + i) % NLANES;
        while (budget > 0 && c->head[lane] != NIL) {
            uint32_t idx = c->head[lane];
            flow_t *f = &c->pool[idx];
            budget--;
            if (now - f->last_ns < c->idle_ns[lane]) break;
            if (end_flow(c, idx, idle_reason(f)) < 0) return NULL;
        }
        if (budget <= 0) break;
    }
    Py_RETURN_NONE;
}

static Core *sort_core;
static int cmp_open(const void *x, const void *y) {
    const flow_t *f = &sort_core->pool[*(const uint32_t *)x], *g = &sort_core->pool[*(const uint32_t *)y];
    if (f->first_ns != g->first_ns) return f->first_ns < g->first_ns ? -1 : 1;
    uint8_t ka[40], kb[40];
    Py_ssize_t la = pack_key(f, ka), lb = pack_key(g, kb);
    int r = memcmp(ka, kb, (size_t)(la < lb ? la : lb));
    return r ? r : (la < lb ? -1 : la > lb);
}

/* End up to max open flows with reason "flush", oldest first (FlowTable.flush_all order);
   the order is taken once, at the first call, and kept until every flow in it ended.
   Returns how many of those flows are still open. */
static PyObject *Core_flush_some(Core *c, PyObject *arg) {
    Py_ssize_t max = PyLong_AsSsize_t(arg);
    if (max == -1 && PyErr_Occurred()) return NULL;
    if (c->flush_order == NULL) {
        uint32_t n = 0, *open = PyMem_RawMalloc(((size_t)c->active + 1) * sizeof *open);
        if (open == NULL) return PyErr_NoMemory();
        for (int l = 0; l < NLANES; l++)
            for (uint32_t i = c->head[l]; i != NIL; i = c->pool[i].next) open[n++] = i;
        sort_core = c;
        qsort(open, n, sizeof *open, cmp_open);
        c->flush_order = open;
        c->flush_len = n;
        c->flush_pos = 0;
    }
    for (Py_ssize_t done = 0; done < max && c->flush_pos < c->flush_len; done++)
        if (end_flow(c, c->flush_order[c->flush_pos++], R_FLUSH) < 0) return NULL;
    Py_ssize_t left = c->flush_len - c->flush_pos;
    if (!left) {
        PyMem_RawFree(c->flush_order);
        c->flush_order = NULL;
    }
    return PyLong_FromSsize_t(left);
}

static PyObject *Core_flush_all(Core *c, PyObject *Py_UNUSED(ignored)) {
    PyObject *all = PyLong_FromSsize_t(PY_SSIZE_T_MAX);
    if (all == NULL) return NULL;
    PyObject *r = Core_flush_some(c, all);
    Py_DECREF(all);
    if (r == NULL) return NULL;
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *Core_take_records(Core *c, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = c->records, *fresh = PyList_New(0);
    if (fresh == NULL) return NULL;
    c->records = fresh;
    return out;
}

static flow_t *slot_arg(Core *c, Py_ssize_t idx) {
    if (idx < 0 || idx >= c->pool_used) {
        PyErr_SetString(PyExc_IndexError, "no such flow slot");
        return NULL;
    }
    return &c->pool[idx];
}

/* slot_arg for a method's single int argument */
static flow_t *slot_obj(Core *c, PyObject *arg) {
    Py_ssize_t idx = PyLong_AsSsize_t(arg);
    if (idx == -1 && PyErr_Occurred()) return NULL;
    return slot_arg(c, idx);
}

static PyObject *Core_flow_info(Core *c, PyObject *arg) {
    const flow_t *f = slot_obj(c, arg);
    if (f == NULL) return NULL;
    /* last item: -1 classified, else payload packets left */
    return flow_tuple(f, f->classified ? -1 : f->cls_left);
}

/* The label alone: hooks read it at every flow start, and flow_info builds the whole tuple */
static PyObject *Core_flow_app(Core *c, PyObject *arg) {
    const flow_t *f = slot_obj(c, arg);
    if (f == NULL) return NULL;
    return PyLong_FromLong(f->app);
}

/* Ints 0..n-1 from an iterable into a flag table of n entries (values 0/1); returns how
 * many flags are set, or -1 with ValueError("<what> out of range") for any other value. */
static int int_flags(PyObject *values, uint8_t *table, long n, const char *what) {
    PyObject *it = PyObject_GetIter(values), *item;
    if (it == NULL) return -1;
    int set = 0;
    while ((item = PyIter_Next(it)) != NULL) {
        long v = PyLong_AsLong(item);
        Py_DECREF(item);
        if (v < 0 || v >= n) {
            Py_DECREF(it);
            if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s out of range", what);
            return -1;
        }
        set += !table[v];
        table[v] = 1;
    }
    Py_DECREF(it);
    return PyErr_Occurred() ? -1 : set;
}

static int port_flags(PyObject *ports, uint8_t *table) {
    return int_flags(ports, table, 65536, "port");
}

static PyObject *Core_set_start_filter(Core *c, PyObject *args) {
    PyObject *protos, *ports, *labels;
    unsigned int udp_min;
    if (!PyArg_ParseTuple(args, "OOOI", &protos, &ports, &labels, &udp_min)) return NULL;
    if (protos == Py_None) { /* every flow */
        c->sf_on = 0;
        Py_RETURN_NONE;
    }
    uint8_t proto_seen[256] = {0}, label_seen[NLABELS] = {0}, pbits = 0;
    uint64_t lbits = 0;
    if (int_flags(protos, proto_seen, 256, "protocol") < 0 ||
        int_flags(labels, label_seen, NLABELS, "label") < 0)
        return NULL;
    for (int i = 0; i < 256; i++)
        if (proto_seen[i]) pbits |= (uint8_t)proto_bit(i);
    for (int i = 0; i < NLABELS; i++)
        if (label_seen[i]) lbits |= (uint64_t)1 << i;
    if (udp_min > 65535) {
        PyErr_SetString(PyExc_ValueError, "port out of range");
        return NULL;
    }
    uint8_t table[65536] = {0};
    if (port_flags(ports, table) < 0) return NULL;
    memcpy(c->sf_port, table, sizeof table);
    c->sf_protos = pbits;
    c->sf_labels = lbits;
    c->sf_udp_min = (uint16_t)udp_min;
    c->sf_on = 1;
    Py_RETURN_NONE;
}

static PyObject *Core_watch_port(Core *c, PyObject *args) {
    int port, delta;
    if (!PyArg_ParseTuple(args, "ii", &port, &delta)) return NULL;
    if (port < 0 || port > 65535 || (delta != 1 && delta != -1) ||
        (delta < 0 && c->sf_watch[port] == 0) || (delta > 0 && c->sf_watch[port] == 65535)) {
        PyErr_SetString(PyExc_ValueError, "watch_port(port 0..65535, +1 or -1 of a watch held)");
        return NULL;
    }
    c->sf_watch[port] = (uint16_t)(c->sf_watch[port] + delta);
    Py_RETURN_NONE;
}

static PyObject *Core_set_tap(Core *c, PyObject *ports) {
    uint8_t table[65536] = {0};
    int set = port_flags(ports, table);
    if (set < 0) return NULL;
    if (c->taps == NULL && (c->taps = PyList_New(0)) == NULL) return NULL;
    memcpy(c->tap_port, table, sizeof table);
    c->tap_on = set > 0;
    Py_RETURN_NONE;
}

static PyObject *Core_take_taps(Core *c, PyObject *Py_UNUSED(ignored)) {
    if (c->taps == NULL || PyList_GET_SIZE(c->taps) == 0) return PyList_New(0);
    PyObject *fresh = PyList_New(0);
    if (fresh == NULL) return NULL;
    PyObject *out = c->taps;
    c->taps = fresh;
    return out;
}

static PyObject *Core_set_interest(Core *c, PyObject *args) {
    Py_ssize_t idx;
    int bits;
    if (!PyArg_ParseTuple(args, "ni", &idx, &bits)) return NULL;
    flow_t *f = slot_arg(c, idx);
    if (f == NULL) return NULL;
    f->wanted = (uint8_t)(bits & (W_PKT | W_END | W_NONRTP));
    Py_RETURN_NONE;
}

static PyObject *Core_rtp_track(Core *c, PyObject *args) {
    Py_ssize_t idx;
    PyObject *rates;
    unsigned long max_streams;
    if (!PyArg_ParseTuple(args, "nOk", &idx, &rates, &max_streams)) return NULL;
    flow_t *f = slot_arg(c, idx);
    if (f == NULL) return NULL;
    if (f->rtp_ix) {
        if (rtp_rates(c->rtps[f->rtp_ix - 1], rates) < 0) return NULL;
        Py_RETURN_NONE;
    }
    rtp_flow_t *r = rtp_new(rates, max_streams);
    if (r == NULL) return NULL;
    if (rtp_attach(c, f, r) < 0) {
        rtp_free(r);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *Core_rtp_untrack(Core *c, PyObject *arg) {
    flow_t *f = slot_obj(c, arg);
    if (f == NULL) return NULL;
    rtp_detach(c, f);
    Py_RETURN_NONE;
}

static PyObject *Core_rtp_streams(Core *c, PyObject *arg) {
    flow_t *f = slot_obj(c, arg);
    if (f == NULL) return NULL;
    return rtp_states(f->rtp_ix ? c->rtps[f->rtp_ix - 1] : NULL);
}

static PyObject *rtp_replay(PyObject *Py_UNUSED(mod), PyObject *args) {
    PyObject *rates, *events;
    unsigned long max_streams;
    if (!PyArg_ParseTuple(args, "OkO", &rates, &max_streams, &events)) return NULL;
    rtp_flow_t *r = rtp_new(rates, max_streams);
    if (r == NULL) return NULL;
    PyObject *seq = PySequence_Fast(events, "events: a sequence of (ts_ns, rev, payload)");
    PyObject *out = NULL, *flags = NULL;
    if (seq == NULL) goto done;
    flags = PyBytes_FromStringAndSize(NULL, PySequence_Fast_GET_SIZE(seq));
    if (flags == NULL) goto done;
    for (Py_ssize_t i = 0; i < PySequence_Fast_GET_SIZE(seq); i++) {
        long long ts;
        int dir;
        Py_buffer b;
        if (!PyArg_ParseTuple(PySequence_Fast_GET_ITEM(seq, i), "Lpy*", &ts, &dir, &b)) goto done;
        int rc = rtp_account(r, dir ? 1 : 0, ts, b.buf, 0, b.len);
        PyBuffer_Release(&b);
        if (rc < 0) goto done;
        PyBytes_AS_STRING(flags)[i] = (char)rc;
    }
    PyObject *states = rtp_states(r);
    if (states != NULL) out = Py_BuildValue("(NO)", states, flags);
done:
    Py_XDECREF(flags);
    Py_XDECREF(seq);
    rtp_free(r);
    return out;
}

static PyObject *Core_set_callback(Core *c, PyObject *args) {
    PyObject *cb, *packet_type = Py_None;
    if (!PyArg_ParseTuple(args, "O|O", &cb, &packet_type)) return NULL;
    if ((cb != Py_None && !PyCallable_Check(cb)) ||
        (packet_type != Py_None && !PyCallable_Check(packet_type))) {
        PyErr_SetString(PyExc_TypeError, "callback and packet type: callable or None");
        return NULL;
    }
    Py_INCREF(cb);
    Py_SETREF(c->callback, cb);
    Py_INCREF(packet_type);
    Py_SETREF(c->packet_type, packet_type);
    Py_RETURN_NONE;
}

static PyObject *Core_set_record_factory(Core *c, PyObject *args) {
    PyObject *type, *kwnames, *labels[5], *addr_text;
    if (!PyArg_ParseTuple(args, "OO!O!O!O!O!O!O", &type, &PyTuple_Type, &kwnames, &PyTuple_Type,
                          &labels[0], &PyTuple_Type, &labels[1], &PyTuple_Type, &labels[2],
                          &PyTuple_Type, &labels[3], &PyTuple_Type, &labels[4], &addr_text))
        return NULL;
    if (!PyCallable_Check(type) || !PyCallable_Check(addr_text) ||
        PyTuple_GET_SIZE(kwnames) != RECORD_FIELDS) {
        PyErr_SetString(PyExc_ValueError, "record factory: callables and 27 field names");
        return NULL;
    }
    for (Py_ssize_t i = 0; i < RECORD_FIELDS; i++) {
        if (!PyUnicode_CheckExact(PyTuple_GET_ITEM(kwnames, i))) {
            PyErr_SetString(PyExc_TypeError, "record factory: field names must be str");
            return NULL;
        }
    }
    Py_INCREF(type);
    Py_XSETREF(c->record_type, type);
    Py_INCREF(kwnames);
    Py_XSETREF(c->record_kwnames, kwnames);
    for (int i = 0; i < 5; i++) {
        Py_INCREF(labels[i]);
        Py_XSETREF(c->record_labels[i], labels[i]);
    }
    Py_INCREF(addr_text);
    Py_XSETREF(c->record_addr_text, addr_text);
    Py_RETURN_NONE;
}

static PyObject *Core_counters(Core *c, PyObject *Py_UNUSED(ignored)) {
    PyObject *ended = Py_BuildValue("(LLLLLL)", (long long)c->ended[0], (long long)c->ended[1],
                                    (long long)c->ended[2], (long long)c->ended[3],
                                    (long long)c->ended[4], (long long)c->ended[5]);
    if (ended == NULL) return NULL;
    return Py_BuildValue("{sLsLsLsLsLsLsN}", "active", (long long)c->active, "started",
                         (long long)c->started, "evicted", (long long)c->evicted, "interim",
                         (long long)c->interim, "packets", (long long)c->packets, "fast_frames",
                         (long long)c->fast_frames, "ended", ended);
}

static PyObject *Core_app_counters(Core *c, PyObject *Py_UNUSED(ignored)) {
    PyObject *out = PyList_New(NLABELS);
    if (out == NULL) return NULL;
    for (int i = 0; i < NLABELS; i++) {
        PyObject *t = Py_BuildValue("(LLLL)", (long long)c->app_pk[i][0], (long long)c->app_pk[i][1],
                                    (long long)c->app_by[i][0], (long long)c->app_by[i][1]);
        if (t == NULL) { Py_DECREF(out); return NULL; }
        PyList_SET_ITEM(out, i, t);
    }
    return out;
}

static PyObject *Core_memory(Core *c, PyObject *Py_UNUSED(ignored)) {
    return Py_BuildValue("(nnn)", (Py_ssize_t)sizeof(flow_t), (Py_ssize_t)c->pool_cap,
                         (Py_ssize_t)(c->tab_mask + 1));
}

static PyMethodDef Core_methods[] = {
    {"feed_pcap", (PyCFunction)Core_feed_pcap, METH_VARARGS, feed_pcap_doc},
    {"feed_frames", (PyCFunction)Core_feed_frames, METH_VARARGS, feed_frames_doc},
    {"feed_block", (PyCFunction)Core_feed_block, METH_VARARGS, feed_block_doc},
    {"update_packets", (PyCFunction)Core_update_packets, METH_O, update_packets_doc},
    {"tick", (PyCFunction)Core_tick, METH_O, "tick(now_ns): end idle flows, bounded scan"},
    {"flush_all", (PyCFunction)Core_flush_all, METH_NOARGS, "End every open flow (flush)."},
    {"flush_some", (PyCFunction)Core_flush_some, METH_O,
     "flush_some(n): end the next n flows of a final flush; returns how many are left"},
    {"take_records", (PyCFunction)Core_take_records, METH_NOARGS, "Record tuples since last call."},
    {"flow_info", (PyCFunction)Core_flow_info, METH_O, "flow_info(slot): an open flow's tuple"},
    {"flow_app", (PyCFunction)Core_flow_app, METH_O, "flow_app(slot): its label's index"},
    {"set_start_filter", (PyCFunction)Core_set_start_filter, METH_VARARGS,
     "set_start_filter(protos or None, ports, labels, udp_min): start events only for flows\n"
     "of these protocols with one of the ports (or a watched one) on either side, one of\n"
     "the label indexes, or (udp_min > 0) unknown-label UDP with both ports >= udp_min;\n"
     "None: every flow"},
    {"watch_port", (PyCFunction)Core_watch_port, METH_VARARGS,
     "watch_port(port, +1 or -1): count a port whose flows pass the start filter"},
    {"set_tap", (PyCFunction)Core_set_tap, METH_O,
     "set_tap(ports): collect (ts_ns, src, dst, proto, payload) of TCP/UDP payloads with\n"
     "one of the ports on either side (empty: none)"},
    {"take_taps", (PyCFunction)Core_take_taps, METH_NOARGS, "The tapped payloads since last call."},
    {"set_callback", (PyCFunction)Core_set_callback, METH_VARARGS,
     "set_callback(callback or None, packet_type=None): hook events; with packet_type, a\n"
     "frame the C decoder took comes as packet_type(ts_ns, wire_len, vlan, ip_version, src,\n"
     "dst, proto, sport, dport, tcp_flags, data, payload_off, payload_len, ip_len, encap,\n"
     "frames, icmp_type), else as a (ts_ns, linktype, data, wire_len) frame."},
    {"set_record_factory", (PyCFunction)Core_set_record_factory, METH_VARARGS,
     "set_record_factory(type, field_names, tcp_states, apps, app_sources, encaps, reasons,\n"
     "addr_text): take_records() then returns type(**fields) objects, labels looked up in\n"
     "the tuples and IPv4-mapped addresses formatted by addr_text(bytes), not tuples."},
    {"counters", (PyCFunction)Core_counters, METH_NOARGS, "Table counters as a dict."},
    {"app_counters", (PyCFunction)Core_app_counters, METH_NOARGS,
     "Per label: (packets_fwd, packets_rev, bytes_fwd, bytes_rev)."},
    {"memory", (PyCFunction)Core_memory, METH_NOARGS, "(bytes per slot, pool slots, hash slots)"},
    {"set_interest", (PyCFunction)Core_set_interest, METH_VARARGS,
     "set_interest(slot, bits): 1 every packet, 2 the end, 4 packets that are not RTP"},
    {"rtp_track", (PyCFunction)Core_rtp_track, METH_VARARGS,
     "rtp_track(slot, rates, max_streams): account RTP of this flow (or set its rates)"},
    {"rtp_untrack", (PyCFunction)Core_rtp_untrack, METH_O, "rtp_untrack(slot): forget its RTP"},
    {"rtp_streams", (PyCFunction)Core_rtp_streams, METH_O,
     "rtp_streams(slot) -> (fwd states, rev states, (dropped fwd, dropped rev))"},
    {NULL, NULL, 0, NULL}};

static int Core_init(Core *c, PyObject *args, PyObject *kw) {
    static char *kwlist[] = {"idle_ns", "active_ns", "max_flows", "scan_per_tick",
                             "classify_packets", "ports", "tunnel_ports", NULL};
    PyObject *idle, *ports, *tunnels;
    long long active;
    unsigned long max_flows, scan, classify_packets;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "O!LkkkOO", kwlist, &PyTuple_Type, &idle, &active,
                                     &max_flows, &scan, &classify_packets, &ports, &tunnels))
        return -1;
    if (PyTuple_GET_SIZE(idle) != NLANES || max_flows < 1 || max_flows >= NIL - 1 ||
        classify_packets < 1 || classify_packets > 63) {
        PyErr_SetString(PyExc_ValueError, "bad flow table parameters");
        return -1;
    }
    if (c->pool != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Core is initialised once");
        return -1;
    }
    for (int i = 0; i < NLANES; i++) {
        c->idle_ns[i] = PyLong_AsLongLong(PyTuple_GET_ITEM(idle, i));
        c->head[i] = c->tail[i] = NIL;
    }
    if (PyErr_Occurred()) return -1;
    c->active_ns = active;
    c->max_flows = (uint32_t)max_flows;
    c->scan_per_tick = (uint32_t)scan;
    c->classify_packets = (uint32_t)classify_packets;
    memset(c->port_tab, L_NONE, sizeof c->port_tab);
    PyObject *it = PyObject_GetIter(ports), *item;
    if (it == NULL) return -1;
    while ((item = PyIter_Next(it)) != NULL) {
        int proto, port, label;
        int ok = PyArg_ParseTuple(item, "iii", &proto, &port, &label);
        Py_DECREF(item);
        int t = proto == 6 ? 0 : proto == 17 ? 1 : proto == 132 ? 2 : -1;
        if (!ok || t < 0 || port < 0 || port > 65535 || label < 0 || label >= NLABELS) {
            Py_DECREF(it);
            if (!PyErr_Occurred()) PyErr_SetString(PyExc_ValueError, "bad port table entry");
            return -1;
        }
        c->port_tab[t][port] = (uint8_t)label;
    }
    Py_DECREF(it);
    if (PyErr_Occurred()) return -1;
    if (port_flags(tunnels, c->tunnel_port) < 0) return -1;
    c->pool_cap = c->max_flows < 1024 ? c->max_flows : 1024;
    c->pool = PyMem_RawMalloc((size_t)c->pool_cap * sizeof(flow_t));
    c->tab_mask = 2047;
    c->tab = PyMem_RawCalloc(c->tab_mask + 1, sizeof(bucket_t));
    c->records = PyList_New(0);
    if (c->pool == NULL || c->tab == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    if (c->records == NULL) return -1;
    c->free_head = NIL;
    Py_INCREF(Py_None);
    c->callback = Py_None;
    Py_INCREF(Py_None);
    c->packet_type = Py_None;
    return 0;
}

static void Core_dealloc(Core *c) {
    for (uint32_t i = 0; i < c->rtps_len; i++) rtp_free(c->rtps[i]);
    PyMem_RawFree(c->rtps);
    PyMem_RawFree(c->rtps_free);
    PyMem_RawFree(c->flush_order);
    PyMem_RawFree(c->pool);
    PyMem_RawFree(c->tab);
    Py_XDECREF(c->records);
    Py_XDECREF(c->callback);
    Py_XDECREF(c->packet_type);
    Py_XDECREF(c->record_type);
    Py_XDECREF(c->record_kwnames);
    for (int i = 0; i < 5; i++) Py_XDECREF(c->record_labels[i]);
    Py_XDECREF(c->record_addr_text);
    Py_XDECREF(c->taps);
    Py_TYPE(c)->tp_free((PyObject *)c);
}

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "trafficguard.fast._core.Core",
    .tp_doc = "Decoder and flow table for the common path; records as tuples.",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_new = PyType_GenericNew,
    .tp_init = (initproc)Core_init,
    .tp_dealloc = (destructor)Core_dealloc,
    .tp_methods = Core_methods,
};

/* ---- DNS analyzer helpers: ports of analyzers/dns_message.parse_question and
 * analyzers/dns_features.name_features (the references; tests/property/test_dns_props.py
 * checks both agree on hostile input). One call each per message instead of a dozen
 * Python-level steps. */
#define DNS_HEADER_LEN 12
#define DNS_MAX_POINTER_HOPS 16
#define DNS_MAX_NAME_LEN 255

static const char dns_question_doc[] =
    "dns_question(buf, off, end) -> (is_response, rcode, qtype, labels) | None:\n"
    "the header flags and first question of the message buf[off:end]; labels a tuple of\n"
    "bytes (as analyzers.dns_message.parse_question; None when malformed).";

static PyObject *dns_question(PyObject *Py_UNUSED(mod), PyObject *args) {
    Py_buffer view;
    Py_ssize_t off, end;
    if (!PyArg_ParseTuple(args, "y*nn", &view, &off, &end)) return NULL;
    if (off < 0 || end < off || end > view.len) {
        PyBuffer_Release(&view);
        PyErr_SetString(PyExc_ValueError, "dns_question: need 0 <= off <= end <= len(buf)");
        return NULL;
    }
    const uint8_t *m = (const uint8_t *)view.buf + off; /* pointers are message-relative */
    Py_ssize_t n = end - off;
    Py_ssize_t starts[DNS_MAX_NAME_LEN / 2 + 1];
    uint8_t lens[DNS_MAX_NAME_LEN / 2 + 1];
    int count = 0, total = 0, hops = 0;
    Py_ssize_t pos = DNS_HEADER_LEN, after = -1;
    if (n < DNS_HEADER_LEN || be16(m + 4) == 0) goto malformed;
    for (;;) {
        if (pos >= n) goto malformed;
        uint8_t len = m[pos];
        if (len == 0) {
            after = after < 0 ? pos + 1 : after;
            break;
        }
        if ((len & 0xC0) == 0xC0) {
            if (pos + 1 >= n || hops >= DNS_MAX_POINTER_HOPS) goto malformed;
            if (after < 0) after = pos + 2;
            pos = (Py_ssize_t)((len & 0x3F) << 8 | m[pos + 1]);
            hops++;
            continue;
        }
        if (len & 0xC0) goto malformed; /* extended label types */
        total += len + 1;
        if (pos + 1 + len > n || total > DNS_MAX_NAME_LEN) goto malformed;
        starts[count] = pos + 1; /* total <= 255 and len >= 1: at most 127 labels */
        lens[count++] = len;
        pos += 1 + len;
    }
    if (after + 4 > n) goto malformed;
    unsigned flags = be16(m + 2), qtype = be16(m + after);
    PyObject *labels = PyTuple_New(count);
    if (labels == NULL) goto fail;
    for (int i = 0; i < count; i++) {
        PyObject *b = PyBytes_FromStringAndSize((const char *)m + starts[i], lens[i]);
        if (b == NULL) {
            Py_DECREF(labels);
            goto fail;
        }
        PyTuple_SET_ITEM(labels, i, b);
    }
    PyBuffer_Release(&view);
    return Py_BuildValue("(OIIN)", flags & 0x8000 ? Py_True : Py_False, flags & 0x000F, qtype,
                         labels);
malformed:
    PyBuffer_Release(&view);
    Py_RETURN_NONE;
fail:
    PyBuffer_Release(&view);
    return NULL;
}

static const char dns_name_features_doc[] =
    "dns_name_features(labels, count) -> (longest, size, entropy, hash, histogram):\n"
    "what the analyzer keeps of the first count labels (as\n"
    "analyzers.dns_features.name_features; 1 <= count <= len(labels)).";

static PyObject *dns_name_features(PyObject *Py_UNUSED(mod), PyObject *args) {
    PyObject *labels;
    Py_ssize_t count;
    if (!PyArg_ParseTuple(args, "O!n", &PyTuple_Type, &labels, &count)) return NULL;
    if (count < 1 || count > PyTuple_GET_SIZE(labels)) {
        PyErr_SetString(PyExc_ValueError, "dns_name_features: need 1 <= count <= len(labels)");
        return NULL;
    }
    Py_ssize_t size = count - 1, longest = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *b = PyTuple_GET_ITEM(labels, i);
        if (!PyBytes_Check(b)) {
            PyErr_SetString(PyExc_TypeError, "dns_name_features: labels must be bytes");
            return NULL;
        }
        Py_ssize_t len = PyBytes_GET_SIZE(b);
        size += len;
        if (len > longest) longest = len;
    }
    /* sub = b".".join(labels[:count]).lower(): its hash is what the analyzer keeps */
    PyObject *sub = PyBytes_FromStringAndSize(NULL, size);
    if (sub == NULL) return NULL;
    uint8_t *out = (uint8_t *)PyBytes_AS_STRING(sub);
    Py_ssize_t counts[256] = {0}, n = 0;
    uint8_t order[256];
    int distinct = 0;
    for (Py_ssize_t i = 0; i < count; i++) {
        PyObject *b = PyTuple_GET_ITEM(labels, i);
        const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(b);
        Py_ssize_t len = PyBytes_GET_SIZE(b);
        if (i) *out++ = '.';
        for (Py_ssize_t j = 0; j < len; j++) {
            uint8_t c = p[j];
            if (c >= 'A' && c <= 'Z') c += 32;
            *out++ = c;
            if (c == '.') continue; /* the histogram is of sub.replace(b".", b"") */
            if (counts[c]++ == 0) order[distinct++] = c;
            n++;
        }
    }
    Py_hash_t h = PyObject_Hash(sub);
    Py_DECREF(sub);
    if (h == -1) return NULL;
    /* counts_entropy: the same terms, in first-occurrence order, in double precision */
    double total = 0.0;
    for (int i = 0; i < distinct; i++) {
        double p = (double)counts[order[i]] / (double)n;
        total += p * log2(p);
    }
    double entropy = n == 0 ? 0.0 : -total > 0.0 ? -total : 0.0;
    PyObject *histogram = PyDict_New();
    if (histogram == NULL) return NULL;
    for (int i = 0; i < distinct; i++) {
        PyObject *k = PyLong_FromLong(order[i]), *v = PyLong_FromSsize_t(counts[order[i]]);
        int bad = k == NULL || v == NULL || PyDict_SetItem(histogram, k, v) < 0;
        Py_XDECREF(k);
        Py_XDECREF(v);
        if (bad) {
            Py_DECREF(histogram);
            return NULL;
        }
    }
    return Py_BuildValue("(nndnN)", longest, size, entropy, (Py_ssize_t)h, histogram);
}

static const char b32_head_doc[] =
    "b32_head(digest) -> str: the first 22 characters of the lower-case base32 of a digest\n"
    "of at least 14 bytes (its first 110 bits): privacy.pseudonym._spell in one call.";

static PyObject *b32_head(PyObject *Py_UNUSED(mod), PyObject *digest) {
    static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz234567";
    if (!PyBytes_Check(digest)) {
        PyErr_SetString(PyExc_TypeError, "b32_head: digest must be bytes");
        return NULL;
    }
    if (PyBytes_GET_SIZE(digest) < 14) {
        PyErr_SetString(PyExc_ValueError, "b32_head: need at least 14 bytes");
        return NULL;
    }
    const uint8_t *p = (const uint8_t *)PyBytes_AS_STRING(digest);
    PyObject *text = PyUnicode_New(22, 127);
    if (text == NULL) return NULL;
    Py_UCS1 *out = PyUnicode_1BYTE_DATA(text);
    /* 14 bytes = 112 bits in, 22 x 5 = 110 bits out, most significant first; only the low
       13 bits of acc are read, so its high bits may wrap */
    uint64_t acc = 0;
    int bits = 0, n = 0;
    for (int i = 0; i < 14; i++) {
        acc = (acc << 8) | p[i];
        bits += 8;
        while (bits >= 5 && n < 22) {
            bits -= 5;
            out[n++] = (Py_UCS1)alphabet[(acc >> bits) & 31];
        }
    }
    return text;
}

static PyMethodDef module_methods[] = {
    {"b32_head", b32_head, METH_O, b32_head_doc},
    {"dns_question", dns_question, METH_VARARGS, dns_question_doc},
    {"dns_name_features", dns_name_features, METH_VARARGS, dns_name_features_doc},
    {"scan_block", scan_block, METH_VARARGS, scan_block_doc},
    {"rtp_replay", rtp_replay, METH_VARARGS,
     "rtp_replay(rates, max_streams, [(ts_ns, rev, rtp_bytes)]) -> (states, is_rtp flags):\n"
     "the RTP accounting of one flow on its own (differential tests)."},
    {NULL, NULL, 0, NULL}};

static struct PyModuleDef coremodule = {PyModuleDef_HEAD_INIT, "_core",
    "The compiled fast path (see trafficguard/fast/__init__.py).", -1, module_methods, NULL,
    NULL, NULL, NULL};

PyMODINIT_FUNC PyInit__core(void) {
    if (PyType_Ready(&CoreType) < 0) return NULL;
    PyObject *m = PyModule_Create(&coremodule);
    if (m == NULL) return NULL;
    PyObject *labels = PyTuple_New(NLABELS);
    if (labels == NULL) goto fail;
    for (int i = 0; i < NLABELS; i++) {
        PyObject *s = PyUnicode_FromString(LABELS[i]);
        if (s == NULL) { Py_DECREF(labels); goto fail; }
        PyTuple_SET_ITEM(labels, i, s);
    }
    if (PyModule_AddObject(m, "LABELS", labels) < 0) { Py_DECREF(labels); goto fail; }
    Py_INCREF(&CoreType);
    if (PyModule_AddObject(m, "Core", (PyObject *)&CoreType) < 0) {
        Py_DECREF(&CoreType);
        goto fail;
    }
    if (PyModule_AddIntConstant(m, "FLOW_SLOT_BYTES", (long)sizeof(flow_t)) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}
