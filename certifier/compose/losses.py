"""Loss table (placeholder; the engine work fills it)."""
LOSSES: dict = {"least_squares": None}
