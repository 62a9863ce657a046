"""Fixtures (owned by the helper working on this area)."""
