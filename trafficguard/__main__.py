"""Allow ``python -m trafficguard``."""

from trafficguard.cli import main

raise SystemExit(main())
