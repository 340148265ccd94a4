"""Zipped network → one LiteRT/TFLite file: a signature per task, each shared block stored once.

    from converters import convert_zip, inspect_model
    result = convert_zip("zipped/", "zipped.tflite", quantize="none", joint=True)
    print(result.layout.shared_weight_bytes)
    check_convertible(models)   # before a long zip: the fully shared structure converts (dry_run)

Names resolve lazily so that reading a file (inspect) does not start TensorFlow.
"""

from mtz_mobile.contract import QUANTIZATIONS  # noqa: F401 (re-export)


def __getattr__(name):
    if name in ("convert_zip", "Conversion"):
        from . import convert

        return getattr(convert, name)
    if name in ("check_convertible", "ConversionCheck"):
        from . import dry_run

        return getattr(dry_run, name)
    if name in ("inspect_model", "format_inspection"):
        from . import inspection

        return getattr(inspection, name)
    raise AttributeError(name)
