"""Every configuration key: its type, default, allowed values and help (all keys, or those
under PREFIX).

Generated from the typed config (:mod:`eges.config`): every key of every section, with its
type, default, allowed values, the checks its section makes, and its help: the comments written
next to the field in ``eges/config.py`` (above it or on its line), or the ``Attributes:`` of its
dataclass's docstring. ``eges config [PREFIX]``
prints it; ``docs/configuration.md`` is this module's Markdown (``make docs`` rewrites it, and a
test fails when it is stale).
"""

from __future__ import annotations

import ast
import dataclasses
import inspect
import io
import re
import textwrap
import tokenize
import types
import typing
from dataclasses import dataclass
from typing import Any, Literal, Union, get_args, get_origin

from eges import config as C

DOC_PATH = "docs/configuration.md"


@dataclass(frozen=True)
class Entry:
    """One configuration key."""

    key: str  # dotted; ``[]`` marks a list item, ``<name>`` a mapping's key
    type: str
    default: str
    allowed: str  # choices and the section's checks; empty when any value of the type goes
    help: str


def _comments(cls: type) -> dict[str, str]:
    """Field name -> the comments above it (contiguous) and on its line, in ``cls``'s source."""
    source = textwrap.dedent(inspect.getsource(cls))
    lines: dict[int, str] = {}
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT:
            lines[tok.start[0]] = tok.string.lstrip("#").strip()
    code = source.splitlines()
    out = {}
    for node in ast.parse(source).body[0].body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        above, n = [], node.lineno - 1
        while n >= 1 and code[n - 1].strip().startswith("#"):
            above.insert(0, lines[n])
            n -= 1
        beside = [lines[n] for n in range(node.lineno, node.end_lineno + 1) if n in lines]
        out[node.target.id] = " ".join(above + beside)
    return out


def _attributes(cls: type) -> dict[str, str]:
    """Field name -> its text in the ``Attributes:`` section of ``cls``'s docstring."""
    doc = inspect.getdoc(cls) or ""
    _, found, rest = doc.partition("Attributes:\n")
    out: dict[str, str] = {}
    name = None
    for line in rest.splitlines() if found else []:
        if not line.strip():
            break
        m = re.match(r"    (\w+): (.*)", line)
        if m:
            name, out[m[1]] = m[1], m[2].strip()
        elif name and line.startswith("        "):
            out[name] += " " + line.strip()
    return out


def _checks(cls: type, prefix: str) -> dict[str, list[str]]:
    """Field name -> the messages of ``cls.__post_init__`` about it (``"<prefix>.<name> …"``),
    less the key itself."""
    post = getattr(cls, "__post_init__", None)
    if post is None:
        return {}
    out: dict[str, list[str]] = {}
    for node in ast.walk(ast.parse(textwrap.dedent(inspect.getsource(post)))):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            text = node.value
        elif isinstance(node, ast.JoinedStr):
            text = "".join(v.value if isinstance(v, ast.Constant) else "…" for v in node.values)
        else:
            continue
        m = re.match(rf"{re.escape(prefix)}\.(\w+)([ =].*)", text, re.S)
        if m and len(m[2].split()) >= 3:  # a message, not a place (``f"{key} {name!r}"``)
            rest = m[2].strip()
            out.setdefault(m[1], []).append(rest if not rest.startswith("=") else m[0])
    return out


def _type(hint: Any) -> tuple[str, str]:
    """(the type as a user writes it in YAML, the allowed values of a choice)."""
    origin, args = get_origin(hint), get_args(hint)
    if origin in (Union, types.UnionType):
        options = [a for a in args if a is not type(None)]
        name, allowed = _type(options[0]) if len(options) == 1 else ("any", "")
        return f"{name} or null", allowed
    if origin is Literal:
        return "choice", " · ".join(map(str, args))
    if origin is list:
        name, allowed = _type(args[0])
        return f"list of {name}", allowed
    if origin is dict:
        return f"mapping of {_type(args[0])[0]} to {_type(args[1])[0]}", ""
    if dataclasses.is_dataclass(hint):
        return "section", ""
    return {int: "integer", float: "number", bool: "true/false", str: "text"}.get(
        hint, str(hint)
    ), ""


def _value(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return str(v).lower()
    if dataclasses.is_dataclass(v):
        v = {k: x for k, x in dataclasses.asdict(v).items() if x is not None}
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_value(x)}" for k, x in v.items()) + "}"
    if isinstance(v, list):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, str):
        return repr(v) if v == "" or v != v.strip() or v in ("|", ",", ";") else v
    return str(v)


def _section(cls: type, prefix: str, default: Any) -> list[Entry]:
    hints = typing.get_type_hints(cls)
    helps = {**_attributes(cls), **{k: v for k, v in _comments(cls).items() if v}}
    checks = _checks(cls, prefix)
    nested = C._nested_dataclasses(cls)
    out = []
    for f in dataclasses.fields(cls):
        key = f"{prefix}.{f.name}" if prefix else f.name
        if (
            f.name in nested
            and nested[f.name][1] == "one"
            and dataclasses.is_dataclass(getattr(default, f.name, None))
        ):
            out += _section(nested[f.name][0], key, getattr(default, f.name))
            continue
        kind, allowed = _type(hints[f.name])
        value = (
            _value(getattr(default, f.name))
            if default is not None
            else "required"
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            else _value(f.default if f.default is not dataclasses.MISSING else f.default_factory())
        )
        rules = checks.get(f.name, [])
        if allowed:
            rules = [f"one of {allowed}"] + rules
        out.append(Entry(key, kind, value, "; ".join(rules), helps.get(f.name, "")))
        if f.name in nested:  # a list or mapping of sections, or an optional section
            sub, how = nested[f.name]
            item = {"list": f"{key}[]", "dict": f"{key}.<name>", "one": key}[how]
            out += _section(sub, item, None)
    return out


def entries() -> list[Entry]:
    """Every key of :class:`eges.config.Config`, in the order of the dataclasses."""
    return [
        dataclasses.replace(e, help=e.help.replace("``", "`"))  # docstrings' reST literals
        for e in _section(C.Config, "", C.Config())
    ]


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def markdown() -> str:
    """The reference as a Markdown page, one table per top-level section."""
    out = [
        "# Configuration reference",
        "",
        "Generated from `eges/config.py` by `make docs` (`python -m eges.config_reference "
        "--markdown`); `eges config [PREFIX]` prints the same on screen. Do not edit by hand: a "
        "test fails when this page and the code differ.",
        "",
        "A YAML file states only what differs from these defaults; several files may be layered "
        "(`--config a.yaml --config b.yaml`, later wins), then `--set key=value` overrides any "
        "key (the value is read as YAML: `--set walks.walk_length=5`, "
        "`--set 'evaluate.tasks=[next]'`). An unknown key, a wrong type or a value outside the "
        "checks below is an error that names the key. Every output directory holds the resolved "
        "configuration it was made with.",
        "",
        "`[]` marks the keys of each item of a list, `<name>` a mapping's keys.",
    ]
    top: dict[str, list[Entry]] = {}
    for e in entries():
        top.setdefault(e.key.split(".", 1)[0], []).append(e)
    hints = typing.get_type_hints(C.Config)
    for name, rows in top.items():
        doc = inspect.getdoc(hints[name]) or ""  # the section's docstring: the heading's text
        out += ["", f"## `{name}`", "", " ".join(doc.split("\n\n")[0].split()), ""]
        out += ["| key | type | default | allowed | help |", "| --- | --- | --- | --- | --- |"]
        out += [
            f"| `{e.key}` | {e.type} | `{_cell(e.default)}` | {_cell(e.allowed)} | "
            f"{_cell(e.help)} |"
            for e in rows
        ]
    return "\n".join(out) + "\n"


def text(prefix: str = "") -> str:
    """The keys under ``prefix`` for the screen."""
    rows = [
        e
        for e in entries()
        if not prefix or e.key == prefix or e.key.startswith((f"{prefix}.", f"{prefix}["))
    ]
    out = []
    for e in rows:
        out.append(f"{e.key}  ({e.type}, default {e.default})")
        about = " ".join(filter(None, [e.help, e.allowed and f"[{e.allowed}]"]))
        out += [f"    {line}" for line in textwrap.wrap(about, 92)]
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    from eges.cli import fail, parser

    p = parser("config", __doc__)
    p.add_argument(
        "prefix", nargs="?", default="", help="only the keys under it (train, walks.seed)"
    )
    p.add_argument("--markdown", action="store_true", help=f"the whole reference as {DOC_PATH}")
    args = p.parse_args(argv)
    if args.markdown:
        print(markdown(), end="")
        return 0
    shown = text(args.prefix)
    if not shown:
        sections = ", ".join(f.name for f in dataclasses.fields(C.Config))
        return fail(f"no configuration key starts with {args.prefix!r} (sections: {sections})")
    print(shown)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
