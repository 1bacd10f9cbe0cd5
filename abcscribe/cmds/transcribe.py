"""abcscribe transcribe (being built; see the open issue)."""

from abcscribe.core.errors import UserError


def main() -> None:
    """Not built yet."""
    raise UserError("'transcribe' is not built yet")
