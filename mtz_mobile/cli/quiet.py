"""Keep TensorFlow, Keras and LiteRT from talking on stderr unless the user asks (--verbose).

Their lines (oneDNN notices, "failed call to cuInit", CPU-feature advice, XNNPACK delegate
INFO) say nothing about the user's models and bury our own messages; errors still surface as
MTZError lines or tracebacks, which do not go through these channels.
"""

from __future__ import annotations

import importlib.abc
import logging
import os
import re
import sys
import tempfile
import warnings
from contextlib import contextmanager

LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
_LIBRARIES = ("tensorflow", "keras", "tf_keras", "absl", "ai_edge_litert")
# absl-format lines (severity I/W/E, date, time, thread, file:line]) and their known companions
_NOISE = re.compile(r"([IWE]\d{4} [\d:]+\.\d+ +\d+ \S+:\d+\] "
                    r"|WARNING: All log messages before absl::InitializeLog\(\) is called"
                    r"|To enable the following instructions: )")


def verbose_requested(argv: list[str]) -> bool:
    """Looked up before parsing: the environment must be set before anything imports TensorFlow."""
    return "--verbose" in argv[:argv.index("--")] if "--" in argv else "--verbose" in argv


def configure(verbose: bool) -> None:
    # Forced rather than defaulted: the CLI's switch is --verbose, not the environment. TensorFlow
    # reads it when it loads and the bench's probe processes inherit it.
    os.environ[LEVEL_VAR] = "0" if verbose else "3"
    if verbose:
        return
    for name in _LIBRARIES:
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"(%s)(\.|$)" % "|".join(_LIBRARIES))
    if "tensorflow" not in sys.modules and not any(isinstance(f, _QuietTensorFlowImport) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietTensorFlowImport())


@contextmanager
def _stderr_filtered():
    """Collect what is written to file descriptor 2 (C++ included), then pass on all but the noise."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as tmp:
        os.dup2(tmp.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            lines = tmp.read().decode(errors="replace").splitlines(keepends=True)
            sys.stderr.write("".join(line for line in lines if not _NOISE.match(line)))
            sys.stderr.flush()


class _QuietTensorFlowImport(importlib.abc.MetaPathFinder):
    """TensorFlow's shared libraries log oneDNN and CUDA-stub notices while they load, before
    they read TF_CPP_MIN_LOG_LEVEL (TF 2.21); only filtering file descriptor 2 during that
    import keeps them off the terminal. Whatever else the import writes is passed on."""

    def find_spec(self, name, path, target=None):
        if name != "tensorflow":
            return None
        sys.meta_path.remove(self)  # once: the real finders locate it
        from importlib.util import find_spec

        spec = find_spec(name)
        if spec is not None and spec.loader is not None:
            spec.loader = _FilteredLoader(spec.loader)
        return spec


class _FilteredLoader(importlib.abc.Loader):
    def __init__(self, inner):
        self._inner = inner

    def __getattr__(self, name):  # resource readers and the like stay the real loader's
        return getattr(self._inner, name)

    def create_module(self, spec):
        return self._inner.create_module(spec)

    def exec_module(self, module):
        with _stderr_filtered():
            self._inner.exec_module(module)
