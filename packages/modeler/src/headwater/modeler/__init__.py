"""Headwater modeler: turns raw events into marts and checks them (issue: modeler)."""
