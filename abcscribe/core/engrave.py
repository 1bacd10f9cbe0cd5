"""ABC -> engraved score as SVG, through abcm2ps (the standard ABC engraver), when installed."""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from abcscribe.core.errors import UserError


def svg_pages(abc: str) -> list[str]:
    """The engraved pages of one ABC tune, each an SVG document (abcm2ps ``-v``)."""
    exe = shutil.which("abcm2ps")
    if exe is None:
        raise UserError("SVG needs abcm2ps (Debian/Ubuntu: apt-get install abcm2ps)")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "tune.abc"
        src.write_text(abc, encoding="utf-8")
        proc = subprocess.run([exe, "-q", "-v", "-O", str(Path(d) / "page"), str(src)],
                              capture_output=True, text=True, timeout=120)
        pages = sorted(Path(d).glob("page*.svg"))
        if not pages:
            detail = (proc.stderr or proc.stdout).strip().splitlines()
            raise UserError("abcm2ps could not engrave the ABC"
                            + (f": {detail[-1]}" if detail else ""))
        return [p.read_text(encoding="utf-8") for p in pages]


def write_svg(abc: str, path: Path) -> list[Path]:
    """Engrave ``abc`` to ``path`` (page 1) and ``<stem>.2.svg``... beside it; returns them."""
    from abcscribe.core.files import atomic_write

    out = []
    for i, page in enumerate(svg_pages(abc), 1):
        p = path if i == 1 else path.with_name(f"{path.stem}.{i}{path.suffix}")
        atomic_write(p, page)
        out.append(p)
    return out
