"""The Android demo against the Python side, without an Android build: what the Kotlin reads
from the manifest exists in the schema where it reads it, its names equal mtz_mobile/contract.py,
its flatbuffer metadata reader (ported line by line below) finds the manifest in a real
converted file, and tools/export_android_assets.py writes what the app reads."""

from __future__ import annotations

import hashlib
import importlib.util
import inspect
import json
import re
import struct
from pathlib import Path

import jsonschema
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from converters import convert_zip
from converters import flatbuffer as fb
from mtz_mobile import contract as names
from converters.manifest import MANIFEST_FORMAT, load_schema, read_manifest
from mtz_mobile.graph import keras_io
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper import ZipConfig, zip_networks

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "android_demo"
APP = DEMO / "app"
SRC = APP / "src" / "main" / "java" / "dev" / "mtzmobile" / "demo"
ANDROID_TEST = APP / "src" / "androidTest" / "java" / "dev" / "mtzmobile" / "demo"
KOTLIN = {p.name: p.read_text() for p in sorted(SRC.glob("*.kt"))}


def _load_tool():
    spec = importlib.util.spec_from_file_location("export_android_assets", REPO / "tools" / "export_android_assets.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


tool = _load_tool()


@pytest.fixture(scope="module")
def converted(tmp_path_factory, small_models, fmnist):
    """A real zip of the two small models, converted with the joint signature."""
    root = tmp_path_factory.mktemp("android")
    read = keras_io.read_model
    chains = {n: read(p) for n, p in zip(("a", "b"), small_models)}
    cfg = ZipConfig(shared=["all"], calibration_samples=500,
                    retrain=RetrainSettings(iterations=0, batch_size=64, learning_rate=1e-3))
    zip_networks(chains, {"a": fmnist, "b": fmnist}, cfg, root / "zipped", progress=False)
    return convert_zip(root / "zipped", root / "model.tflite", joint=True).path


# --- (a) the converter's manifest is what the schema says --------------------------------------

def test_converted_manifest_validates_against_the_schema(converted):
    manifest = read_manifest(fb.load_model(converted))
    jsonschema.validate(manifest, load_schema())
    assert manifest["joint"] is not None and manifest["joint"]["signature_key"] == names.JOINT_KEY
    for task in manifest["tasks"]:
        assert task["input"]["name"] == names.INPUT_NAME and task["output"]["name"] == names.OUTPUT_NAME
        assert task["signature_key"] == task["name"]


# --- (b) every manifest field the Kotlin reads, resolved in the schema ---------------------------

# Each parse function of Manifest.kt and the schema object it reads.
PARSE_FUNCTIONS = {
    "parseManifest": "#",
    "parseTask": "#/$defs/task",
    "parseTensor": "#/$defs/tensor",
    "parsePreprocessing": "#/$defs/task/properties/preprocessing",
    "parseJoint": "#/properties/joint/oneOf/1",
    "parseJointOutput": "#/properties/joint/oneOf/1/properties/outputs/items",
    "parseSharing": "#/properties/sharing",
    "parseFileBytes": "#/properties/sharing/properties/file",
}
JSON_READ = re.compile(r"\.(get|opt)(String|Int|Long|Double|Boolean|JSONObject|JSONArray)\(\"([^\"]*)\"")
JSON_PROBE = re.compile(r"\.(has|isNull)\(\"([^\"]*)\"")
FUN = re.compile(r"^\s*(?:private\s+|internal\s+)?fun\s+(\w+)\s*\(", re.M)


def _pointer(root: dict, ptr: str):
    node = root
    for part in ptr.lstrip("#").split("/")[1:]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    return _deref(root, node)


def _deref(root: dict, node):
    while isinstance(node, dict) and "$ref" in node:
        node = _pointer(root, node["$ref"])
    return node


def _functions(source: str) -> dict[str, str]:
    """name -> body text (up to the next function) of every function in a Kotlin file."""
    starts = [(m.group(1), m.start()) for m in FUN.finditer(source)]
    ends = [s for _, s in starts[1:]] + [len(source)]
    return {name: source[start:end] for (name, start), end in zip(starts, ends)}


def _reads(body: str) -> list[tuple[str, str]]:
    """(get|opt|has, field) of every JSON field read by name."""
    return ([(m.group(1), m.group(3)) for m in JSON_READ.finditer(body)]
            + [("opt", m.group(2)) for m in JSON_PROBE.finditer(body)])


def test_every_manifest_field_the_app_reads_is_in_the_schema_where_it_reads_it():
    root = load_schema()
    functions = _functions(KOTLIN["Manifest.kt"])
    reading = {name for name, body in functions.items() if _reads(body)}
    assert reading == set(PARSE_FUNCTIONS), "every Manifest.kt function that reads JSON fields needs a schema place"
    checked = 0
    for fun, ptr in PARSE_FUNCTIONS.items():
        obj = _pointer(root, ptr)
        assert obj.get("type") == "object", f"{ptr} is not an object"
        for kind, field in _reads(functions[fun]):
            assert field in obj["properties"], f"{fun} reads '{field}', which {ptr} does not define"
            if kind == "get":  # throws when absent: the schema must require it
                assert field in obj.get("required", []), f"{fun} requires '{field}', optional in {ptr}: use opt..."
            checked += 1
    assert checked >= 25


def _candidates(root: dict, node) -> list:
    node = _deref(root, node)
    out = [node]
    for key in ("oneOf", "anyOf"):
        out += [_deref(root, n) for n in (node.get(key, []) if isinstance(node, dict) else [])]
    return out


def test_each_parse_function_is_called_on_the_schema_object_it_expects():
    """parseX(o.getJSONObject("k")), objects(o.getJSONArray("k")).map { parseX(it) } and
    o.optJSONObject("k")?.let { parseX(it) } hand parseX the schema's property k (or its items)."""
    root = load_schema()
    functions = _functions(KOTLIN["Manifest.kt"])
    calls = [
        (re.compile(r"(parse\w+)\(\w+\.(?:get|opt)JSONObject\(\"(\w+)\"\)\)"), False),
        (re.compile(r"\w+\.optJSONObject\(\"(\w+)\"\)\?\.let \{ (parse\w+)\(it\) \}"), False),
        (re.compile(r"objects\(\w+\.getJSONArray\(\"(\w+)\"\)\)\.map \{ (parse\w+)\(it\) \}"), True),
    ]
    reached = set()
    for fun, ptr in PARSE_FUNCTIONS.items():
        obj = _pointer(root, ptr)
        for pattern, items in calls:
            for m in pattern.finditer(functions[fun]):
                callee, field = (m.group(1), m.group(2)) if m.group(1).startswith("parse") else (m.group(2), m.group(1))
                prop = _deref(root, obj["properties"][field])
                target = _pointer(root, PARSE_FUNCTIONS[callee])
                where = prop["items"] if items else prop
                assert any(c is target for c in _candidates(root, where)), \
                    f"{fun} passes '{field}' to {callee}, which reads {PARSE_FUNCTIONS[callee]}"
                reached.add(callee)
    assert reached == set(PARSE_FUNCTIONS) - {"parseManifest"}


# --- (c) the names both sides rely on ------------------------------------------------------------

def _kotlin_constants() -> dict[str, object]:
    out = {}
    for m in re.finditer(r"const val (\w+) = (\"[^\"]*\"|\d+)", KOTLIN["Contract.kt"]):
        out[m.group(1)] = json.loads(m.group(2))
    return out


def test_the_apps_names_equal_the_python_constants():
    k = _kotlin_constants()
    root = load_schema()
    assert k["INPUT_NAME"] == names.INPUT_NAME
    assert k["OUTPUT_NAME"] == names.OUTPUT_NAME
    assert k["JOINT_KEY"] == names.JOINT_KEY == root["properties"]["joint"]["oneOf"][1]["properties"]["signature_key"]["const"]
    assert k["MANIFEST_METADATA"] == names.MANIFEST_METADATA
    assert k["APP_PACKAGE"] == names.APP_PACKAGE
    assert k["DEVICE_MODEL_NAME"] == names.DEVICE_MODEL_NAME
    assert k["MANIFEST_FORMAT"] == MANIFEST_FORMAT == root["properties"]["format"]["const"]
    assert k["MANIFEST_VERSION"] == root["properties"]["version"]["const"]
    assert k["SAMPLES_ASSET"] == tool.SAMPLES_NAME
    assert k["SAMPLES_FORMAT"] == tool.SAMPLES_FORMAT


def test_the_names_live_in_contract_kt_only():
    """Outside Contract.kt no Kotlin source spells a shared name (manifest field reads aside)."""
    k = _kotlin_constants()
    literals = {json.dumps(v) for key, v in k.items() if isinstance(v, str)}
    for name, source in KOTLIN.items():
        if name == "Contract.kt":
            continue
        code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)  # comments may name anything
        stripped = JSON_READ.sub("", re.sub(r"^\s*//.*$", "", code, flags=re.M))
        for literal in literals:
            assert literal not in stripped, f"{name} spells {literal}: use the Contract constant"


def test_the_gradle_build_and_sources_use_the_application_id():
    gradle = (APP / "build.gradle.kts").read_text()
    assert re.search(r'applicationId = "([^"]+)"', gradle).group(1) == names.APP_PACKAGE
    assert re.search(r'namespace = "([^"]+)"', gradle).group(1) == names.APP_PACKAGE
    assert re.search(r"minSdk = (\d+)", gradle) and int(re.search(r"minSdk = (\d+)", gradle).group(1)) >= 24
    assert 'noCompress.add("tflite")' in gradle  # the bundled model must be mappable (openFd)
    assert SRC.parts[-3:] == tuple(names.APP_PACKAGE.split("."))
    for path in list(SRC.glob("*.kt")) + list(ANDROID_TEST.glob("*.kt")):
        assert re.search(r"^package (\S+)$", path.read_text(), re.M).group(1) == names.APP_PACKAGE, path
    catalog = (DEMO / "gradle" / "libs.versions.toml").read_text()
    assert re.search(r'litert = \{ group = "com\.google\.ai\.edge\.litert", name = "litert", version\.ref = "litert" \}',
                     catalog)
    assert re.search(r'^litert = "\d+\.\d+\.\d+"$', catalog, re.M), "pin the LiteRT version"
    wrapper = (DEMO / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    assert re.search(r"distributionUrl=.*gradle-\d+\.\d+(\.\d+)?-bin\.zip", wrapper)


def test_generated_assets_stay_out_of_git():
    ignored = (DEMO / ".gitignore").read_text().split()
    rel = tool.DEFAULT_ASSETS.relative_to(DEMO).as_posix()
    assert f"{rel}/{names.DEVICE_MODEL_NAME}" in ignored
    assert f"{rel}/{tool.SAMPLES_NAME}" in ignored
    assert tool.DEFAULT_ASSETS == APP / "src" / "main" / "assets"


def test_the_app_preprocesses_as_the_manifest_says():
    root = load_schema()
    assert "(raw value - mean) * scale" in root["$defs"]["task"]["properties"]["preprocessing"]["description"]
    assert "(raw[it] - p.mean) * p.scale" in KOTLIN["ZippedModel.kt"]
    raw = np.arange(6, dtype=np.float32)
    x = tool.app_input(raw, {"mean": 1.0, "scale": 0.5}, [1, 6])
    assert x.dtype == np.float32 and np.array_equal(x, ((raw - 1) * 0.5)[None])


# --- (d) the Kotlin flatbuffer metadata reader, ported line by line ------------------------------

class MalformedModel(Exception):
    """MalformedModelException of TfliteMetadata.kt."""


def _kotlin_field_numbers() -> dict[str, int]:
    return {m.group(1): int(m.group(2))
            for m in re.finditer(r"private const val (\w+) = (\d+)", KOTLIN["TfliteMetadata.kt"])}


FIELDS = _kotlin_field_numbers()


class PortReader:
    """TfliteMetadata.Reader: little-endian reads at absolute positions, each bounds-checked."""

    def __init__(self, data: bytes):
        self.buf = data
        self.size = len(data)

    def check(self, at: int, n: int) -> None:
        if at < 0 or n < 0 or at > self.size - n:
            raise MalformedModel(f"a read of {n} bytes at {at} lies outside the {self.size}-byte file")

    def index(self, position: int) -> int:
        if position < 0 or position >= self.size:
            raise MalformedModel(f"offset {position} lies outside the {self.size}-byte file")
        return position

    def u16(self, at):
        self.check(at, 2)
        return struct.unpack_from("<H", self.buf, at)[0]

    def i32(self, at):
        self.check(at, 4)
        return struct.unpack_from("<i", self.buf, at)[0]

    def u32(self, at):
        self.check(at, 4)
        return struct.unpack_from("<I", self.buf, at)[0]

    def u64(self, at):  # Kotlin's getLong: signed
        self.check(at, 8)
        return struct.unpack_from("<q", self.buf, at)[0]

    def bytes(self, at, n):
        self.check(at, n)
        return bytes(self.buf[at:at + n])

    def deref(self, at):
        return self.index(at + self.u32(at))

    def field(self, table, field):
        vtable = self.index(table - self.i32(table))
        vtable_size = self.u16(vtable)
        slot = 4 + 2 * field
        if slot + 2 > vtable_size:
            return -1
        offset = self.u16(vtable + slot)
        return -1 if offset == 0 else self.index(table + offset)

    def vector_length(self, vector):
        n = self.u32(vector)
        if n > self.size:
            raise MalformedModel(f"a vector of {n} elements in a {self.size}-byte file")
        return n

    def table_in_vector(self, vector, i):
        return self.deref(self.index(vector + 4 + 4 * i))

    def string(self, at):
        return self.bytes(at + 4, self.vector_length(at)).decode("utf-8", errors="replace")


def port_find(data: bytes, name: str) -> bytes | None:
    """TfliteMetadata.find."""
    r = PortReader(data)
    if r.size < 8:
        raise MalformedModel(f"the file has {r.size} bytes: too short for a .tflite")
    if r.bytes(4, 4).decode("ascii", errors="replace") != "TFL3":
        raise MalformedModel("no TFL3 identifier: not a .tflite file")
    root = r.deref(0)
    metadata_field = r.field(root, FIELDS["MODEL_METADATA"])
    if metadata_field < 0:
        return None
    metadata = r.deref(metadata_field)
    for i in range(r.vector_length(metadata)):
        entry = r.table_in_vector(metadata, i)
        name_field = r.field(entry, FIELDS["METADATA_NAME"])
        if name_field < 0 or r.string(r.deref(name_field)) != name:
            continue
        buffer_field = r.field(entry, FIELDS["METADATA_BUFFER"])
        buffer_index = 0 if buffer_field < 0 else r.u32(buffer_field)
        buffers_field = r.field(root, FIELDS["MODEL_BUFFERS"])
        if buffers_field < 0:
            raise MalformedModel(f"metadata '{name}' names buffer {buffer_index} of none")
        buffers = r.deref(buffers_field)
        count = r.vector_length(buffers)
        if buffer_index >= count:
            raise MalformedModel(f"metadata '{name}' names buffer {buffer_index} of {count}")
        return _port_buffer_bytes(r, r.table_in_vector(buffers, buffer_index))
    return None


def _port_buffer_bytes(r: PortReader, buffer: int) -> bytes:
    data_field = r.field(buffer, FIELDS["BUFFER_DATA"])
    if data_field >= 0:
        data = r.deref(data_field)
        n = r.vector_length(data)
        if n > 0:
            return r.bytes(data + 4, n)
    offset_field = r.field(buffer, FIELDS["BUFFER_OFFSET"])
    size_field = r.field(buffer, FIELDS["BUFFER_SIZE"])
    offset = 0 if offset_field < 0 else r.u64(offset_field)
    size = 0 if size_field < 0 else r.u64(size_field)
    if offset > 1 and size > 0:
        if size > r.size or offset > r.size - size:
            raise MalformedModel(f"a buffer of {size} bytes at offset {offset} lies outside the {r.size}-byte file")
        return r.bytes(offset, size)
    return b""


def _schema_field(cls, accessor: str) -> int:
    """Field number of a generated accessor: its vtable slot Offset(4 + 2 f)."""
    slot = int(re.search(r"Offset\((\d+)\)", inspect.getsource(getattr(cls, accessor))).group(1))
    return (slot - 4) // 2


def test_the_readers_field_numbers_are_the_litert_schemas():
    assert FIELDS == {
        "MODEL_BUFFERS": _schema_field(schema.Model, "Buffers"),
        "MODEL_METADATA": _schema_field(schema.Model, "Metadata"),
        "METADATA_NAME": _schema_field(schema.Metadata, "Name"),
        "METADATA_BUFFER": _schema_field(schema.Metadata, "Buffer"),
        "BUFFER_DATA": _schema_field(schema.Buffer, "Data"),
        "BUFFER_OFFSET": _schema_field(schema.Buffer, "Offset"),
        "BUFFER_SIZE": _schema_field(schema.Buffer, "Size"),
    }
    assert FIELDS == {"MODEL_BUFFERS": 4, "MODEL_METADATA": 6, "METADATA_NAME": 0, "METADATA_BUFFER": 1,
                      "BUFFER_DATA": 0, "BUFFER_OFFSET": 1, "BUFFER_SIZE": 2}
    assert f'FILE_IDENTIFIER = "{fb.FILE_IDENTIFIER.decode()}"' in KOTLIN["TfliteMetadata.kt"]


def test_the_ported_reader_finds_the_manifest_of_a_real_file(converted):
    data = converted.read_bytes()
    model = fb.parse_model(data)
    raw = port_find(data, names.MANIFEST_METADATA)
    assert raw == fb.get_metadata(model, names.MANIFEST_METADATA)
    assert json.loads(raw.decode("utf-8")) == read_manifest(model)
    assert port_find(data, "no_such_entry") is None


def test_a_file_without_metadata_has_no_manifest(converted):
    model = fb.parse_model(converted.read_bytes())
    model.metadata = None
    bare = fb.serialize(model)
    assert port_find(bare, names.MANIFEST_METADATA) is None
    assert read_manifest(fb.parse_model(bare)) is None


def test_the_ported_reader_follows_a_buffer_stored_after_the_flatbuffer(converted):
    """Large models keep buffer bytes outside the flatbuffer: Buffer.offset/size, from the file start."""
    model = fb.parse_model(converted.read_bytes())
    (entry,) = [m for m in model.metadata if m.name in (names.MANIFEST_METADATA, names.MANIFEST_METADATA.encode())]
    payload = fb.buffer_bytes(model, entry.buffer)
    buf = model.buffers[entry.buffer]
    buf.data, buf.offset, buf.size = None, 1, len(payload)  # placeholder offset: same layout as the final one
    head = fb.serialize(model)
    start = -(-len(head) // 16) * 16
    model.buffers[entry.buffer].offset = start
    final = fb.serialize(model)
    assert len(final) == len(head)
    data = final + bytes(start - len(final)) + payload
    assert fb.parse_model(data).buffers[entry.buffer].offset == start
    assert port_find(data, names.MANIFEST_METADATA) == payload


@pytest.mark.parametrize("cut", [0, 7, 8, 100, 0.5, 0.9, 0.999])
def test_the_ported_reader_reports_damaged_files_as_malformed(converted, cut):
    data = converted.read_bytes()
    end = int(len(data) * cut) if isinstance(cut, float) else cut
    truncated = data[:end]
    try:
        found = port_find(truncated, names.MANIFEST_METADATA)
    except MalformedModel:
        return
    # a cut after the metadata still reads it whole, never a part
    assert found == fb.get_metadata(fb.parse_model(data), names.MANIFEST_METADATA)


def test_a_file_that_is_not_tflite_is_malformed():
    with pytest.raises(MalformedModel, match="TFL3"):
        port_find(bytes(64), names.MANIFEST_METADATA)


# --- (e) the exporter writes what the app reads ---------------------------------------------------

def test_exported_assets_hold_what_the_app_reads(converted, tmp_path):
    paths = tool.export_assets(converted, tmp_path, per_source=6)
    assert paths["model"].read_bytes() == converted.read_bytes()
    samples = json.loads(paths["samples"].read_text())
    manifest = read_manifest(fb.load_model(converted))

    bodies = KOTLIN["Samples.kt"]
    top_reads = {f for _, f in _reads(_functions(bodies)["parse"])}
    sample_reads = {f for _, f in _reads(_functions(bodies)["parseSample"])}
    assert top_reads <= set(samples), f"Samples.kt reads {top_reads - set(samples)} that samples.json lacks"
    assert samples["format"] == tool.SAMPLES_FORMAT
    assert samples["model_sha256"] == hashlib.sha256(converted.read_bytes()).hexdigest()
    assert len(samples["samples"]) == 6
    for s in samples["samples"]:
        assert sample_reads <= set(s), f"Samples.kt reads {sample_reads - set(s)} that a sample lacks"
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in s["pixels"])
        for task in manifest["tasks"]:
            assert int(np.prod(task["input"]["shape"])) == len(s["pixels"]) == int(np.prod(s["shape"]))
            assert s["truth"][task["name"]] in task["labels"]
            out = np.asarray(s["expected"][task["name"]])
            assert out.shape == (int(np.prod(task["output"]["shape"])),)
            assert abs(out.sum() - 1) < 1e-4
    # one image per class first: six different true labels
    assert len({s["truth"]["a"] for s in samples["samples"]}) == 6


def test_a_coarse_task_gets_its_own_truth_for_the_same_image(converted):
    """Tasks on the same images with different label spaces share each sample, each with its label."""
    from mtz_mobile.data import COARSE_LABELS, COARSE_OF_FINE, FASHION_LABELS

    manifest = read_manifest(fb.load_model(converted))
    manifest["tasks"][1]["labels"] = list(COARSE_LABELS)  # as a coarse model's manifest says
    specs = tool.task_specs(manifest)
    assert specs == {"a": "fashion-mnist", "b": "fashion-mnist-coarse"}
    samples = tool.build_samples(converted.read_bytes(), manifest, specs, per_source=10)["samples"]
    assert len(samples) == 10 and {s["source"] for s in samples} == {"fashion-mnist"}
    for s in samples:
        fine = FASHION_LABELS.index(s["truth"]["a"])
        assert s["truth"]["b"] == COARSE_LABELS[COARSE_OF_FINE[fine]]
    assert {s["truth"]["a"] for s in samples} == set(FASHION_LABELS)
    assert tool.pick_indices(np.array([3, 1, 3, 0, 1]), 4) == [0, 1, 3, 4]


def test_export_refuses_a_model_without_manifest(converted, tmp_path):
    from mtz_mobile.errors import MTZError

    model = fb.parse_model(converted.read_bytes())
    model.metadata = None
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(fb.serialize(model))
    with pytest.raises(MTZError, match="mtz_manifest"):
        tool.export_assets(bare, tmp_path / "assets")
    assert not (tmp_path / "assets" / names.DEVICE_MODEL_NAME).exists()
