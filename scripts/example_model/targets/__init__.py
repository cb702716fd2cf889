"""Targets of the example bundle (import path ``targets.prev``)."""
