"""File names of the audit key in the sensor key directory (see ``privacy.keys``).

Kept apart from ``privacy.keys`` (which imports cryptography) so the command-line
parsers can name them in their help without that import cost; ``keys`` re-exports them.
"""

from __future__ import annotations

from typing import Final

AUDIT_PRIVATE_NAME: Final = "audit-signing.key"
AUDIT_PUBLIC_NAME: Final = "audit-signing.pub"
