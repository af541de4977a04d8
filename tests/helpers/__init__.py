"""Test helpers shared between test areas (import as helpers.<module>)."""
