"""Test-wide settings: EMF metrics are off (they print to stdout for CloudWatch) unless a test turns
them on; Powertools reads the variable on every flush."""

import os

os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
