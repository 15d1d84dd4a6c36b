"""Test helpers, one module per area (``from helpers.support import …``; tests/ is on pytest's pythonpath)."""
