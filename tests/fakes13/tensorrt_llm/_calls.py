"""Call log of the fake (this process only): (name, kwargs) tuples."""

CALLS: list[tuple[str, dict]] = []
