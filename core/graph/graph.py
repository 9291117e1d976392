"""The graph: named nodes joined by typed edges, a DAG; builder, validation, JSON, rendering.

JSON form (``version`` 1)::

    {"version": 1,
     "nodes": {"encode": {"type": "EncodeText",
                          "params": {},
                          "inputs": {"tokens": ["tokenize", "tokens"],
                                     "text_encoder": ["embed", "text_encoder"]}}},
     "meta": {...}}

Links name outputs, never indices.
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import attrs

from t2i.graph.errors import GraphValidationError

FORMAT_VERSION = 1


@attrs.frozen
class OutputRef:
    """A reference to one named output of a node, used as a link source."""

    node: str
    output: str

    def to_json(self) -> list[str]:
        return [self.node, self.output]


@attrs.define
class Node:
    """One node of a graph: its id, node type name, parameters and input links."""

    id: str
    type: str
    params: dict[str, Any] = attrs.Factory(dict)
    inputs: dict[str, OutputRef] = attrs.Factory(dict)

    def __getitem__(self, output: str) -> OutputRef:
        return OutputRef(self.id, output)


class Graph:
    """A DAG of nodes. Build it in Python, load it from JSON, edit, validate, render.

    Example::

        g = Graph()
        embed = g.add("embed", "LoadTextEncoder", name="toy.embed")
        tok = g.add("tok", "Tokenize", tokenizer=..., text="a cat")
        enc = g.add("encode", "EncodeText", tokens=tok["tokens"],
                    text_encoder=embed["text_encoder"])

    Keyword values that are :class:`OutputRef` become links; the rest become parameters.
    """

    def __init__(self, meta: Mapping[str, Any] | None = None) -> None:
        self.nodes: dict[str, Node] = {}
        self.meta: dict[str, Any] = dict(meta or {})

    # -- building and editing ---------------------------------------------------------
    def add(self, node_id: str, node_type: str, /, **values: Any) -> Node:
        """Add a node; ``OutputRef`` values are links, others parameters."""
        if node_id in self.nodes:
            raise GraphValidationError("a node with this id already exists", node=node_id)
        params = {k: v for k, v in values.items() if not isinstance(v, OutputRef)}
        links = {k: v for k, v in values.items() if isinstance(v, OutputRef)}
        node = Node(node_id, node_type, params, links)
        self.nodes[node_id] = node
        return node

    def __getitem__(self, node_id: str) -> Node:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise GraphValidationError(
                f"no such node; nodes are {', '.join(self.nodes)}", node=node_id
            ) from None

    def __contains__(self, node_id: str) -> bool:
        return node_id in self.nodes

    def __iter__(self) -> Iterator[Node]:
        return iter(self.nodes.values())

    def __len__(self) -> int:
        return len(self.nodes)

    def connect(self, source: OutputRef, node_id: str, input_name: str) -> None:
        """Link ``source`` into ``node_id``'s input ``input_name`` (replacing any link)."""
        self[source.node]
        self[node_id].inputs[input_name] = source

    def set_params(self, node_id: str, **params: Any) -> None:
        """Change parameters of a node."""
        self[node_id].params.update(params)

    def replace(self, node_id: str, node_type: str | None = None, **params: Any) -> Node:
        """Swap a node's type and/or parameters in place, keeping its links.

        E.g. ``graph.replace("sample", sampler="euler")`` or replace a component:
        ``graph.replace("vae", name="other.vae")``.
        """
        node = self[node_id]
        if node_type is not None:
            node.type = node_type
        node.params.update(params)
        return node

    def insert(
        self,
        node_id: str,
        node_type: str,
        *,
        after: OutputRef,
        input_name: str,
        output_name: str,
        **values: Any,
    ) -> Node:
        """Insert a node on every edge leaving ``after``.

        The new node receives ``after`` on ``input_name``; every input that consumed
        ``after`` now consumes the new node's ``output_name``.
        """
        consumers = [(n, name) for n in self for name, ref in n.inputs.items() if ref == after]
        node = self.add(node_id, node_type, **values, **{input_name: after})
        for consumer, name in consumers:
            consumer.inputs[name] = node[output_name]
        return node

    def remove(self, node_id: str) -> None:
        """Remove a node; fails if other nodes still consume its outputs."""
        users = [n.id for n in self for ref in n.inputs.values() if ref.node == node_id]
        if users:
            raise GraphValidationError(f"still used by {', '.join(users)}", node=node_id)
        del self.nodes[node_id]

    def copy(self) -> Graph:
        return Graph.from_dict(self.to_dict())

    # -- structure ---------------------------------------------------------------------
    def topological_order(self) -> list[str]:
        """Node ids in execution order; raises :class:`GraphValidationError` on a cycle.

        Depth-first, inputs in port-name order, with an explicit stack: a chain of any
        length is fine (no recursion).
        """
        order: list[str] = []
        done: set[str] = set()
        for root in self.nodes:
            if root in done:
                continue
            path = [root]  # the nodes being visited, outermost first
            on_path = {root}
            pending = [iter(self._upstream(root))]
            while pending:
                step = next(pending[-1], None)
                if step is None:
                    nid = path.pop()
                    on_path.discard(nid)
                    pending.pop()
                    done.add(nid)
                    order.append(nid)
                    continue
                port, source = step
                if source in done:
                    continue
                if source in on_path:
                    cycle = " -> ".join([*path[path.index(source) :], source])
                    raise GraphValidationError(f"cycle: {cycle}", node=source)
                if source not in self.nodes:
                    raise GraphValidationError(
                        f"linked to missing node {source!r}", node=path[-1], port=port
                    )
                path.append(source)
                on_path.add(source)
                pending.append(iter(self._upstream(source)))
        return order

    def _upstream(self, node_id: str) -> list[tuple[str, str]]:
        return [(port, ref.node) for port, ref in sorted(self.nodes[node_id].inputs.items())]

    def validate(self, node_types: Mapping[str, Any]) -> None:
        """Check everything before anything runs.

        Unknown node type, unknown input or parameter, missing required input or
        parameter, a link to a missing node or output, type mismatch, cycle: each
        raises :class:`GraphValidationError` naming the node and the port.
        """
        for node in self:
            cls = _node_class(node, node_types)
            self._check_inputs(node, cls, node_types)
            _check_params(node, cls)
        self.topological_order()

    def _check_inputs(self, node: Node, cls: Any, node_types: Any) -> None:
        for name, ref in node.inputs.items():
            port = cls.input(name)
            if port is None:
                allowed = ", ".join(p.name for p in cls.inputs) or "(none)"
                raise GraphValidationError(
                    f"{node.type} has no input {name!r}; inputs are {allowed}",
                    node=node.id,
                    port=name,
                )
            src = self.nodes.get(ref.node)
            if src is None:
                raise GraphValidationError(
                    f"linked to missing node {ref.node!r}", node=node.id, port=name
                )
            src_cls = _lookup(node_types, src.type)
            out = src_cls.output(ref.output) if src_cls else None
            if src_cls is not None and out is None:
                allowed = ", ".join(p.name for p in src_cls.outputs)
                raise GraphValidationError(
                    f"source {ref.node!r} ({src.type}) has no output {ref.output!r}; "
                    f"outputs are {allowed}",
                    node=node.id,
                    port=name,
                )
            if out is not None and "ANY" not in (out.type, port.type) and out.type != port.type:
                raise GraphValidationError(
                    f"type mismatch: {ref.node}.{ref.output} is {out.type}, "
                    f"input expects {port.type}",
                    node=node.id,
                    port=name,
                )
        for port in cls.inputs:
            if not port.optional and port.name not in node.inputs:
                raise GraphValidationError(
                    f"required input of type {port.type} is not linked",
                    node=node.id,
                    port=port.name,
                )

    # -- JSON --------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "version": FORMAT_VERSION,
            "nodes": {
                n.id: {
                    "type": n.type,
                    "params": copy.deepcopy(n.params),
                    "inputs": {k: v.to_json() for k, v in n.inputs.items()},
                }
                for n in self
            },
            "meta": copy.deepcopy(self.meta),
        }

    def to_json(self, **kwargs: Any) -> str:
        return json.dumps(self.to_dict(), **{"indent": 2, **kwargs})

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Graph:
        """A graph from its JSON object form (see the module docstring).

        Raises:
            GraphValidationError: a field of the wrong type, an unknown field, an
                unsupported version, or a graph over the size limits; names the node
                and field.
        """
        _check_document(data)
        graph = cls(meta=data.get("meta") or {})
        for nid, spec in data["nodes"].items():
            graph.nodes[nid] = _node_from_json(nid, spec)
        return graph

    @classmethod
    def from_json(cls, text: str) -> Graph:
        """A graph from JSON *text* (:meth:`from_file` reads a file).

        Raises:
            GraphValidationError: the text is not JSON, nests too deeply, is too large, or
                does not describe a graph; the message gives the line and column.
        """
        if not isinstance(text, str):
            hint = "; use Graph.from_file(path) for a file" if isinstance(text, os.PathLike) else ""
            raise GraphValidationError(
                f"Graph.from_json takes JSON text, got {type(text).__name__}{hint}"
            )
        if len(text) > MAX_JSON_CHARS:
            raise GraphValidationError(
                f"graph JSON is {len(text)} characters; the limit is {MAX_JSON_CHARS}",
            )
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise GraphValidationError(
                f"not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}; "
                "fix the syntax (a graph file is one JSON object)"
            ) from None
        except RecursionError:
            raise GraphValidationError(
                f"JSON nests too deeply (the limit is {MAX_DEPTH} levels)"
            ) from None
        return cls.from_dict(data)

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> Graph:
        """A graph from a JSON file (UTF-8); errors name the file.

        Raises:
            GraphValidationError: unreadable, not UTF-8, not JSON, or not a graph.
        """
        source = str(path)
        try:
            size = Path(path).stat().st_size
            if size > MAX_JSON_CHARS:
                raise GraphValidationError(
                    f"file is {size} bytes; the limit is {MAX_JSON_CHARS}", source=source
                )
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise GraphValidationError(
                f"cannot read the file ({exc.strerror or exc})", source=source
            ) from None
        try:
            text = raw.decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            raise GraphValidationError(
                f"not UTF-8 text (byte {exc.start}: {raw[exc.start : exc.start + 1]!r}); "
                "save the graph as UTF-8 JSON",
                source=source,
            ) from None
        try:
            return cls.from_json(text)
        except GraphValidationError as exc:
            raise exc.located(source) from None

    # -- rendering ---------------------------------------------------------------------
    def render_text(self) -> str:
        """One line per node in execution order: ``id = Type(inputs; params)``."""
        lines = []
        for nid in self.topological_order():
            n = self.nodes[nid]
            ins = ", ".join(f"{k}={v.node}.{v.output}" for k, v in sorted(n.inputs.items()))
            ps = ", ".join(f"{k}={_short(v)}" for k, v in sorted(n.params.items()))
            body = "; ".join(s for s in (ins, ps) if s)
            lines.append(f"{nid} = {n.type}({body})")
        return "\n".join(lines)

    def render_mermaid(self) -> str:
        """A mermaid ``flowchart LR``: one box per node, edges labelled ``output -> input``."""
        lines = ["flowchart LR"]
        for nid in self.topological_order():
            lines.append(f'    {_mid(nid)}["{nid}<br/>{self.nodes[nid].type}"]')
        for nid in self.topological_order():
            for port, ref in sorted(self.nodes[nid].inputs.items()):
                lines.append(f"    {_mid(ref.node)} -->|{ref.output} -> {port}| {_mid(nid)}")
        return "\n".join(lines)


MAX_NODES = 100_000
"""Most nodes a graph may have (a 10,000-node chain is fine)."""
MAX_JSON_CHARS = 64 * 1024 * 1024
"""Largest graph JSON text or file read."""
MAX_DEPTH = 64
"""Deepest nesting of parameter and meta values."""
_DOCUMENT_KEYS = ("version", "nodes", "meta")
_NODE_KEYS = ("type", "params", "inputs")


def _check_document(data: Any) -> None:
    if not isinstance(data, Mapping):
        raise GraphValidationError(
            f"a graph JSON document must be an object with 'nodes', got {_json_type(data)}"
        )
    extra = [k for k in data if k not in _DOCUMENT_KEYS]
    if extra:
        raise GraphValidationError(
            f"unknown top-level field {extra[0]!r}; a graph has {', '.join(_DOCUMENT_KEYS)}"
        )
    if "nodes" not in data or not isinstance(data["nodes"], Mapping):
        raise GraphValidationError("a graph JSON object needs a 'nodes' mapping of id -> node")
    version = data.get("version", FORMAT_VERSION)
    if type(version) is not int or version != FORMAT_VERSION:
        raise GraphValidationError(
            f"graph format version {version!r} is not supported (this t2i reads "
            f'{FORMAT_VERSION}); set "version": {FORMAT_VERSION}'
        )
    meta = data.get("meta")
    if meta is not None and not (
        isinstance(meta, Mapping) and all(isinstance(k, str) for k in meta)
    ):
        raise GraphValidationError(f"'meta' must be an object, got {_json_type(meta)}")
    if len(data["nodes"]) > MAX_NODES:
        raise GraphValidationError(
            f"the graph has {len(data['nodes'])} nodes; the limit is {MAX_NODES}"
        )
    if _too_deep(meta):
        raise GraphValidationError(f"'meta' nests deeper than {MAX_DEPTH} levels")


def _node_from_json(nid: Any, spec: Any) -> Node:
    if not isinstance(nid, str) or not nid:
        raise GraphValidationError(f"node ids must be non-empty strings, got {nid!r}")
    if not isinstance(spec, Mapping):
        raise GraphValidationError(
            f"a node must be an object with 'type', got {_json_type(spec)}", node=nid
        )
    extra = [k for k in spec if k not in _NODE_KEYS]
    if extra:
        raise GraphValidationError(
            f"unknown field {extra[0]!r}; a node has {', '.join(_NODE_KEYS)}", node=nid
        )
    node_type = spec.get("type")
    if not isinstance(node_type, str) or not node_type:
        raise GraphValidationError(
            f"'type' must be a node type name (a string), got {node_type!r}", node=nid
        )
    params = _string_keyed(spec.get("params"), nid, "params")
    if _too_deep(params):
        raise GraphValidationError(f"'params' nest deeper than {MAX_DEPTH} levels", node=nid)
    inputs = {}
    for port, link in _string_keyed(spec.get("inputs"), nid, "inputs").items():
        if not (
            isinstance(link, (list, tuple))
            and len(link) == 2
            and all(isinstance(s, str) for s in link)
        ):
            raise GraphValidationError(
                f"a link must be [node_id, output_name], got {link!r}", node=nid, port=port
            )
        inputs[port] = OutputRef(link[0], link[1])
    return Node(nid, node_type, params, inputs)


def _string_keyed(value: Any, nid: str, field: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise GraphValidationError(
            f"{field!r} must be an object, got {_json_type(value)}", node=nid, port=field
        )
    bad = [k for k in value if not isinstance(k, str)]
    if bad:
        raise GraphValidationError(
            f"{field!r} keys must be strings, got {bad[0]!r}", node=nid, port=field
        )
    return dict(value)


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists/objects inside ``value`` nest deeper than ``limit`` (no recursion)."""
    stack = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, Mapping):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend((v, depth + 1) for v in item)
    return False


def _json_type(value: Any) -> str:
    names = {dict: "an object", list: "an array", str: "a string", bool: "a boolean"}
    if value is None:
        return "null"
    for kind, name in names.items():
        if isinstance(value, kind):
            return name
    if isinstance(value, (int, float)):
        return "a number"
    return type(value).__name__


def _node_class(node: Node, node_types: Any) -> Any:
    """The node type class of ``node``; unknown types raise naming the node."""
    from t2i.registry.errors import UnknownComponentError

    if not isinstance(node.type, str):
        raise GraphValidationError(f"node type must be a string, got {node.type!r}", node=node.id)
    cls = node_types.get(node.type) if isinstance(node_types, Mapping) else None
    if cls is None and hasattr(node_types, "get_node_type"):
        try:
            cls = node_types.get_node_type(node.type)
        except (UnknownComponentError, GraphValidationError) as exc:
            raise GraphValidationError(str(exc), node=node.id) from None
    if cls is None:
        known = ", ".join(sorted(node_types)) if isinstance(node_types, Mapping) else ""
        raise GraphValidationError(f"unknown node type {node.type!r}; known: {known}", node=node.id)
    return cls


def _check_params(node: Node, cls: Any) -> None:
    for name, value in node.params.items():
        param = cls.param(name) if isinstance(name, str) else None
        if param is None:
            allowed = ", ".join(p.name for p in cls.params) or "(none)"
            raise GraphValidationError(
                f"{node.type} has no parameter {name!r}; parameters are {allowed}",
                node=node.id,
                port=str(name),
            )
        problem = param_problem(param, value)
        if problem:
            raise GraphValidationError(problem, node=node.id, port=name)
    for param in cls.params:
        if param.required and param.name not in node.params:
            raise GraphValidationError(
                "required parameter is not set", node=node.id, port=param.name
            )


def param_problem(param: Any, value: Any) -> str | None:
    """Why ``value`` does not suit the node parameter ``param`` (type, choices), or None."""
    if not _type_ok(value, param.type):
        return (
            f"value {_short(value)} is a {type(value).__name__}, expected {_type_name(param.type)}"
        )
    if param.choices is not None and value not in param.choices:
        return f"value {_short(value)} not allowed; choose one of {list(param.choices)}"
    number = isinstance(value, (int, float)) and not isinstance(value, bool)
    low, high = getattr(param, "minimum", None), getattr(param, "maximum", None)
    if number and ((low is not None and value < low) or (high is not None and value > high)):
        bounds = f"[{'-inf' if low is None else low}, {'inf' if high is None else high}]"
        return f"value {_short(value)} out of range; must be in {bounds}"
    return None


def _type_ok(value: Any, expected: type | tuple[type, ...]) -> bool:
    """isinstance, with an int accepted where a float is expected (JSON has one number type)."""
    types = expected if isinstance(expected, tuple) else (expected,)
    if object in types:
        return True
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        return True
    return isinstance(value, types)


def _type_name(expected: type | tuple[type, ...]) -> str:
    types = expected if isinstance(expected, tuple) else (expected,)
    return " or ".join("None" if t is type(None) else t.__name__ for t in types)


def _lookup(node_types: Any, type_name: str) -> Any:
    from t2i.registry.errors import UnknownComponentError

    if isinstance(node_types, Mapping):
        return node_types.get(type_name)
    try:
        return node_types.get_node_type(type_name)
    except (UnknownComponentError, GraphValidationError):
        return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _mid(node_id: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in node_id)
