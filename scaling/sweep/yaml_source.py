"""YAML text to data, with the line of every key, in one parse that a hostile file cannot blow up.

:func:`compose` refuses a document whose aliases would expand to more than
:data:`MAX_SPEC_NODES` values before expanding it (a "billion laughs" bomb is measured in
microseconds), a recursive alias, bad syntax and values that do not fit their ``!!tag``, each on
one line naming the source and line. :func:`record_lines` maps every key path to its line, and
:func:`locate` finds the line of the path a validation error names.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from scaling.errors import UsageError

MAX_SPEC_NODES = 200_000
"""Most YAML values a spec may hold once aliases are expanded (what validation walks)."""


# libyaml's parser where PyYAML was built with it (its wheels are): the same nodes and marks, ~10x faster
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


# libyaml's parser where PyYAML was built with it (its wheels are): the same nodes and marks, ~10x faster
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def record_lines(root: yaml.Node, out: dict[tuple[Any, ...], int]) -> None:
    """Record the 1-based line of every key and list item (keys at their own line).

    Each node is walked once: an aliased node is recorded at its anchor only (its other paths
    fall back to the alias's key line), so the map stays the size of the file.
    """
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, tuple[Any, ...]]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        out.setdefault(path, node.start_mark.line + 1)
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for k, v in node.value:
                key = k.value if isinstance(k, yaml.ScalarNode) and k.tag.endswith(":str") else _scalar_key(k)
                out[(*path, key)] = k.start_mark.line + 1
                stack.append((v, (*path, key)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((v, (*path, i)) for i, v in enumerate(node.value))


def _scalar_key(k: yaml.Node) -> Any:
    """A non-string scalar key as the loader builds it (``1e11`` -> 1e11), else None."""
    if not isinstance(k, yaml.ScalarNode):
        return None
    try:
        return yaml.SafeLoader("").construct_object(k, deep=True)
    except yaml.YAMLError:
        return k.value


def _expanded_nodes(root: yaml.Node, source: str) -> int:
    """Nodes of the document once every alias is expanded (what validation will walk).

    Counted bottom-up with each distinct node counted once, so a "billion laughs" bomb is
    measured in microseconds without being expanded. A recursive alias is refused.
    """
    count: dict[int, int] = {}
    entered: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        children = _children(node)
        if done:
            entered.discard(id(node))
            count[id(node)] = 1 + sum(count[id(c)] for c in children)
            continue
        if id(node) in count:
            continue
        if id(node) in entered:
            raise UsageError(
                f"{source}:{node.start_mark.line + 1}: a YAML alias refers to itself; write the value out"
            )
        entered.add(id(node))
        stack.append((node, True))
        stack.extend((c, False) for c in children if id(c) not in count)
    return count[id(root)]


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for kv in node.value for n in kv]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def locate(loc: tuple[Any, ...], data: Any, lines: dict[tuple[Any, ...], int]) -> tuple[tuple[Any, ...], int | None]:
    """The data path a pydantic ``loc`` refers to (union tags dropped) and its line."""
    path: list[Any] = []
    cur = data
    for part in loc:
        if isinstance(cur, Mapping) and part in cur or isinstance(cur, list) and isinstance(part, int) and part < len(cur):
            path.append(part)
            cur = cur[part]
        elif isinstance(cur, Mapping) and isinstance(part, str) and str(part) in {str(k) for k in cur}:
            key = next(k for k in cur if str(k) == str(part))
            path.append(key)
            cur = cur[key]
        # anything else is a union tag ('isoflop', 'float', 'ShapeSize'...): skip it
    p = tuple(path)
    while p and p not in lines:
        p = p[:-1]
    return tuple(path), lines.get(p)


def compose(text: str, source: str) -> tuple[yaml.Node | None, Any]:
    """The node tree (for line numbers) and the data built from it: one parse, bounded."""
    loader = _LOADER(text)
    try:
        node = loader.get_single_node()
        if node is None:
            return None, None
        size = _expanded_nodes(node, source)
        if size > MAX_SPEC_NODES:
            raise UsageError(
                f"{source}: YAML aliases expand to {size:,} values (more than {MAX_SPEC_NODES:,}); "
                "write the values out or use fewer nested aliases"
            )
        return node, loader.construct_document(node)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = " ".join(str(getattr(e, "problem", None) or e).split())
        raise UsageError(f"{source}{line}: not valid YAML: {problem}; fix the syntax") from None
    except RecursionError:
        raise UsageError(f"{source}: YAML nested too deeply; a spec needs a few levels of nesting") from None
    except UsageError:
        raise
    except Exception as e:  # PyYAML's int/float/timestamp constructors fail on odd text in many ways
        raise UsageError(
            f"{source}: not valid YAML: a value does not fit its tag ({' '.join(str(e).split())}); "
            "remove the !!tag or fix the value"
        ) from None
    finally:
        loader.dispose()
