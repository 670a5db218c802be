"""Scripts that run in a peer's own Python (``python -m sar.bench ... --peer-python <python>``), never imported by
sar: each is a standalone file that only needs that peer's packages (mmpose 1.3.2 and its dependencies)."""
