"""Run configurations for ``xfusion fuse``: options and ``--config`` files -> one RunConfig.

``--config FILE`` (e.g. the ``<stem>.config.json`` every export writes) gives the base; the
options given on the command line override its values; ``--option METHOD.key=value`` and
``--weights`` go through the method registry's declarations.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_xfusion.cli._common import CommandError, parse_frames, parse_int_list

if TYPE_CHECKING:
    from napari_xfusion.app.config import MethodChoice, RunConfig

__all__ = ["OVERRIDES", "config_example", "config_from_args", "fuse_config"]

# Options that --config's values give way to when they are on the command line.
OVERRIDES = (
    "--lr, --hr, --truth, --key-step/--first-last/--key-indices, --frames, --separation, "
    "--normalise, --units, --device, --method, --weights and --option"
)


# ----------------------------------------------------------------------------- config


def _weights_options(
    methods: list[str], weights: list[str], device: str = "auto"
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Per-method options from ``--weights [name=]PATH`` flags, and the files' sha256."""
    from napari_xfusion.core.io import sha256_file
    from napari_xfusion.methods.registry import get_spec

    uses_weights = [m for m in methods if get_spec(m).needs_weights]
    options: dict[str, dict[str, Any]] = {}
    hashes: dict[str, str] = {}
    for item in weights:
        name, sep, path = item.partition("=")
        targets = [name] if sep else uses_weights
        path = path if sep else item
        if sep and name not in methods:
            raise CommandError(f"--weights {item}: method {name!r} is not in --method")
        if sep and name not in uses_weights:
            raise CommandError(f"--weights {item}: {name} uses no network weights")
        if not targets:
            raise CommandError(f"--weights {item}: none of {methods} uses network weights")
        file = Path(path)
        if not file.is_file():
            raise CommandError(f"--weights: {file}: no such file")
        for target in targets:
            options.setdefault(target, {})["weights"] = str(file)
            hashes[target] = sha256_file(file)
    return options, hashes


def _option_target(text: str, methods: Sequence[str]) -> tuple[str, str]:
    """``"METHOD.key=value"`` -> ``(METHOD, "key=value")``; the method may be left out when the
    run has one method."""
    from napari_xfusion.methods.registry import available_methods

    key = text.partition("=")[0]
    names = sorted(available_methods(), key=len, reverse=True)  # longest first: "edvr-stf"
    for name in names:
        if key.startswith(name + "."):
            return name, text[len(name) + 1 :]
    if "." in key:
        raise CommandError(
            f"--option {text}: unknown method {key.split('.', 1)[0]!r}; methods: "
            f"{', '.join(available_methods())} (xfusion methods lists them with their options)"
        )
    if len(methods) != 1:
        raise CommandError(
            f"--option {text}: say which method, as METHOD.{text} (methods of this run: "
            f"{', '.join(methods)})"
        )
    return methods[0], text


def _apply_options(choices: dict[str, MethodChoice], options: Sequence[str]) -> None:
    """Merge ``--option METHOD.key=value`` flags into ``choices`` (checked by the registry)."""
    from napari_xfusion.app.config import MethodChoice
    from napari_xfusion.cli.methods import option_line
    from napari_xfusion.core.io import sha256_file
    from napari_xfusion.methods.registry import available_methods, get_spec, parse_option

    for text in options:
        name, rest = _option_target(text, list(choices))
        if name not in choices:
            raise CommandError(
                f"--option {text}: {name} is not in this run's methods ({', '.join(choices)}); "
                "add it to --method"
            )
        spec = get_spec(name)
        key = rest.partition("=")[0]
        # A declared method checks its options; an older METHODS entry (bare spec) takes any.
        declared = available_methods().get(name) is spec
        if (spec.options or declared) and key not in {o.name for o in spec.options}:
            listed = "\n".join(f"  {option_line(o)}" for o in spec.options)
            raise CommandError(
                f"--option {text}: {name} has no option {key!r}; "
                + (f"its options:\n{listed}" if listed else "it takes no options")
            )
        try:
            key, value = parse_option(spec, rest)
        except ValueError as exc:
            message = str(exc).replace(f"--option {name}.{rest}", f"--option {text}")
            raise CommandError(message) from None
        old = choices[name]
        if key == "weights":  # a checkpoint is the choice's weights, not a constructor option
            if value is not None and not Path(value).is_file():
                raise CommandError(f"--option {text}: {value}: no such file")
            sha = None if value is None else sha256_file(value)
            choices[name] = MethodChoice(name, old.options, value, sha)
        else:
            choices[name] = MethodChoice(
                name, {**old.options, key: value}, old.weights, old.weights_sha256
            )


def _resolve_from(path: str | None, folder: Path) -> str | None:
    """A configuration file's relative input path, taken relative to the file's folder."""
    if path is None or Path(path).is_absolute():
        return path
    return str((folder / path).resolve())


def _apply(
    base: RunConfig,
    *,
    lr: Any = None,
    hr: Any = None,
    truth: Any = None,
    key_step: int | None = None,
    first_last: bool | None = None,
    key_list: Sequence[int] | None = None,
    frames: slice | None = None,
    separation: int | None = None,
    device: str | None = None,
    weights: Sequence[str] = (),
    units: str | None = None,
    normalise_mode: str | None = None,
    methods: Sequence[str] | None = None,
    options: Sequence[str] = (),
) -> RunConfig:
    """``base`` with every argument that is not None applied (None: keep ``base``'s value)."""
    from napari_xfusion.app.config import ConfigError, KeyRule, MethodChoice
    from napari_xfusion.app.inputs import source_path

    changes: dict[str, Any] = {}
    for name, value in (("lr", lr), ("hr", hr), ("truth", truth)):
        if value is not None:
            changes[name] = source_path(value)
    if key_step is not None or first_last or key_list is not None:
        try:
            changes["keys"] = KeyRule(
                step=key_step,
                first_last=bool(first_last),
                indices=None if key_list is None else tuple(key_list),
            )
        except ConfigError as exc:
            raise CommandError(str(exc)) from None
    if frames is not None:
        if frames.step not in (None, 1):
            raise CommandError("--frames takes A:B without a step")
        stop = frames.stop
        if stop is None:  # "A:" = to the end of the LR stream
            from napari_xfusion.core.io import read_stack

            lr_path = changes.get("lr", base.lr)
            if lr_path is None:
                raise CommandError("--frames A: needs --lr")
            stop = int(read_stack(lr_path, check_finite=False).shape[0])
        changes["frames"] = (frames.start or 0, stop)
    for name, value in (
        ("separation", separation),
        ("device", device),
        ("units", units),
        ("normalise", normalise_mode),
    ):
        if value is not None:
            changes[name] = value
    try:
        if methods is not None:
            names = list(dict.fromkeys(methods))
            kept = {m.name: m for m in base.methods}
            # A method the file already has keeps its options and weights.
            choices = {n: kept.get(n) or MethodChoice(n) for n in names}
        else:
            choices = {m.name: m for m in base.methods}
        if weights:
            paths, hashes = _weights_options(list(choices), list(weights))
            for n, opts in paths.items():
                old = choices[n]
                choices[n] = MethodChoice(n, old.options, opts["weights"], hashes[n])
        _apply_options(choices, options)
        if methods is not None or weights or options:
            changes["methods"] = tuple(choices.values())
        return base.replace(**changes)
    except ConfigError as exc:
        raise CommandError(str(exc)) from None


def fuse_config(
    lr_path: str | os.PathLike[str],
    hr_path: str | os.PathLike[str],
    *,
    methods: Sequence[str] = ("bicubic",),
    key_step: int | None = None,
    first_last: bool = False,
    key_list: Sequence[int] | None = None,
    frames: slice | None = None,
    separation: int | None = None,
    device: str = "auto",
    weights: Sequence[str] = (),
    units: str = "float",
    truth_path: str | os.PathLike[str] | None = None,
    normalise_mode: str = "auto",
    options: Sequence[str] = (),
) -> RunConfig:
    """The :class:`RunConfig` that ``xfusion fuse``'s arguments describe (paths made absolute,
    weights hashed). ``frames`` is a slice with an exclusive stop, like ``--frames A:B``;
    ``options`` are ``--option METHOD.key=value`` strings."""
    from napari_xfusion.app.config import RunConfig

    return _apply(
        RunConfig(),
        lr=lr_path,
        hr=hr_path,
        truth=truth_path,
        key_step=key_step,
        first_last=first_last,
        key_list=key_list,
        frames=frames,
        separation=separation,
        device=device,
        weights=weights,
        units=units,
        normalise_mode=normalise_mode,
        methods=methods,
        options=options,
    )


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """``--config FILE`` (relative input paths taken from the file's folder) with the options
    given on the command line applied over it; without ``--config``, the options alone."""
    from napari_xfusion.app.config import RunConfig

    if args.config is not None:
        base = RunConfig.load(args.config)
        folder = Path(args.config).resolve().parent
        base = base.replace(
            lr=_resolve_from(base.lr, folder),
            hr=_resolve_from(base.hr, folder),
            truth=_resolve_from(base.truth, folder),
        )
    else:
        base = RunConfig()
    config = _apply(
        base,
        lr=args.lr,
        hr=args.hr,
        truth=args.truth,
        key_step=args.key_step,
        first_last=args.first_last,
        key_list=parse_int_list(args.key_indices, "--key-indices") if args.key_indices else None,
        frames=parse_frames(args.frames),
        separation=args.separation,
        device=args.device,
        weights=args.weights or (),
        units=args.units,
        normalise_mode=args.normalise,
        methods=None
        if args.method is None
        else [m.strip() for m in args.method.split(",") if m.strip()],
        options=args.option or (),
    )
    missing = [f"--{name}" for name in ("lr", "hr") if getattr(config, name) is None]
    if missing and not config.simulate:
        where = f" and {args.config} gives none" if args.config else ""
        raise CommandError(f"{' and '.join(missing)} required{where}")
    return config


def config_example() -> str:
    """A short configuration file, as :meth:`RunConfig.to_dict` writes it (one key a line);
    the README and ``fuse --help`` show this text, and loading it gives the same run."""
    from napari_xfusion.app.config import KeyRule, MethodChoice, RunConfig

    config = RunConfig(
        lr="data/lr.tif",
        hr="data/hr_keys.tif",
        truth="data/truth.tif",
        keys=KeyRule(),
        frames=(0, 20),
        methods=(MethodChoice("bicubic"), MethodChoice("bayesian", {"n_classes": 4})),
    )
    items = []
    for key, value in config.to_dict().items():
        if key == "methods":  # one method a line
            value_text = "[\n" + ",\n".join(f"    {json.dumps(m)}" for m in value) + "\n  ]"
        else:
            value_text = json.dumps(value)
        items.append(f"  {json.dumps(key)}: {value_text}")
    return "{\n" + ",\n".join(items) + "\n}\n"
