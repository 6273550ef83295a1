"""Fake Google services that the real client libraries talk to in tests."""
