"""Algorithm 1 of Multi-Task Zipping: configuration, calibration, one layer's step, the adaptive
search and the run loop (see CONTRIBUTING.md for which module holds what).

Names resolve lazily so that reading a plan or a zip directory does not start TensorFlow.
"""


def __getattr__(name):
    if name in ("ZipConfig",):
        from . import config

        return getattr(config, name)
    if name in ("zip_networks", "ZipResult"):
        from . import run

        return getattr(run, name)
    raise AttributeError(name)
