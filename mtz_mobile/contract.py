"""Names the file, the app and the benchmark agree on (no TensorFlow import needed to read them)."""

from pathlib import Path

INPUT_NAME = "input"      # every task signature's one input
OUTPUT_NAME = "output"    # every task signature's one output
JOINT_KEY = "all"         # the optional signature that runs every task (outputs named by task)
MANIFEST_METADATA = "mtz_manifest"  # the model metadata entry holding the manifest JSON
APP_PACKAGE = "dev.mtzmobile.demo"  # the Android demo's application id (`mtz-mobile push --app`)
DEVICE_MODEL_NAME = "model.tflite"  # the app's model: files/<this> when pushed, assets/<this> when bundled
# the app's bundled assets and the demo's model, relative to the repository root (where README runs commands)
ANDROID_ASSETS_DIR = "android_demo/app/src/main/assets"
DEMO_MODEL = "demo_out/model.tflite"
XNNPACK_CACHE_SUFFIX = ".xnnpack_cache"  # XNNPACK's weight cache file beside a model: MODEL<this>
XNNPACK_STAMP_SUFFIX = ".json"           # the cache's stamp (model sha256, runtime, cache size and sha256)


QUANTIZATIONS = ("none", "fp16", "dynamic-int8", "int8")  # the manifest records which one made the file


def baseline_path(model_path, task: str):
    """Where `convert --baselines` writes task's original model, beside the zipped model."""
    model_path = Path(model_path)
    return model_path.with_name(f"{model_path.stem}.baseline_{task}.tflite")
