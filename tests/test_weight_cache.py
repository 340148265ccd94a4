"""--xnnpack-cache file: XNNPACK's weight cache in a file beside the model. LiteRT alone does not
notice a cache built for other weights (it serves the old packed weights); the bench's stamp does,
and a stale, truncated or corrupted cache is deleted and rebuilt, after which the outputs are
exactly those of a load without any cache."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from mtz_mobile.bench import HostSettings, bench, render_markdown, validate_report, weight_cache
from mtz_mobile.bench.host import cold_load
from mtz_mobile.cli import main
from mtz_mobile.fileio import sha256_of


def outputs(path, cache: str = "", flags: int | None = None) -> np.ndarray:
    """The first signature's output for a fixed input, in this process (CompiledModel on the CPU,
    with the bench's options)."""
    from ai_edge_litert.compiled_model import CompiledModel

    from mtz_mobile.bench.probe import CompiledModelFile

    options = CompiledModelFile.options(1, cache, flags)
    model = CompiledModel.from_file(str(path), environment=CompiledModelFile.prepare(), options=options)
    key = list(model.get_signature_list())[0]
    index = model.get_signature_index(key)
    ins, outs = model.create_input_buffers(index), model.create_output_buffers(index)
    for buf, d in zip(ins, model.get_input_tensor_details(key).values()):
        shape = [max(1, int(s)) for s in d["shape"]]
        buf.write(np.linspace(-1, 1, int(np.prod(shape)), dtype=np.float32).reshape(shape))
    model.run_by_index(index, ins, outs)
    d = list(model.get_output_tensor_details(key).values())[0]
    out = outs[0].read(int(np.prod(d["shape"])), np.float32).copy()
    model.close()
    return out


@pytest.fixture
def two_layouts(deployed, tmp_path):
    """Two single-task files with the same layout and different weights (the baselines of a and b)."""
    a, b = deployed.baselines["a"], deployed.baselines["b"]
    model = tmp_path / "m.tflite"
    shutil.copyfile(a, model)
    return model, a, b


def test_litert_alone_serves_a_stale_cache(two_layouts):
    """Why the bench stamps its cache files: with ai-edge-litert 2.3.0, a cache built for other
    weights at the same places is used as it is. If this starts failing, LiteRT checks the weights
    itself and the stamp is only a second guard."""
    model, a, b = two_layouts
    cache = str(weight_cache.cache_file(model))
    expected_a = outputs(model)
    assert np.array_equal(outputs(model, cache), expected_a)  # builds the file
    shutil.copyfile(b, model)
    expected_b = outputs(model)
    assert not np.allclose(expected_a, expected_b)
    assert np.array_equal(outputs(model, cache), expected_a)  # b's file, a's packed weights


def _damage(kind: str, model, b):
    cache = weight_cache.cache_file(model)
    if kind == "model changed":
        shutil.copyfile(b, model)
    elif kind in (weight_cache.STALE, weight_cache.UNFINISHED):   # XNNPACK's own header fields, as LiteRT wrote it
        with open(cache, "r+b") as f:
            assert int.from_bytes(f.read(8), "little") == weight_cache.XNNPACK_HEADER_VERSION
            f.seek(weight_cache.XNNPACK_STALE_OFFSET if kind == weight_cache.STALE else 0)
            f.write(b"\x01" if kind == weight_cache.STALE else bytes(8))
    elif kind == "size changed (truncated?)":
        with open(cache, "r+b") as f:
            f.truncate(cache.stat().st_size // 2)
    else:  # same size, bytes in the packed weights changed
        with open(cache, "r+b") as f:
            f.seek(cache.stat().st_size // 2)
            f.write(b"\xff" * 4096)


@pytest.mark.parametrize("kind", ["model changed", "size changed (truncated?)", "contents changed (corrupted?)",
                                  weight_cache.STALE, weight_cache.UNFINISHED])
def test_a_stale_truncated_or_corrupted_cache_is_rebuilt_and_outputs_stay_exact(two_layouts, kind):
    model, _, b = two_layouts
    cache = weight_cache.cache_file(model)
    first = weight_cache.prepare([(model, sha256_of(model))], cold_load)
    assert [(c["found"], c["rebuilt"]) for c in first] == [("absent", True)] and cache.is_file()
    assert first[0]["cache_bytes"] == cache.stat().st_size > 0
    again = weight_cache.prepare([(model, sha256_of(model))], cold_load)
    assert [(c["found"], c["rebuilt"], c["cold_load_seconds"]) for c in again] == [("valid", False, None)]

    _damage(kind, model, b)
    stamp_before = weight_cache.stamp_file(model).read_text()
    rebuilt = weight_cache.prepare([(model, sha256_of(model))], cold_load)
    assert [(c["found"], c["rebuilt"]) for c in rebuilt] == [(kind, True)]
    # the file was written again by LiteRT and stamped again
    assert cache.is_file() and weight_cache.check(model) == "valid"
    if kind != "model changed":
        assert weight_cache.stamp_file(model).read_text() == stamp_before  # same model: same packed bytes
    assert np.array_equal(outputs(model, str(cache)), outputs(model))


def test_a_stamp_that_is_not_json_or_missing_means_rebuild(two_layouts):
    model, _, _ = two_layouts
    weight_cache.prepare([(model, sha256_of(model))], cold_load)
    weight_cache.stamp_file(model).write_text("{not json")
    assert weight_cache.check(model) == "stamp unreadable" and not weight_cache.cache_file(model).exists()
    weight_cache.prepare([(model, sha256_of(model))], cold_load)
    weight_cache.stamp_file(model).unlink()
    assert weight_cache.check(model) == "no stamp" and not weight_cache.cache_file(model).exists()


def test_bench_with_the_cache_in_a_file(deployed, tmp_path):
    """End to end: the first bench builds one cache file per model, the second finds them valid."""
    files = [deployed.model, *deployed.baselines.values()]
    for f in files:
        shutil.copyfile(f, tmp_path / f.name)
    model, base = tmp_path / deployed.model.name, [tmp_path / f.name for f in deployed.baselines.values()]
    found = []
    for _ in range(2):
        report = bench(model, base, settings=HostSettings(runtime="compiled", xnnpack_cache="file", runs=2,
                                                          switch_steps=2), progress=False)
        validate_report(report)
        s = report["settings"]
        assert (s["xnnpack_cache"], s["xnnpack_cache_path"], s["xnnpack_cache_chosen_by"]) == \
            ("file", "MODEL.xnnpack_cache", "user")
        cache_files = report["memory"]["weight_cache_files"]
        assert [c["cache_file"] for c in cache_files] == [str(p) + ".xnnpack_cache" for p in [model, *base]]
        found.append([(c["found"], c["rebuilt"]) for c in cache_files])
        assert all(m["xnnpack_cache"] == "file" for m in report["memory"]["measurements"])
        md = render_markdown(report)
        rows = md[md.index("All measurements"):].split("\n## ")[0].splitlines()
        assert sum(r.startswith("| zipped | ") for r in rows) == 5 and f"| `{cache_files[0]['cache_file']}` |" in md
    assert found == [[("absent", True)] * 3, [("valid", False)] * 3]


def test_the_interpreter_has_no_file_cache(deployed, tmp_path, capsys):
    code = main(["bench", str(deployed.model), "--xnnpack-cache", "file", "--out", str(tmp_path / "r")])
    lines = [l for l in capsys.readouterr().err.splitlines() if l.startswith("mtz-mobile")]
    assert code == 2 and len(lines) == 1 and "use --runtime compiled --xnnpack-cache file" in lines[0], lines


def test_the_probe_names_the_cache_file_as_the_contract_does():
    """The probe runs alone in a subprocess and imports nothing of ours: its copy of the suffix must agree."""
    from mtz_mobile.bench.probe import CACHE_SUFFIX
    from mtz_mobile.contract import XNNPACK_CACHE_SUFFIX

    assert CACHE_SUFFIX == XNNPACK_CACHE_SUFFIX
