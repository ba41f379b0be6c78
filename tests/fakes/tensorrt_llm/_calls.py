"""Call log shared by the fake modules (this process only; worker processes log their own)."""

CALLS: list[tuple[str, dict]] = []


def record(name: str, **kwargs) -> None:
    CALLS.append((name, kwargs))
