"""The one exception type users see: a one-line message naming the problem and the fix."""


class MTZError(Exception):
    """Bad input or an impossible request. The CLI prints it on one line and exits with 2."""

    def __init__(self, message: str):
        super().__init__(" ".join(str(message).split()))
