"""abcscribe abc2midi (being built; see the open issue)."""

from abcscribe.core.errors import UserError


def main() -> None:
    """Not built yet."""
    raise UserError("'abc2midi' is not built yet")
