"""One error tree for trafficguard.

::

    TrafficguardError
     ├── ConfigError          bad configuration file: names file, key path and reason
     ├── CaptureError         unreadable/corrupt capture: names file and byte offset
     │    └── TruncatedCapture    file ends inside a record
     ├── DecodeError          one packet could not be decoded; carries a reason from
     │                        DECODE_REASONS. Caught in one place by the packet loop,
     │                        counted by reason, never raised out of the pipeline.
     ├── StoreError           a sink could not write (disk full, locked, schema mismatch)
     ├── PrivacyError         keys, pseudonyms, retention, subject rights (privacy/)
     │    ├── KeyFileError        key file/dir missing, malformed or too open
     │    │    └── KeysExistError     keys init would overwrite keys
     │    └── RetentionError      purge/export/erase named an unknown table or column
     └── EscalationError      policy, grants, the gate, evidence, audit (escalation/)
          ├── GrantError          a grant/signature/revocation file unreadable or invalid
          ├── RevealError         the grant does not permit this reveal
          ├── EvidenceError       evidence cannot be written or read
          │    ├── EvidenceKeyError    wrong analyst key
          │    └── EvidenceIntegrityError    tampered/corrupt (EvidenceTruncatedError)
          └── AuditError          the audit log cannot be read
               └── AuditWriteError     an entry was not written and synced: fail closed
                    └── AuditIntegrityError  the log fails verification; not appended to
    ConfigError also has PolicyError (escalation/policy.py): the policy file is invalid.

The subclasses live next to the code that raises them and subclass ``PrivacyError`` /
``EscalationError`` / ``ConfigError`` from here, so ``cli.main`` maps every one of them to
an exit status (ConfigError → 2, any other TrafficguardError → 1).

Rules: decoders raise DecodeError (or let struct.error/IndexError escape, which the
packet loop also counts); bad config, keys or grants stop start-up with a clear
message; a failed audit write raises (fail closed).
"""

from __future__ import annotations


class TrafficguardError(Exception):
    """Base of every error trafficguard raises on purpose."""


class ConfigError(TrafficguardError):
    """A configuration file is missing, unparsable or invalid."""

    def __init__(self, path: str, problems: list[str]) -> None:
        self.path = path
        self.problems = problems
        super().__init__(f"{path}: " + "; ".join(problems))


class CaptureError(TrafficguardError):
    """A capture file cannot be read any further."""

    def __init__(self, path: str, offset: int, reason: str) -> None:
        self.path = path
        self.offset = offset
        self.reason = reason
        super().__init__(f"{path}: {reason} at byte offset {offset}")


class TruncatedCapture(CaptureError):
    """The file ends inside a block or record header/body."""


class DecodeError(TrafficguardError):
    """One packet could not be decoded; ``reason`` is one of DECODE_REASONS."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


class StoreError(TrafficguardError):
    """A record sink failed to write or open its store."""


class PrivacyError(TrafficguardError):
    """Base of the privacy stage's errors (keys, retention, subject rights)."""


class EscalationError(TrafficguardError):
    """Base of the escalation stage's errors (grants, gate, evidence, audit, reveal)."""
