"""Reading the Prometheus text format in tests."""


def prometheus_samples(text: str) -> dict[str, float]:
    """Every sample line of an exposition, as {name with labels: value}."""
    found = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found
