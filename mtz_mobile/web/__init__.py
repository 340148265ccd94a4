"""The browser page for a zipped model (`mtz-mobile serve`): LiteRT.js runs the .tflite in the page.

    from mtz_mobile.web import serve
    serve("demo_out/model.tflite", host="0.0.0.0", port=8000)
"""

from .server import litert_missing, make_server, serve  # noqa: F401
