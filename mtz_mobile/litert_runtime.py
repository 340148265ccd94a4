"""The LiteRT runtime on the host: ai-edge-litert's interpreter."""

from __future__ import annotations

from ai_edge_litert.interpreter import Interpreter, OpResolverType

from .errors import MTZError


def make_interpreter(model_path=None, model_content=None, num_threads: int | None = None, xnnpack: bool = True):
    """A LiteRT interpreter, with XNNPACK (the default delegate) or plain builtin kernels."""
    resolver = OpResolverType.AUTO if xnnpack else OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
    try:
        interpreter = Interpreter(model_path=None if model_path is None else str(model_path),
                                  model_content=model_content, num_threads=num_threads,
                                  experimental_op_resolver_type=resolver)
    except ValueError as exc:
        raise MTZError(f"LiteRT cannot load the model ({str(exc).splitlines()[0]}): convert it again") from exc
    return interpreter
