"""``xfusion methods``: the method registry as text (also the method list of ``fuse --help``).

Everything here is built from the :class:`~napari_xfusion.methods.registry.MethodSpec`
declarations, so a plugin's method appears exactly like a builtin.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from napari_xfusion.cli._common import epilog, formatter

if TYPE_CHECKING:
    from napari_xfusion.methods.registry import MethodSpec, OptionSpec

__all__ = ["add_parser", "describe_methods", "option_line", "run"]


def _default(opt: OptionSpec) -> str:
    if opt.default is None:
        return "none"
    if isinstance(opt.default, bool):
        return "true" if opt.default else "false"
    return str(opt.default)


def option_line(opt: OptionSpec) -> str:
    """``key=DEFAULT (type[, a|b]): help`` for one option."""
    kind = opt.type + (": " + "|".join(map(str, opt.choices)) if opt.choices else "")
    return f"{opt.name}={_default(opt)} ({kind}){': ' + opt.help if opt.help else ''}"


def _traits(spec: MethodSpec) -> str:
    traits = []
    if spec.needs_torch:
        traits.append("torch")
    if spec.needs_weights:
        shipped = spec.default_weights and Path(spec.default_weights).is_file()
        traits.append("weights" + ("" if shipped else " (none shipped here)"))
    traits.append("HR keys" if spec.uses_hr_keys else "LR only")
    if spec.attention:
        traits.append("attention scores")
    traits.extend(f"{o} map" for o in spec.outputs)
    return ", ".join(traits)


def describe_methods(specs: dict[str, MethodSpec] | None = None, *, verbose: bool = True) -> str:
    """Every registered method: name, summary, what it needs and gives, its options."""
    from napari_xfusion.methods.registry import available_methods

    specs = available_methods() if specs is None else specs
    lines = []
    for name, spec in specs.items():
        lines.append(f"  {name}: {spec.summary or '(no summary)'}")
        if verbose:
            lines.append(f"      uses: {_traits(spec)}")
        for opt in spec.options:
            lines.append(f"      --option {name}.{option_line(opt)}")
    return "\n".join(lines)


def add_parser(sub: Any) -> None:
    p = sub.add_parser(
        "methods",
        formatter_class=formatter,
        help="list the fusion methods and their options",
        description="Every registered method (builtins and installed plugins, entry-point "
        "group napari_xfusion.methods): its summary, whether it needs torch, weights or the HR "
        "keys, its extra outputs, and its options with their defaults (set them with "
        "xfusion fuse --option METHOD.key=value).",
        epilog=epilog("""
            xfusion methods
            xfusion fuse --method bayesian --option bayesian.n_classes=4 ...
        """),
    )
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    print("methods (xfusion fuse --method NAME, options as --option NAME.key=value):")
    print(describe_methods())
    return 0
