"""CLI commands that measure and ship a converted model: bench, push, deploy."""

from __future__ import annotations


def add_device_commands(sub) -> dict:
    """Register the subcommands on ``sub``; return {name: handler(args) -> exit code}."""
    return {}
