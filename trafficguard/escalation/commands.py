"""CLI commands for grants, keys, the audit log, evidence, reveal, retention and subjects.

Their parsers are in :mod:`trafficguard.escalation.cli_args` (``register(subparsers)``
adds ``grant``, ``keys``, ``audit``, ``evidence``, ``reveal``, ``retention`` and
``subject`` to the main parser), which imports this module only when one of them runs.
Each command function takes the parsed namespace, prints clear errors to stderr and
returns an exit status (0 ok, 1 rejected/failed, 2 usage or configuration error).
This is the only layer that reads wall-clock time: it becomes the ``now_ns`` (and audit
``ts_ns``) passed to the library.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import json
import re
import sqlite3
import sys
import time
from pathlib import Path
from typing import Final, TextIO

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from trafficguard.errors import ConfigError, TrafficguardError
from trafficguard.escalation.audit import AuditEvent, AuditLog, read_entries, verify_audit
from trafficguard.escalation.cli_args import (  # noqa: F401 (re-exported from here too)
    DEFAULT_AUDIT,
    DEFAULT_EVIDENCE,
    DEFAULT_GRANTS,
    DEFAULT_KEYS,
    DEFAULT_POLICY,
    DEFAULT_STORE,
    fill_paths,
    register,
)
from trafficguard.escalation.evidence import (
    generate_analyst_keypair,
    load_x25519_private,
    open_grant_evidence,
    purge_expired,
    segments,
)
from trafficguard.escalation.grants import (
    REVOCATION_FILE,
    GrantError,
    GrantRejection,
    GrantSignature,
    GrantStore,
    LoadedGrant,
    append_revocation,
    check_grant_file,
    load_grant,
    load_revocations,
    load_signatures,
    parse_grant,
    sign_grant,
    to_ns,
    write_signatures,
)
from trafficguard.escalation.policy import load_policy
from trafficguard.escalation.reveal import reveal
from trafficguard.privacy.keys import (
    AUDIT_PUBLIC_NAME,
    init_keys,
    load_audit_public_key,
    load_keys,
    rotate_pseudonym_key,
)
from trafficguard.privacy.pseudonym import Pseudonymizer
from trafficguard.privacy.retention import (
    RetentionError,
    RetentionPolicy,
    purge,
    subject_identifiers,
)
from trafficguard.privacy.subject import erase_subject_rows, export_subject_rows, retention_plan

EXIT_OK: Final = 0
EXIT_FAILURE: Final = 1
EXIT_USAGE: Final = 2

_DURATION_RE: Final = re.compile(r"^(\d+)([smhd]?)$")
_UNIT_S: Final = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _err(msg: str) -> None:
    print(f"trafficguard: {msg}", file=sys.stderr)


def _now_ns() -> int:
    return time.time_ns()


def _parse_time(text: str) -> dt.datetime:
    """ISO 8601 with timezone (``Z`` accepted) or ``now``."""
    if text == "now":
        return dt.datetime.now(dt.UTC).replace(microsecond=0)
    value = dt.datetime.fromisoformat(text)
    if value.tzinfo is None:
        raise ValueError(f"{text!r} needs a timezone, e.g. 2026-11-23T09:00:00Z")
    return value


def _parse_duration(text: str) -> int:
    m = _DURATION_RE.match(text.strip())
    if not m:
        raise ValueError(f"{text!r}: use seconds or N[smhd], e.g. 2h")
    return int(m.group(1)) * _UNIT_S[m.group(2)]


def _open_audit(args: argparse.Namespace) -> AuditLog:
    keys = load_keys(args.keys_dir)
    return AuditLog(args.audit_log, keys.audit_private)


def _revoked_path(args: argparse.Namespace) -> Path:
    return (
        Path(args.revoked)
        if getattr(args, "revoked", None)
        else Path(args.grants_dir) / REVOCATION_FILE
    )


def _at_ns(args: argparse.Namespace) -> int:
    at = getattr(args, "at", None)
    if not at:
        return _now_ns()
    return to_ns(_parse_time(at))


# ---------------------------------------------------------------- grant


def cmd_grant_create(args: argparse.Namespace) -> int:
    """Write an unsigned grant template from flags; refuses to overwrite."""
    targets = [
        (k, v)
        for k, v in (
            ("address", args.address),
            ("prefix", args.prefix),
            ("number", args.number),
            ("sip_uri", args.sip_uri),
        )
        if v
    ]
    if len(targets) != 1:
        _err("grant create: give exactly one of --address, --prefix, --number, --sip-uri")
        return EXIT_USAGE
    try:
        not_before = _parse_time(args.not_before)
        if args.expires:
            expires = _parse_time(args.expires)
        else:
            expires = not_before + dt.timedelta(seconds=_parse_duration(args.duration))
    except ValueError as err:
        _err(f"grant create: {err}")
        return EXIT_USAGE
    scopes = [s for item in args.scope for s in item.split(",") if s]
    data = {
        "id": args.id,
        "purpose": args.purpose,
        "target": {"kind": targets[0][0], "value": targets[0][1]},
        "scopes": scopes,
        "not_before": not_before,
        "expires": expires,
        "byte_budget": args.byte_budget,
        "case_reference": args.case_reference,
        "created_by": args.created_by,
        "allow_reveal": args.allow_reveal,
    }
    try:
        grant = parse_grant(data, "grant create")
    except GrantError as err:
        _err(str(err))
        return EXIT_USAGE
    out = Path(args.out) if args.out else Path(args.grants_dir) / f"{grant.id}.yaml"
    if out.exists():
        _err(f"{out}: exists; refusing to overwrite")
        return EXIT_FAILURE
    doc = grant.model_dump(mode="json")
    text = (
        "# trafficguard grant: sign with 'trafficguard grant sign' by enough authorizers.\n"
        "# Any change after signing invalidates every signature.\n"
        + yaml.safe_dump(doc, sort_keys=False)
    )
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "x", encoding="utf-8") as f:
            f.write(text)
    except OSError as err:
        _err(f"{out}: cannot write: {err.strerror or err}")
        return EXIT_FAILURE
    print(f"{out}: grant {grant.id} written (unsigned)")
    return EXIT_OK


def _load_signing_key(path: str) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), None)
    except (OSError, ValueError, TypeError):
        raise GrantError(
            f"{path}: cannot load private key (missing, encrypted or not PEM)"
        ) from None
    if not isinstance(key, Ed25519PrivateKey):
        raise GrantError(f"{path}: not an Ed25519 private key")
    return key


def cmd_grant_sign(args: argparse.Namespace) -> int:
    """Add (or replace) one authorizer's signature in ``<grant>.sig``."""
    try:
        grant = load_grant(args.grant)
        key = _load_signing_key(args.key)
        policy = load_policy(args.policy)
        auth = policy.authorizer(args.authorizer)
        if auth is None:
            _err(f"{args.policy}: no authorizer {args.authorizer!r}")
            return EXIT_FAILURE
        if auth.key.public_bytes_raw() != key.public_key().public_bytes_raw():
            _err(f"{args.key}: not the key of authorizer {args.authorizer!r} in {args.policy}")
            return EXIT_FAILURE
        sigs: list[GrantSignature] = [
            s for s in load_signatures(args.grant) if s.authorizer != args.authorizer
        ]
        sigs.append(sign_grant(grant, args.authorizer, key))
        sig_path = write_signatures(args.grant, sigs)
    except ConfigError as err:
        _err(str(err))
        return EXIT_USAGE
    except (GrantError, OSError) as err:
        _err(str(err))
        return EXIT_FAILURE
    print(f"{sig_path}: signed by {args.authorizer} ({len(sigs)} signature(s))")
    return EXIT_OK


def _describe(result: LoadedGrant | GrantRejection) -> str:
    if isinstance(result, LoadedGrant):
        g = result.grant
        return (
            f"accept {g.id}: {g.purpose}, scopes {','.join(g.scopes)}, until "
            f"{g.expires.isoformat()}, approvers {', '.join(result.approvers)}"
        )
    return f"reject {result.grant_id or result.path}: {result.reason}: {result.detail}"


def cmd_grant_verify(args: argparse.Namespace) -> int:
    """Print accept/reject (with reason) for one grant; exit 0 if accepted, else 1."""
    try:
        policy = load_policy(args.policy)
        revoked = load_revocations(_revoked_path(args))
        now_ns = _at_ns(args)
    except ConfigError as err:
        _err(str(err))
        return EXIT_USAGE
    except (GrantError, ValueError) as err:
        _err(str(err))
        return EXIT_USAGE
    result = check_grant_file(args.grant, policy, now_ns, set(revoked))
    print(_describe(result))
    return EXIT_OK if isinstance(result, LoadedGrant) else EXIT_FAILURE


def cmd_grant_list(args: argparse.Namespace) -> int:
    """List the grants directory: accepted (active now) and rejected with reasons."""
    try:
        policy = load_policy(args.policy)
        now_ns = _at_ns(args)
        store = GrantStore.load_dir(
            args.grants_dir, policy, now_ns, load_revocations(_revoked_path(args))
        )
    except ConfigError as err:
        _err(str(err))
        return EXIT_USAGE
    except (GrantError, ValueError) as err:
        _err(str(err))
        return EXIT_FAILURE
    for g in sorted(store.accepted.values(), key=lambda x: x.id):
        print(_describe(g))
    for r in store.rejected:
        print(_describe(r))
    if not store.accepted and not store.rejected:
        print("(no grants)")
    return EXIT_OK


def cmd_grant_revoke(args: argparse.Namespace) -> int:
    """Add a grant to the revocation list, then audit ``grant.revoked``."""
    now_ns = _now_ns()
    path = _revoked_path(args)
    try:
        append_revocation(
            path, args.id, args.reason, dt.datetime.now(dt.UTC).replace(microsecond=0)
        )
    except (GrantError, OSError) as err:
        _err(str(err))
        return EXIT_FAILURE
    print(f"{path}: grant {args.id} revoked; a running daemon drops it on reload (SIGHUP)")
    try:
        audit = _open_audit(args)
        try:
            audit.append(
                "grant.revoked", now_ns, {"grant": args.id, "reason": args.reason, "by": args.by}
            )
        finally:
            audit.close(now_ns)
    except TrafficguardError as err:
        _err(f"revocation recorded but the audit entry failed: {err}")
        return EXIT_FAILURE
    return EXIT_OK


# ---------------------------------------------------------------- keys


def cmd_keys_init(args: argparse.Namespace) -> int:
    try:
        keys = init_keys(args.keys_dir, force=args.force)
    except TrafficguardError as err:
        _err(str(err))
        return EXIT_FAILURE
    print(
        f"{args.keys_dir}: keys created (pseudonym epoch {keys.current_epoch}, audit key "
        f"{AUDIT_PUBLIC_NAME} — give that public key to whoever verifies the audit log)"
    )
    return EXIT_OK


def cmd_keys_rotate(args: argparse.Namespace) -> int:
    try:
        epoch = rotate_pseudonym_key(args.keys_dir)
    except TrafficguardError as err:
        _err(str(err))
        return EXIT_FAILURE
    print(f"{args.keys_dir}: pseudonym epoch {epoch} created; restart or reload to use it")
    return EXIT_OK


# ---------------------------------------------------------------- audit


def cmd_audit_verify(args: argparse.Namespace) -> int:
    """Verify chain, checkpoints and head; print every problem, exit 1 on any."""
    try:
        pub = (
            load_audit_public_key(args.public_key)
            if args.public_key
            else load_audit_public_key(Path(args.keys_dir) / AUDIT_PUBLIC_NAME)
        )
        report = verify_audit(args.audit_log, pub, require_head=not args.no_head)
    except TrafficguardError as err:
        _err(str(err))
        return EXIT_USAGE
    for note in report.notes:
        print(f"note: {note}")
    for p in report.problems:
        seq = f"entry {p.seq}" if p.seq is not None else "entry ?"
        print(f"{args.audit_log}:{p.line}: {p.kind}: {seq}: {p.message}")
    if report.ok:
        print(
            f"{args.audit_log}: OK: {report.entries} entries, {report.checkpoints} checkpoints, "
            f"last checkpoint at entry {report.last_checkpoint_seq}, "
            f"{report.unsigned_tail} entries after it covered by the head file"
        )
        return EXIT_OK
    print(f"{args.audit_log}: FAILED: {len(report.problems)} problem(s)")
    return EXIT_FAILURE


def cmd_audit_show(args: argparse.Namespace, out: TextIO | None = None) -> int:
    stream = out or sys.stdout
    try:
        for e in read_entries(args.audit_log):
            seq = e["seq"]
            if args.event and e["event"] != args.event:
                continue
            if isinstance(seq, int) and seq < args.since_seq:
                continue
            if args.json:
                print(json.dumps(e, sort_keys=True), file=stream)
                continue
            ts = e["ts_ns"]
            when = (
                dt.datetime.fromtimestamp(ts / 1e9, dt.UTC).isoformat(timespec="seconds")
                if isinstance(ts, int)
                else "?"
            )
            details = e["details"]
            text = (
                " ".join(f"{k}={v}" for k, v in sorted(details.items()))
                if isinstance(details, dict) and e["event"] != "checkpoint"
                else ""
            )
            print(f"{seq:>6} {when} {e['event']:<20} {text}", file=stream)
    except OSError as err:
        _err(f"{args.audit_log}: cannot read: {err.strerror or err}")
        return EXIT_FAILURE
    return EXIT_OK


# ---------------------------------------------------------------- evidence


def cmd_evidence_open(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """Audit ``evidence.opened`` first (fail closed), then decrypt a grant's evidence
    to JSON lines (payload base64)."""
    now_ns = _now_ns()
    try:
        key = load_x25519_private(args.key)
        files = segments(args.evidence_dir, args.grant)
        if not files:
            _err(f"{args.evidence_dir}: no evidence for grant {args.grant}")
            return EXIT_FAILURE
        audit = _open_audit(args)
        try:
            audit.append(
                "evidence.opened", now_ns, {"grant": args.grant, "files": len(files), "by": args.by}
            )
        finally:
            audit.close(now_ns)
    except TrafficguardError as err:
        _err(f"{err}; evidence not opened")
        return EXIT_FAILURE
    stream = out or sys.stdout
    try:
        n = 0
        for item in open_grant_evidence(args.evidence_dir, args.grant, key):
            print(
                json.dumps(
                    {
                        "kind": item.kind,
                        "ts_ns": item.ts_ns,
                        "payload_b64": base64.b64encode(item.payload).decode("ascii"),
                    }
                ),
                file=stream,
            )
            n += 1
    except TrafficguardError as err:
        _err(f"after {n} item(s): {err}")
        return EXIT_FAILURE
    print(f"{n} item(s) from {len(files)} file(s)", file=sys.stderr)
    return EXIT_OK


def cmd_evidence_keygen(args: argparse.Namespace) -> int:
    try:
        generate_analyst_keypair(args.private, args.public)
    except TrafficguardError as err:
        _err(str(err))
        return EXIT_FAILURE
    print(f"{args.public}: give this public key to the sensor; keep {args.private} off it")
    return EXIT_OK


# ---------------------------------------------------------------- reveal


def _pseudonymizer(args: argparse.Namespace) -> Pseudonymizer:
    keys = load_keys(args.keys_dir, with_private=False)
    cfg = getattr(args, "cfg", None)
    homes = cfg.home_networks if cfg is not None else ()
    return Pseudonymizer(keys.pseudonym_keys, homes)


def cmd_reveal(args: argparse.Namespace) -> int:
    """Confirm whether PSEUDONYM belongs to an active grant's target (audited first)."""
    now_ns = _at_ns(args)
    try:
        policy = load_policy(args.policy)
        store = GrantStore.load_dir(
            args.grants_dir, policy, now_ns, load_revocations(_revoked_path(args))
        )
    except ConfigError as err:
        _err(str(err))
        return EXIT_USAGE
    except GrantError as err:
        _err(str(err))
        return EXIT_FAILURE
    grant = store.accepted.get(args.grant)
    if grant is None:
        why = next((r for r in store.rejected if r.grant_id == args.grant), None)
        reason = f"{why.reason}: {why.detail}" if why else "no such grant"
        _err(f"reveal: grant {args.grant} is not active ({reason}); nothing revealed")
        return EXIT_FAILURE
    try:
        pz = _pseudonymizer(args)
        audit = _open_audit(args)
        try:
            result = reveal(
                args.pseudonym, grant, pz, now_ns, audit,
                requested_by=args.by, candidate=args.candidate,
            )  # fmt: skip
        finally:
            audit.close(now_ns)
    except TrafficguardError as err:
        _err(f"reveal: {err}; nothing revealed")
        return EXIT_FAILURE
    if result.outcome == "match":
        print(f"{args.pseudonym}: match: {result.identity} (epoch {result.epoch})")
        return EXIT_OK
    print(f"{args.pseudonym}: {result.outcome} (epoch {result.epoch})")
    return EXIT_FAILURE if result.outcome == "no_match" else EXIT_OK


# ---------------------------------------------------------------- retention, subjects


def _store_path(args: argparse.Namespace) -> Path:
    if args.store:
        return Path(args.store)
    cfg = getattr(args, "cfg", None)
    return Path(cfg.store.sqlite.path) if cfg is not None else Path(DEFAULT_STORE)


def _open_store(path: Path) -> sqlite3.Connection:
    if not path.is_file():
        raise RetentionError(f"{path}: no such store file")
    return sqlite3.connect(path, timeout=10.0)  # 'with conn' commits each purge/erase


def _retention(args: argparse.Namespace) -> RetentionPolicy:
    cfg = getattr(args, "cfg", None)
    if cfg is None:
        return RetentionPolicy()
    return RetentionPolicy.model_validate(cfg.privacy.retention.model_dump())


def cmd_retention_run(args: argparse.Namespace) -> int:
    """Purge records past their retention period and evidence past expiry + retention."""
    now_ns = _at_ns(args)
    retention = _retention(args)
    path = _store_path(args)
    try:
        audit = _open_audit(args)
    except TrafficguardError as err:
        _err(f"{err}; nothing purged (every purge is audited)")
        return EXIT_FAILURE
    total = 0
    try:
        if path.is_file():
            conn = _open_store(path)
            try:
                for table, column, rtype in retention_plan(conn):
                    cutoff = retention.cutoff_ns(rtype, now_ns)
                    n = 0 if args.dry_run else purge(conn, table, column, cutoff)
                    total += n
                    print(f"{table}: {n} record(s) older than {rtype} retention purged")
                    if n:
                        audit.append(
                            "retention.purged",
                            now_ns,
                            {"table": table, "rows": n, "record_type": rtype,
                             "cutoff_ns": cutoff},
                        )  # fmt: skip
            finally:
                conn.close()
        else:
            print(f"{path}: no store; no records to purge")
        if not args.dry_run:
            gone = purge_expired(
                args.evidence_dir, [], retention.evidence_after_expiry_s, now_ns, audit
            )
            print(f"evidence: {len(gone)} grant(s) purged")
    except (TrafficguardError, sqlite3.Error) as err:
        _err(f"retention run: {err}")
        return EXIT_FAILURE
    finally:
        audit.close(now_ns)
    print(f"{total} record(s) purged")
    return EXIT_OK


def _subject_values(args: argparse.Namespace) -> tuple[str, list[str]]:
    pz = _pseudonymizer(args)
    if args.number:
        kind = "number"
        values = subject_identifiers(pz, numbers=[args.number])
    else:
        kind = "address"
        if not pz.is_subscriber(args.address):
            raise RetentionError(
                f"{args.address} is not inside home_networks: not a subscriber address"
            )
        values = subject_identifiers(pz, addresses=[args.address])
    return kind, values


def cmd_subject(args: argparse.Namespace, out: TextIO | None = None) -> int:
    """``subject export`` (JSON to stdout/--out) or ``subject erase``; audited first."""
    now_ns = _now_ns()
    erase = args.subject_command == "erase"
    path = _store_path(args)
    try:
        kind, values = _subject_values(args)
        conn = _open_store(path)
    except (TrafficguardError, ValueError) as err:
        _err(f"subject {args.subject_command}: {err}")
        return EXIT_FAILURE
    try:
        audit = _open_audit(args)
    except TrafficguardError as err:
        conn.close()
        _err(f"{err}; nothing exported or erased (every access is audited)")
        return EXIT_FAILURE
    try:
        rows = export_subject_rows(conn, values)
        counts = {t: len(r) for t, r in rows.items()}
        event: AuditEvent = "subject.erased" if erase else "subject.exported"
        audit.append(
            event,
            now_ns,
            {"subject_kind": kind, "rows": sum(counts.values()),
             "tables": [f"{t}:{n}" for t, n in sorted(counts.items()) if n], "by": args.by},
        )  # fmt: skip
        if erase:
            erased = erase_subject_rows(conn, values)
            for t, n in sorted(erased.items()):
                print(f"{t}: {n} record(s) erased")
            print(f"{sum(erased.values())} record(s) erased")
            return EXIT_OK
        doc = {"subject_kind": kind, "identifiers": values, "records": rows}
        text = json.dumps(doc, indent=2, sort_keys=True, default=str)
        if args.out:
            Path(args.out).write_text(text + "\n", encoding="utf-8")
        else:
            print(text, file=out or sys.stdout)
        print(f"{sum(counts.values())} record(s) exported", file=sys.stderr)
        return EXIT_OK
    except (TrafficguardError, sqlite3.Error, OSError) as err:
        _err(f"subject {args.subject_command}: {err}")
        return EXIT_FAILURE
    finally:
        audit.close(now_ns)
        conn.close()
