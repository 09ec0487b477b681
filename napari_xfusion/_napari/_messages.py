"""Short messages for the user from the errors a run can end with (Qt-free).

Library errors are written for programmers; at the dock's boundary a few are rewritten to say
what the file is, what was expected and what to do. PyTorch's ``weights_only`` text in
particular ("Please file an issue ...") is never shown.
"""

from __future__ import annotations

from typing import Any

__all__ = ["explain_error"]

# Fragments of torch.load's errors for a file that is not a checkpoint at all.
_UNREADABLE = (
    "weights only load failed",
    "weights_only",
    "unpickling",
    "invalid load key",
    "pytorchstreamreader",
    "not a readable torch checkpoint",
    "failed finding central directory",
)
_CHOOSE = "Choose a checkpoint with the '…' button next to the method's weights, or untick it."


def _weights_files(request: Any) -> list[tuple[str, str]]:
    """(method, path) of the weights files a request names."""
    config = getattr(request, "config", None)
    return [(m.name, m.weights) for m in (config.methods if config else ()) if m.weights]


def explain_error(message: str, request: Any = None) -> str:
    """``message`` as the user should read it (the request tells which files were used)."""
    lowered = message.lower()
    if any(fragment in lowered for fragment in _UNREADABLE):
        files = [(m, p) for m, p in _weights_files(request) if p in message] or _weights_files(
            request
        )
        if files:
            method, path = files[0]
            what = f"The {method} weights file {path}"
        else:
            what = "A weights file"
        return (
            f"{what} could not be read: it is not a PyTorch checkpoint (expected a .pt file "
            f"saved by napari-xfusion's training; this one is damaged or another kind of file). "
            f"{_CHOOSE}"
        )
    if "weight" in lowered or "checkpoint" in lowered:
        return f"{message} {_CHOOSE}"
    return message
