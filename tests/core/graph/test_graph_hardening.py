"""Issue 22: graph JSON of every malformed kind gets a GraphValidationError naming the file,
node and field; validation and ordering are iterative (a 10,000-node chain is fine)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from t2i.graph import Executor, Graph, GraphValidationError, NodeType, Param, Port
from t2i.graph import graph as graph_module
from t2i.testing import make_manager, toy_plugin


@pytest.fixture(scope="module")
def registry():
    return make_manager(toy_plugin).registry


class Step(NodeType):
    """x -> x + 1 (a chain link)."""

    inputs = (Port("x", "ANY", optional=True),)
    outputs = (Port("x", "ANY"),)
    params = (Param("start", int, 0),)

    def execute(self, ctx, *, x, start):
        return {"x": start if x is None else x + 1}


def _chain(n: int) -> Graph:
    g = Graph()
    prev = g.add("n0", "Step")
    for i in range(1, n):
        prev = g.add(f"n{i}", "Step", x=prev["x"])
    return g


def test_a_10000_node_chain_validates_orders_and_runs():
    g = _chain(10_000)
    g.validate({"Step": Step})
    order = g.topological_order()
    assert order[0] == "n0" and order[-1] == "n9999" and len(order) == 10_000
    assert len(g.render_text().splitlines()) == 10_000
    out = Executor({"Step": Step}, cache_size=0).run(g, outputs=["n9999"])
    assert out["n9999"]["x"] == 9999
    assert Graph.from_json(g.to_json()).topological_order() == order


def test_a_long_cycle_is_reported_with_its_path():
    g = _chain(5000)
    g.connect(g["n4999"]["x"], "n0", "x")
    with pytest.raises(GraphValidationError, match=r"cycle: n0 -> n4999 -> .* -> n1 -> n0"):
        g.topological_order()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[1, 2]", "must be an object"),  # JSON text, once taken for a path
        ("null", "must be an object"),
        ("{", "not valid JSON: .* line 1, column 2"),
        ('{"nodes": {}} trailing', "not valid JSON"),
        ("[" * 100_000 + "]" * 100_000, "nests too deeply"),
        ('{"nodes": []}', "'nodes' mapping"),
        ('{"nodes": {}, "version": "1"}', "version '1' is not supported"),
        ('{"nodes": {}, "verson": 1}', "unknown top-level field 'verson'"),
        ('{"nodes": {}, "meta": [1]}', "'meta' must be an object"),
        ('{"nodes": {"a": 5}}', "node 'a': a node must be an object"),
        ('{"nodes": {"a": {"type": 5}}}', "node 'a': 'type' must be a node type name"),
        ('{"nodes": {"a": {"type": ["Decode"]}}}', "'type' must be a node type name"),
        ('{"nodes": {"a": {"type": "Decode", "params": [1]}}}', "'params' must be an object"),
        ('{"nodes": {"a": {"type": "Decode", "inputs": 3}}}', "'inputs' must be an object"),
        ('{"nodes": {"a": {"type": "Decode", "inputs": {"x": "b"}}}}', r"\[node_id, output"),
        ('{"nodes": {"a": {"type": "Decode", "input": {}}}}', "unknown field 'input'"),
        (
            '{"nodes": {"a": {"type": "Decode", "params": {"p": ' + "[" * 70 + "]" * 70 + "}}}}",
            "nest deeper than 64",
        ),
    ],
)
def test_malformed_json_text(text, needle):
    with pytest.raises(GraphValidationError, match=needle):
        Graph.from_json(text)


def test_from_json_takes_text_and_from_file_takes_a_path(tmp_path):
    path = tmp_path / "g.json"
    path.write_text(_chain(3).to_json())
    assert len(Graph.from_file(path)) == 3 and len(Graph.from_file(str(path))) == 3
    with pytest.raises(GraphValidationError, match=r"takes JSON text.*Graph.from_file"):
        Graph.from_json(path)


@pytest.mark.parametrize(
    ("data", "needle"),
    [
        (b"\xff\xfe{}", "not UTF-8 text"),
        (b'{"nodes": {"a": {"type": 5}}}', "node 'a': 'type' must be"),
        (b'{"nodes": ', "not valid JSON"),
        (b"\xef\xbb\xbf" + b'{"nodes": {}}', None),  # a BOM is fine
    ],
)
def test_file_errors_name_the_file(tmp_path, data, needle):
    path = tmp_path / "bad.json"
    path.write_bytes(data)
    if needle is None:
        assert len(Graph.from_file(path)) == 0
        return
    with pytest.raises(GraphValidationError, match=needle) as info:
        Graph.from_file(path)
    assert str(info.value).startswith(f"{path}: ") and info.value.source == str(path)


def test_missing_file_and_size_limits(tmp_path, monkeypatch):
    with pytest.raises(GraphValidationError, match="cannot read the file") as info:
        Graph.from_file(tmp_path / "nope.json")
    assert "nope.json" in str(info.value)
    monkeypatch.setattr(graph_module, "MAX_NODES", 10)
    with pytest.raises(GraphValidationError, match="11 nodes; the limit is 10"):
        Graph.from_json(_chain(11).to_json())
    monkeypatch.setattr(graph_module, "MAX_JSON_CHARS", 100)
    big = tmp_path / "big.json"
    big.write_text(_chain(5).to_json())
    with pytest.raises(GraphValidationError, match="the limit is 100"):
        Graph.from_file(big)
    with pytest.raises(GraphValidationError, match="the limit is 100"):
        Graph.from_json(big.read_text())


def test_wrong_typed_fields_in_a_built_graph_never_crash_validation(registry):
    g = Graph()
    g.add("a", "Decode")
    g.nodes["a"].type = 7  # type: ignore[assignment]
    with pytest.raises(GraphValidationError, match="node type must be a string"):
        g.validate(registry)
    g = Graph()
    g.add("t", "LoadTokenizer", name=5)
    with pytest.raises(GraphValidationError, match="expected str") as info:
        g.validate(registry)
    assert (info.value.node, info.value.port) == ("t", "name")


def test_engine_from_graph_takes_a_graph_a_dict_or_a_path(t2i_manager, tmp_path):
    from t2i import Engine

    data = Engine.build("toy-gan").recipe.graph_dict()
    path = Path(tmp_path / "g.json")
    path.write_text(json.dumps(data))
    images = [
        Engine.from_graph(source)(seed=3).images[0].tobytes()
        for source in (data, Graph.from_dict(data), path, str(path))
    ]
    assert len(set(images)) == 1
    data["meta"]["output"] = ["decode"]
    with pytest.raises(GraphValidationError, match=r"meta.output must be \[node_id"):
        Engine.from_graph(data)
    data["meta"]["output"] = ["decode", "nope"]
    with pytest.raises(GraphValidationError, match="has no output 'nope'"):
        Engine.from_graph(data)
