"""Argument parsers of ``grant``, ``keys``, ``audit``, ``evidence``, ``reveal``,
``retention`` and ``subject``, without their handlers.

Every ``trafficguard`` invocation builds the whole parser, so this module imports nothing
heavy: each handler lives in :mod:`trafficguard.escalation.commands` (cryptography,
pydantic, the audit log) and is imported only when its command runs.
"""

from __future__ import annotations

import argparse
import getpass
from collections.abc import Callable
from typing import Final

from trafficguard.escalation.names import PURPOSES, REVOCATION_FILE, SCOPES
from trafficguard.privacy.keynames import AUDIT_PUBLIC_NAME

DEFAULT_POLICY: Final = "config/policy.yaml"
DEFAULT_GRANTS: Final = "var/grants"
DEFAULT_KEYS: Final = "var/keys"
DEFAULT_AUDIT: Final = "var/audit.jsonl"
DEFAULT_EVIDENCE: Final = "var/evidence"
DEFAULT_STORE: Final = "var/trafficguard.db"

EXIT_EPILOG: Final = """\
exit status: 0 done, 1 refused or failed (the reason is printed), 2 usage or
configuration error. Paths not given come from the configuration (--config).
"""

REVEAL_DESCRIPTION: Final = """\
Re-identification by confirmation. There is no table from pseudonyms back to
identities: reveal computes the pseudonym of the target named by an active grant
that carries allow_reveal (and whose purpose has reveal_allowed in the policy),
under the epoch the pseudonym was made in, and answers match / no_match
(in_target_prefix for a prefix target without --candidate). The request is written
to the audit log (pseudonym.revealed) before the answer is printed; if that fails,
nothing is revealed.

example:
  trafficguard reveal u1.k5q2abcdefghijklmnopq --grant G-2026-0042
"""

RETENTION_DESCRIPTION: Final = """\
Delete stored records older than their retention period (privacy.retention:
flows, calls and registrations, RTP streams, alerts; other record kinds follow the
flow period) and evidence whose grant expired more than evidence_after_expiry_s ago.
Each purged table and grant is audited (retention.purged, evidence.purged) with
counts only. A running sensor ('trafficguard run') also purges at start and every
privacy.purge_interval_s by the wall clock; this command uses the wall clock (or --at).

example:
  trafficguard retention run --dry-run
"""

SUBJECT_DESCRIPTION: Final = """\
Subject access and erasure. The subscriber is named by number (or SIP user) or by
address inside home_networks; every form it may be stored under is computed (user
and address pseudonyms under every key epoch still held) and every table of the
store is searched: flows, calls, registrations, RTP streams, alerts and any other
record kind with an address or party column. Records derived from a matched call
(same call_id_hash, e.g. its RTP streams) belong to the subject too. The request is
audited (subject.exported / subject.erased, counts only) before anything is read
out or deleted.

examples:
  trafficguard subject export --number "+44 20 7946 0000" --out subject.json
  trafficguard subject erase --address 10.1.2.3
"""


_PATH_OPTIONS: Final = {
    "policy": ("--policy", "policy", "escalation.policy", DEFAULT_POLICY, "policy file"),
    "grants": ("--grants-dir", "grants_dir", "escalation.grants_dir", DEFAULT_GRANTS,
               "grants directory"),
    "keys": ("--keys-dir", "keys_dir", "privacy.keys_dir", DEFAULT_KEYS, "sensor key directory"),
    "audit": ("--audit-log", "audit_log", "escalation.audit_log", DEFAULT_AUDIT,
              "audit log file"),
    "evidence": ("--evidence-dir", "evidence_dir", "escalation.evidence_dir", DEFAULT_EVIDENCE,
                 "evidence directory"),
}  # fmt: skip


def fill_paths(args: argparse.Namespace) -> argparse.Namespace:
    """Paths not given as flags come from the configuration (``args.cfg``, loaded by
    ``cli.main``), else from the built-in defaults."""
    cfg = getattr(args, "cfg", None)
    for _flag, attr, key, default, _text in _PATH_OPTIONS.values():
        if getattr(args, attr, "") is None:
            value: object = default
            if cfg is not None:
                section, name = key.split(".")
                value = getattr(getattr(cfg, section), name)
            setattr(args, attr, str(value))
    return args


def _lazy(name: str) -> Callable[[argparse.Namespace], int]:
    """The handler ``commands.<name>``, imported when the command runs (not when the
    parser is built), called with the paths not given filled in by :func:`fill_paths`."""

    def run(args: argparse.Namespace) -> int:
        from trafficguard.escalation import commands  # noqa: PLC0415 (only when run)

        handler: Callable[[argparse.Namespace], int] = getattr(commands, name)
        return handler(fill_paths(args))

    run.__name__ = run.__qualname__ = name
    return run


def _common(p: argparse.ArgumentParser, *names: str) -> None:
    for n in names:
        flag, _attr, key, default, text = _PATH_OPTIONS[n]
        p.add_argument(
            flag, metavar="PATH", default=None, help=f"{text} (default: {key}, else {default})"
        )
    if "grants" in names:
        p.add_argument(
            "--revoked",
            metavar="PATH",
            help=f"revocation list (default GRANTS_DIR/{REVOCATION_FILE})",
        )


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``grant``, ``keys``, ``audit``, ``evidence``, ``reveal``, ``retention`` and
    ``subject``; each handler is bound by name (:func:`_lazy`) and imported when run."""
    gp = subparsers.add_parser("grant", help="create, sign, verify, list and revoke grants")
    gs = gp.add_subparsers(dest="grant_command", metavar="SUBCOMMAND", required=True)

    c = gs.add_parser("create", help="write an unsigned grant from flags")
    c.add_argument("--id", required=True)
    c.add_argument("--purpose", required=True, choices=PURPOSES)
    c.add_argument("--address")
    c.add_argument("--prefix")
    c.add_argument("--number")
    c.add_argument("--sip-uri")
    c.add_argument(
        "--scope",
        action="append",
        required=True,
        help=f"repeatable or comma-separated: {', '.join(SCOPES)}",
    )
    c.add_argument("--not-before", default="now", help="ISO time with timezone, or 'now'")
    c.add_argument("--duration", default="1h", help="e.g. 3600, 30m, 2h, 7d")
    c.add_argument("--expires", help="ISO time with timezone (instead of --duration)")
    c.add_argument("--byte-budget", type=int, required=True)
    c.add_argument("--case-reference", required=True)
    c.add_argument("--created-by", default=getpass.getuser())
    c.add_argument("--allow-reveal", action="store_true")
    c.add_argument("--out", metavar="PATH", help="default GRANTS_DIR/ID.yaml")
    _common(c, "grants")
    c.set_defaults(func=_lazy("cmd_grant_create"))

    s = gs.add_parser("sign", help="add an authorizer's signature to GRANT.sig")
    s.add_argument("grant", metavar="GRANT")
    s.add_argument("--authorizer", required=True)
    s.add_argument(
        "--key", required=True, metavar="PEM", help="the authorizer's Ed25519 private key"
    )
    _common(s, "policy")
    s.set_defaults(func=_lazy("cmd_grant_sign"))

    v = gs.add_parser("verify", help="check one grant; exit 0 if accepted")
    v.add_argument("grant", metavar="GRANT")
    v.add_argument("--at", help="evaluate at this ISO time instead of now")
    _common(v, "policy", "grants")
    v.set_defaults(func=_lazy("cmd_grant_verify"))

    ls = gs.add_parser("list", help="accepted and rejected grants with reasons")
    ls.add_argument("--at", help="evaluate at this ISO time instead of now")
    _common(ls, "policy", "grants")
    ls.set_defaults(func=_lazy("cmd_grant_list"))

    r = gs.add_parser("revoke", help="add a grant to the revocation list (audited)")
    r.add_argument("id", metavar="ID")
    r.add_argument("--reason", required=True)
    r.add_argument("--by", default=getpass.getuser())
    _common(r, "grants", "keys", "audit")
    r.set_defaults(func=_lazy("cmd_grant_revoke"))

    kp = subparsers.add_parser("keys", help="create or rotate the sensor's keys")
    ks = kp.add_subparsers(dest="keys_command", metavar="SUBCOMMAND", required=True)
    ki = ks.add_parser("init", help="create pseudonym and audit keys (0600, dir 0700)")
    ki.add_argument("--force", action="store_true", help="replace existing keys (breaks linkage)")
    _common(ki, "keys")
    ki.set_defaults(func=_lazy("cmd_keys_init"))
    kr = ks.add_parser("rotate", help="start a new pseudonym epoch")
    _common(kr, "keys")
    kr.set_defaults(func=_lazy("cmd_keys_rotate"))

    ap = subparsers.add_parser("audit", help="verify or show the audit log")
    asub = ap.add_subparsers(dest="audit_command", metavar="SUBCOMMAND", required=True)
    av = asub.add_parser("verify", help="check chain, checkpoints and head; exit 1 on tampering")
    av.add_argument(
        "--public-key",
        metavar="PEM",
        help=f"audit public key (default KEYS_DIR/{AUDIT_PUBLIC_NAME})",
    )
    av.add_argument(
        "--no-head",
        action="store_true",
        help="do not require the .head file (tail truncation then undetectable)",
    )
    _common(av, "keys", "audit")
    av.set_defaults(func=_lazy("cmd_audit_verify"))
    ash = asub.add_parser("show", help="print entries")
    ash.add_argument("--event", help="only this event")
    ash.add_argument("--since-seq", type=int, default=0)
    ash.add_argument("--json", action="store_true")
    _common(ash, "audit")
    ash.set_defaults(func=_lazy("cmd_audit_show"))

    ep = subparsers.add_parser("evidence", help="open sealed evidence; make analyst keys")
    es = ep.add_subparsers(dest="evidence_command", metavar="SUBCOMMAND", required=True)
    eo = es.add_parser("open", help="decrypt a grant's evidence to JSON lines (audited)")
    eo.add_argument("--grant", required=True)
    eo.add_argument("--key", required=True, metavar="PEM", help="analyst X25519 private key")
    eo.add_argument("--by", default=getpass.getuser())
    _common(eo, "evidence", "keys", "audit")
    eo.set_defaults(func=_lazy("cmd_evidence_open"))
    eg = es.add_parser("keygen", help="make an analyst X25519 key pair")
    eg.add_argument("--private", required=True, metavar="PEM")
    eg.add_argument("--public", required=True, metavar="PEM")
    eg.set_defaults(func=_lazy("cmd_evidence_keygen"))

    rv = subparsers.add_parser(
        "reveal",
        help="confirm who is behind a pseudonym, under an active grant (audited)",
        description=REVEAL_DESCRIPTION,
        epilog=EXIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rv.add_argument("pseudonym", metavar="PSEUDONYM", help="e.g. u1.k5q2... or a1.10.7.1.9")
    rv.add_argument("--grant", required=True, metavar="ID", help="active grant with allow_reveal")
    rv.add_argument("--candidate", metavar="ADDR", help="one address inside a prefix target")
    rv.add_argument("--by", default=getpass.getuser(), help="who asks (in the audit entry)")
    rv.add_argument("--at", help="evaluate the grant at this ISO time instead of now")
    _common(rv, "policy", "grants", "keys", "audit")
    rv.set_defaults(func=_lazy("cmd_reveal"))

    rp = subparsers.add_parser(
        "retention",
        help="purge records past their retention period",
        description=RETENTION_DESCRIPTION,
        epilog=EXIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    rs = rp.add_subparsers(dest="retention_command", metavar="SUBCOMMAND", required=True)
    rr = rs.add_parser("run", help="purge the store and expired evidence now (audited)")
    rr.add_argument("--store", metavar="PATH", help="SQLite store (default: store.sqlite.path)")
    rr.add_argument("--at", help="purge as of this ISO time instead of now")
    rr.add_argument("--dry-run", action="store_true", help="list the tables, delete nothing")
    _common(rr, "keys", "audit", "evidence")
    rr.set_defaults(func=_lazy("cmd_retention_run"))

    sp = subparsers.add_parser(
        "subject",
        help="export or erase every stored record of one subscriber (audited)",
        description=SUBJECT_DESCRIPTION,
        epilog=EXIT_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ss = sp.add_subparsers(dest="subject_command", metavar="SUBCOMMAND", required=True)
    for name, text in (
        ("export", "every record about the subscriber as JSON"),
        ("erase", "delete every record about the subscriber (and derived records)"),
    ):
        sc = ss.add_parser(name, help=text)
        who = sc.add_mutually_exclusive_group(required=True)
        who.add_argument("--number", metavar="N", help="phone number or SIP user/URI")
        who.add_argument("--address", metavar="A", help="subscriber IP address (in home_networks)")
        sc.add_argument("--store", metavar="PATH", help="SQLite store (default: store.sqlite.path)")
        sc.add_argument("--by", default=getpass.getuser(), help="who asks (in the audit entry)")
        if name == "export":
            sc.add_argument("--out", metavar="PATH", help="write the JSON here (default: stdout)")
        _common(sc, "keys", "audit")
        sc.set_defaults(func=_lazy("cmd_subject"))
