"""The library every command shares. No typer, no printing to stdout."""
