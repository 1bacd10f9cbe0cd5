"""ABC that engravers read: abcm2ps reports no error on what midi2abc writes.

The test corpus is 32 works of music21's corpus (chorales, quartets, piano music, madrigals, folk
tunes), exported to MIDI by music21 and converted by ``abcscribe midi2abc`` in both layouts.

Run as a script to print abcm2ps's error count per file for the abcscribe on PYTHONPATH:

    PYTHONPATH=. python tests/test_abc_engraving.py [--layout voices|interleaved]
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from conftest import need_tool, run_cli  # noqa: E402

ENGRAVE_CORPUS = [
    "bach/bwv66.6", "bach/bwv7.7", "bach/bwv1.6", "bach/bwv10.7", "bach/bwv101.7",
    "bach/bwv102.7", "bach/bwv103.6", "bach/bwv104.6",
    "haydn/opus1no1/movement1", "haydn/opus1no1/movement3", "haydn/opus1no1/movement2",
    "mozart/k155/movement2", "mozart/k156/movement2", "mozart/k80/movement3",
    "mozart/k545/movement1_exposition",
    "beethoven/opus18no1/movement3",
    "joplin/maple_leaf_rag", "schumann_clara/polonaise_op1n1", "schubert/Lindenbaum",
    "handel/rinaldo/Lascia_chio_pianga", "corelli/opus3no1/1grave", "cpebach/h186",
    "monteverdi/madrigal.3.1", "monteverdi/madrigal.3.10",
    "leadSheet/fosterBrownHair", "liliuokalani/aloha_oe",
    "ryansMammoth/TerencesRambleReel.abc", "ryansMammoth/CentennialHornpipe.abc",
    "ryansMammoth/ComeUnderMyPladdieJig.abc", "ryansMammoth/BossJig.abc",
    "essenFolksong/altdeu10.abc", "airdsAirs/book1.abc",
]


def export_corpus(folder: Path) -> list[Path]:
    """Each work of ENGRAVE_CORPUS as ``folder/NN_name.mid`` (kept when already there)."""
    from music21 import corpus

    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, name in enumerate(ENGRAVE_CORPUS):
        path = folder / f"{i:02d}_{re.sub(r'[/.]', '_', name.replace('.abc', ''))}.mid"
        if not path.exists():
            warnings.filterwarnings("ignore")
            score = corpus.parse(name)
            if hasattr(score, "scores"):  # a collection of tunes: the first
                score = score.scores[0]
            tmp = path.with_suffix(".tmp")
            try:
                score.write("midi", fp=str(tmp))
            except Exception:  # repeats music21 cannot expand: played once through
                for m in score.recurse().getElementsByClass("Measure"):
                    m.leftBarline = m.rightBarline = None
                score.write("midi", fp=str(tmp))
            tmp.rename(path)
        paths.append(path)
    return paths


def abcm2ps_errors(abc: Path, warnings: bool = True) -> list[str]:
    """abcm2ps's error (and warning) lines for one ABC file (its output is thrown away)."""
    proc = subprocess.run(["abcm2ps", "-q", "-O", os.devnull, str(abc)],
                          capture_output=True, text=True)
    lines = (proc.stdout + proc.stderr).splitlines()
    pattern = r"\b(error|warning)\b" if warnings else r"\berror\b"
    return [ln for ln in lines if re.search(pattern, ln, re.I)]


def _cache_dir() -> Path:
    import music21

    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "abcscribe-tests" / f"music21-{music21.__version__}" / "engrave"


@pytest.fixture(scope="module")
def corpus_midi():
    return export_corpus(_cache_dir())


@pytest.mark.slow
@pytest.mark.parametrize("layout", ["voices", "interleaved"])
def test_abcm2ps_engraves_the_corpus_without_an_error(corpus_midi, tmp_path, layout):
    need_tool("abcm2ps")
    out = tmp_path / layout
    run_cli("midi2abc", *corpus_midi, "-o", out, "--layout", layout, check=True)
    errors = {}
    for mid in corpus_midi:
        errs = abcm2ps_errors(out / (mid.stem + ".abc"), warnings=False)
        if errs:
            errors[mid.stem] = errs[:3] + [f"... {len(errs)} in all"]
    assert not errors, errors


if __name__ == "__main__":
    import argparse
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--layout", default="voices")
    args = ap.parse_args()
    mids = export_corpus(_cache_dir())
    with tempfile.TemporaryDirectory() as d:
        run_cli("midi2abc", *mids, "-o", d, "--layout", args.layout, check=True)
        total = nfiles = 0
        for mid in mids:
            errs = abcm2ps_errors(Path(d) / (mid.stem + ".abc"))
            kinds = sorted({re.sub(r"^.*?(error|warning):\s*", "", e, flags=re.I)[:40]
                            for e in errs})
            print(f"{mid.stem:45s} {len(errs):6d}  {'; '.join(kinds[:4])}")
            total += len(errs)
            nfiles += bool(errs)
    print(f"{args.layout}: {total} errors/warnings in {nfiles} of {len(mids)} files")
