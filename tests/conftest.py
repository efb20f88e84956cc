"""Shared test configuration."""

import os

# Nothing may download at run time, in tests least of all.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("ANONYMIZED_TELEMETRY", "False")
