"""Fault scenarios (issue 16): an application tracking through the SDK into `headwater serve`
while one fault hits, then the ids `track()` returned against the ids stored."""
