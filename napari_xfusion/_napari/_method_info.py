"""What the fusion dock needs to know about each method, read from the method classes.

A stand-in for the application layer's method registry (``MethodSpec`` / ``OptionSpec``): the
method list is :data:`napari_xfusion.methods.METHODS`, and each method's options are the
keyword arguments of its class (defaults from the signature, help from the numpydoc
``Parameters`` section). The classes are read from their source with :mod:`ast` where
possible, so listing ``edvr`` costs no torch import; a class whose source cannot be read is
imported and inspected instead. Qt-free.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import inspect
import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from napari_xfusion.methods import METHODS

__all__ = ["OptionInfo", "MethodInfo", "RUN_WIDE_OPTIONS", "method_infos", "parse_value"]

RUN_WIDE_OPTIONS = frozenset({"device"})
"""Options chosen once per run (the dock's Device picker), not per method."""


@dataclass(frozen=True)
class OptionInfo:
    """One keyword option of a method class.

    ``kind`` is one of ``"path"`` (a file, default None), ``"bool"``, ``"int"``, ``"float"``,
    ``"choice"`` (``choices`` from the docstring's ``{"a", "b"}``) or ``"text"`` (a Python
    literal). ``optional``: None is allowed ("auto").
    """

    name: str
    default: Any
    kind: str
    optional: bool = False
    choices: tuple[str, ...] = ()
    help: str = ""


@dataclass(frozen=True)
class MethodInfo:
    """A method as the dock lists it: its name, one line of help, its options."""

    name: str
    summary: str
    options: tuple[OptionInfo, ...]
    uses_hr_keys: bool | None = None

    def option(self, name: str) -> OptionInfo | None:
        """The option called ``name``, or None."""
        return next((o for o in self.options if o.name == name), None)


def _doc_params(doc: str) -> dict[str, tuple[str, str]]:
    """numpydoc ``Parameters``: name -> (type line, description joined on one line)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    out: dict[str, tuple[str, str]] = {}
    try:
        start = next(i for i, line in enumerate(lines) if line.strip() == "Parameters") + 2
    except StopIteration:
        return out
    current: list[str] | None = None
    for line in lines[start:]:
        if line and not line.startswith(" "):
            if re.match(r"^-{3,}$", line.strip()) or not re.match(r"^[\w, ]+( :.*)?$", line):
                break
            names, _, kind = line.partition(" :")
            current = []
            for name in names.split(","):
                out[name.strip()] = (kind.strip(), "")
            names_now = [n.strip() for n in names.split(",")]
        elif current is not None and line.strip():
            current.append(line.strip())
            for name in names_now:
                out[name] = (out[name][0], " ".join(current))
        elif not line.strip() and current is not None and lines and lines[-1] == line:
            break
    return out


def _kind(annotation: str, default: Any, doc_type: str) -> tuple[str, bool, tuple[str, ...]]:
    optional = default is None or "None" in annotation or "optional" in doc_type
    choices = tuple(re.findall(r'"([^"]+)"', doc_type)) if doc_type.startswith("{") else ()
    if "Path" in annotation or "path" in doc_type:
        return "path", optional, ()
    if choices:
        return "choice", optional, choices
    for name, kind in (("bool", bool), ("int", int), ("float", float)):
        if name in annotation.split(" | ") or (default is not None and type(default) is kind):
            return name, optional, ()
    return "text", optional, ()


def _options(params: list[tuple[str, str, Any]], doc: str) -> tuple[OptionInfo, ...]:
    docs = _doc_params(doc)
    out = []
    for name, annotation, default in params:
        if name in RUN_WIDE_OPTIONS:
            continue
        doc_type, help_text = docs.get(name, ("", ""))
        kind, optional, choices = _kind(annotation, default, doc_type)
        out.append(OptionInfo(name, default, kind, optional, choices, help_text))
    return tuple(out)


def _summary(doc: str | None, name: str) -> str:
    first = inspect.cleandoc(doc or "").split("\n\n")[0].replace("\n", " ").strip()
    return first or name


def _from_source(module_name: str, class_name: str, name: str) -> MethodInfo | None:
    spec = importlib.util.find_spec(module_name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    with open(spec.origin, encoding="utf-8") as handle:
        tree = ast.parse(handle.read())
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    node = classes.get(class_name)
    summary = _summary(ast.get_docstring(node), name) if node is not None else name
    uses_keys = None
    while node is not None:  # walk to the class that defines __init__ (bases in this module)
        for item in node.body:
            if isinstance(item, ast.Assign) and uses_keys is None:
                targets = [t.id for t in item.targets if isinstance(t, ast.Name)]
                if "uses_hr_keys" in targets and isinstance(item.value, ast.Constant):
                    uses_keys = bool(item.value.value)
        init = next(
            (i for i in node.body if isinstance(i, ast.FunctionDef) and i.name == "__init__"),
            None,
        )
        if init is not None:
            args = init.args.args[1:] + init.args.kwonlyargs
            defaults = [None] * (len(init.args.args) - 1 - len(init.args.defaults))
            defaults += list(init.args.defaults) + list(init.args.kw_defaults)
            params = []
            for arg, default in zip(args, defaults, strict=True):
                if default is None:
                    continue  # a required argument: not an option the dock can leave unset
                try:
                    value = ast.literal_eval(default)
                except ValueError:
                    continue
                annotation = ast.unparse(arg.annotation) if arg.annotation else ""
                params.append((arg.arg, annotation, value))
            return MethodInfo(name, summary, _options(params, ast.get_docstring(node)), uses_keys)
        bases = [b.id for b in node.bases if isinstance(b, ast.Name)]
        node = next((classes[b] for b in bases if b in classes), None)
    return MethodInfo(name, summary, (), uses_keys)  # no options (e.g. bicubic)


def _from_import(module_name: str, class_name: str, name: str) -> MethodInfo:
    cls = getattr(importlib.import_module(module_name), class_name)
    params = []
    for p in list(inspect.signature(cls.__init__).parameters.values())[1:]:
        if p.default is inspect.Parameter.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        params.append((p.name, str(p.annotation), p.default))
    doc = inspect.getdoc(cls) or ""
    return MethodInfo(
        name, _summary(doc, name), _options(params, doc), getattr(cls, "uses_hr_keys", None)
    )


@lru_cache(maxsize=8)
def _infos(targets: tuple[tuple[str, str], ...]) -> tuple[MethodInfo, ...]:
    out = []
    for name, target in targets:
        module_name, class_name = target.split(":")
        info = None
        try:
            info = _from_source(module_name, class_name, name)
        except (OSError, SyntaxError, ValueError, ImportError):
            info = None
        out.append(info or _from_import(module_name, class_name, name))
    return tuple(out)


def method_infos() -> list[MethodInfo]:
    """One :class:`MethodInfo` per registered method, in :data:`METHODS` order."""
    return list(_infos(tuple(METHODS.items())))


def parse_value(option: OptionInfo, text: str) -> Any:
    """The value of a ``"text"`` option typed as ``text`` (a Python literal, or a string)."""
    text = text.strip()
    if not text or text.lower() in ("auto", "none"):
        return None if option.optional else option.default
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
