"""Test helpers that production code reaches only when a test switches them on."""
