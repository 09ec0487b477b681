"""What the "Register cameras" dock runs in its worker thread (:mod:`._register`)."""

from __future__ import annotations

import warnings
from contextlib import suppress
from typing import Any


def _call(function: Any, *args: Any, **kwargs: Any) -> tuple[str, Any, list[str]]:
    """Run ``function`` in the worker: errors and warnings come back as values, reported on
    the GUI thread (a warning raised in a worker can freeze napari)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            result: Any = function(*args, **kwargs)
            kind = "ok"
        except Exception as exc:  # shown in the dock, never raised in the thread
            result, kind = exc, "error"
    return kind, result, [str(w.message) for w in caught]


def _estimate(config: Any, lr: Any, hr: Any, names: tuple[str, str]) -> tuple[Any, Any]:
    from napari_xfusion.app.dualcam import align_prepared, prepare_pair

    prepared = prepare_pair(config, lr=lr, hr=hr, names=names)
    return prepared, align_prepared(prepared)


def _accept(prepared: Any, transform: Any) -> Any:
    from napari_xfusion.app.dualcam import align_prepared

    return align_prepared(prepared, transform=transform)


def _quit(worker: Any) -> None:
    with suppress(RuntimeError):
        worker.quit()
