"""The names a block is saved under in weights.npz and checkpoints."""

from __future__ import annotations


def kernel_key(node: str, gi: int, go: int, owners: tuple[str, ...]) -> str:
    return f"{node}/kernel/{gi}-{go}/{'+'.join(owners)}"


def bias_key(node: str, go: int, owners: tuple[str, ...]) -> str:
    return f"{node}/bias/{go}/{'+'.join(owners)}"
