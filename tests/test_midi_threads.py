"""Reading MIDI from several threads at once (mkqa's workers do)."""

import subprocess
import sys

SCRIPT = r"""
import threading
from abcscribe.core.midi import read_midi, write_midi
from abcscribe.core.notes import Note, Piece, Voice

data = write_midi(Piece(voices=[Voice(notes=[Note(60, 0, 960)])]))
start = threading.Barrier(16)
got = []

def work():
    start.wait()
    try:
        got.append(read_midi(data).note_count)
    except Exception as e:
        got.append(repr(e))

threads = [threading.Thread(target=work) for _ in range(16)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print(got)
"""


def test_threads_reading_midi_at_once_each_get_the_parser_loaded_once():
    # the first reads in a fresh process race to load symusic's C++ module: it was loaded
    # twice (its types registered twice) and a thread could see it half initialised, which
    # turned good files into "corrupt MIDI (... no attribute 'ScoreTick')" error records
    p = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert p.stdout.strip() == str([1] * 16)
    assert "already registered" not in p.stderr
