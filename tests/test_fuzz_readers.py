"""Fuzzing the Python readers (`inspect`, the bench's loader) with seeded damage to a real zipped
file: each case ends in a result or a one-line MTZError, never another exception or a hang.
`tools/checks/fuzz_readers.py` runs the same for longer."""

import json

import pytest

from converters import flatbuffer as fb
from converters.manifest import MANIFEST_METADATA
from mtz_mobile.bench.core import describe_model
from mtz_mobile.errors import MTZError

from fuzzing import fuzz

CASES = 400


def test_damaged_copies_of_a_zipped_file_end_in_a_result_or_one_line(deployed, tmp_path):
    tally = fuzz(deployed.model, CASES, seed=0, workdir=tmp_path)
    assert tally["ok"] + tally["refused"] == CASES
    assert tally["refused"] >= CASES // 4 and tally["ok"] > 0   # the damage reaches the structure, not only weights
    assert all(tally[kind] > 0 for kind in ("flip", "word", "truncate", "zero", "splice"))


@pytest.mark.parametrize("damage", [
    lambda m: m.pop("tasks"),
    lambda m: m["sharing"]["file"].__setitem__("weight_bytes", "many"),
    lambda m: m["tasks"][0].__setitem__("signature_key", 7),
    lambda m: m.__setitem__("joint", []),
])
def test_a_manifest_with_damaged_fields_is_refused_in_one_line(deployed, tmp_path, damage):
    model = fb.load_model(deployed.model)
    manifest = json.loads(fb.get_metadata(model, MANIFEST_METADATA))
    damage(manifest)
    fb.set_metadata(model, MANIFEST_METADATA, json.dumps(manifest).encode())
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(fb.serialize(model))
    with pytest.raises(MTZError, match=r"^the embedded manifest field .* is invalid: .*: convert the model again$"):
        describe_model(bad)
