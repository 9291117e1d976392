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
        """Node ids in execution order; raises :class:`GraphValidationError` on a cycle."""
        order: list[str] = []
        state: dict[str, int] = {}  # 1 = visiting, 2 = done

        def visit(nid: str, path: list[str]) -> None:
            if state.get(nid) == 2:
                return
            if state.get(nid) == 1:
                cycle = " -> ".join([*path[path.index(nid) :], nid])
                raise GraphValidationError(f"cycle: {cycle}", node=nid)
            state[nid] = 1
            for port, ref in sorted(self[nid].inputs.items()):
                if ref.node not in self.nodes:
                    raise GraphValidationError(
                        f"linked to missing node {ref.node!r}", node=nid, port=port
                    )
                visit(ref.node, [*path, nid])
            state[nid] = 2
            order.append(nid)

        for nid in self.nodes:
            visit(nid, [])
        return order

    def validate(self, node_types: Mapping[str, Any]) -> None:
        """Check everything before anything runs.

        Unknown node type, unknown input or parameter, missing required input or
        parameter, a link to a missing node or output, type mismatch, cycle: each
        raises :class:`GraphValidationError` naming the node and the port.
        """
        from t2i.registry.errors import UnknownComponentError

        for node in self:
            cls = node_types.get(node.type) if isinstance(node_types, Mapping) else None
            if cls is None and hasattr(node_types, "get_node_type"):
                try:
                    cls = node_types.get_node_type(node.type)
                except (UnknownComponentError, GraphValidationError) as exc:
                    raise GraphValidationError(str(exc), node=node.id) from None
            if cls is None:
                known = ", ".join(sorted(node_types)) if isinstance(node_types, Mapping) else ""
                raise GraphValidationError(
                    f"unknown node type {node.type!r}; known: {known}", node=node.id
                )
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
            for name, value in node.params.items():
                param = cls.param(name)
                if param is None:
                    allowed = ", ".join(p.name for p in cls.params) or "(none)"
                    raise GraphValidationError(
                        f"{node.type} has no parameter {name!r}; parameters are {allowed}",
                        node=node.id,
                        port=name,
                    )
                if not _type_ok(value, param.type):
                    raise GraphValidationError(
                        f"value {value!r} is a {type(value).__name__}, expected "
                        f"{_type_name(param.type)}",
                        node=node.id,
                        port=name,
                    )
                if param.choices is not None and value not in param.choices:
                    raise GraphValidationError(
                        f"value {value!r} not allowed; choose one of {list(param.choices)}",
                        node=node.id,
                        port=name,
                    )
            for param in cls.params:
                if param.required and param.name not in node.params:
                    raise GraphValidationError(
                        "required parameter is not set", node=node.id, port=param.name
                    )
        self.topological_order()

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
        if not isinstance(data, Mapping) or "nodes" not in data:
            raise GraphValidationError("a graph JSON object needs a 'nodes' mapping")
        version = data.get("version", FORMAT_VERSION)
        if version != FORMAT_VERSION:
            raise GraphValidationError(
                f"graph format version {version} is not supported (this t2i reads {FORMAT_VERSION})"
            )
        graph = cls(meta=data.get("meta") or {})
        for nid, spec in data["nodes"].items():
            if "type" not in spec:
                raise GraphValidationError("missing 'type'", node=nid)
            inputs = {}
            for port, link in (spec.get("inputs") or {}).items():
                if not (
                    isinstance(link, (list, tuple))
                    and len(link) == 2
                    and all(isinstance(s, str) for s in link)
                ):
                    raise GraphValidationError(
                        f"a link must be [node_id, output_name], got {link!r}", node=nid, port=port
                    )
                inputs[port] = OutputRef(link[0], link[1])
            graph.nodes[nid] = Node(nid, spec["type"], dict(spec.get("params") or {}), inputs)
        return graph

    @classmethod
    def from_json(cls, text_or_path: str | Path) -> Graph:
        text = str(text_or_path)
        if not text.lstrip().startswith("{"):
            text = Path(text_or_path).read_text()
        return cls.from_dict(json.loads(text))

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
    if isinstance(node_types, Mapping):
        return node_types.get(type_name)
    try:
        return node_types.get_node_type(type_name)
    except Exception:
        return None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _mid(node_id: str) -> str:
    return "n_" + "".join(c if c.isalnum() else "_" for c in node_id)
