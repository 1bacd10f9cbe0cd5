"""abcscribe midi2abc (being built; see the open issue)."""

from abcscribe.core.errors import UserError


def main() -> None:
    """Not built yet."""
    raise UserError("'midi2abc' is not built yet")
