"""mtz-mobile: Multi-Task Zipping of trained networks, shipped as one LiteRT file."""

__version__ = "0.3.0"
