"""Headwater ingestion gateway: receives, validates, dedupes and stores events (issue: gateway)."""
