"""Fuzz: mutated graph JSON (structure and text) through ``Graph``, ``Engine.from_graph`` and
``t2i run``.

Rule: a result, or a documented error (GraphError, EngineError, RequestError,
UnknownComponentError) whose message says where; ``t2i run`` exits 0 or 2, never 1.
"""

from __future__ import annotations

import itertools
import json

import pytest
from click.testing import CliRunner
from fuzz_rules import bounded_memory, fuzz_settings, obeys_rule
from hypothesis import given
from hypothesis import strategies as st

from t2i import Engine
from t2i.cli.main import cli
from t2i.graph import Graph
from t2i.testing import make_manager, toy_plugin

pytestmark = pytest.mark.filterwarnings("ignore")
RECIPES = ("toy-diffusion", "toy-gan", "toy-ar", "toy-cascade")
MANAGER = make_manager(toy_plugin)


def _document(recipe) -> dict:
    """The JSON ``t2i graph show --format json`` writes (the graph alone before it had meta)."""
    export = getattr(recipe, "graph_dict", None)
    return export() if export else recipe.graph.to_dict()


DOCUMENTS = {name: _document(Engine.build(name, plugins=MANAGER).recipe) for name in RECIPES}
_names = itertools.count()

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=12)
    | st.sampled_from(["ANY", "LATENT", "Decode", "toy.euler", "sample", "image", ""]),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def mutated_document(draw) -> object:
    """A recipe's graph JSON with 1-3 edits at random places (replace, delete, insert)."""
    doc = json.loads(json.dumps(DOCUMENTS[draw(st.sampled_from(RECIPES))]))
    for _ in range(draw(st.integers(1, 3))):
        doc = _edit(doc, draw)
    return doc


def _edit(doc, draw):
    if draw(st.integers(0, 19)) == 0:
        return draw(json_values)  # the whole document
    parent, key = None, None
    node = doc
    while isinstance(node, (dict, list)) and node and draw(st.booleans()):
        keys = list(node) if isinstance(node, dict) else list(range(len(node)))
        parent, key = node, draw(st.sampled_from(keys))
        node = node[key]
    op = draw(st.sampled_from(["replace", "delete", "insert", "wrap"]))
    if parent is None:
        target, key = doc, None
    else:
        target = parent
    if op == "insert" and isinstance(node, dict):
        node[draw(st.text(max_size=8))] = draw(json_values)
    elif op == "insert" and isinstance(node, list):
        node.append(draw(json_values))
    elif key is None:  # the document itself: only inserts (replacing it is done above)
        return doc
    elif op == "delete":
        del target[key]
    elif op == "wrap":
        target[key] = [node]
    else:
        target[key] = draw(json_values)
    return doc


def _clear(error: BaseException) -> str | None:
    """A message that names where (node, field, line or file) and is not a raw repr."""
    text = str(error)
    if len(text) < 12 or "Traceback" in text:
        return f"too terse: {text!r}"
    return None


def _through_api(doc) -> None:
    graph = Graph.from_json(json.dumps(doc, allow_nan=True))
    graph.validate(MANAGER.registry)
    graph.render_text()
    pipe = Engine.from_graph(graph.to_dict(), plugins=MANAGER)
    pipe.make_request()


@fuzz_settings(150)
@given(doc=mutated_document())
def test_mutated_graph_json_through_the_api(doc):
    with bounded_memory():
        obeys_rule("graph json (api)", lambda: _through_api(doc), check_message=_clear)


text_edit = st.one_of(
    st.tuples(st.just("truncate"), st.floats(0, 1)),
    st.tuples(st.just("insert"), st.floats(0, 1), st.text(min_size=1, max_size=8)),
    st.tuples(st.just("bytes"), st.floats(0, 1), st.binary(min_size=1, max_size=4)),
    st.tuples(st.just("nest"), st.integers(1, 50_000)),
    st.tuples(st.just("bom")),
    st.tuples(st.just("number"), st.sampled_from(["1e999", "NaN", "-Infinity", "1" * 5000])),
)


def _apply_text(data: bytes, edit: tuple) -> bytes:
    kind = edit[0]
    at = int(edit[1] * len(data)) if len(edit) > 1 and isinstance(edit[1], float) else 0
    if kind == "truncate":
        return data[:at]
    if kind == "insert":
        return data[:at] + edit[2].encode("utf-8", "surrogatepass") + data[at:]
    if kind == "bytes":
        return data[:at] + edit[2] + data[at:]
    if kind == "nest":
        return b'{"nodes": {}, "meta": {"x": ' + b"[" * edit[1] + b"]" * edit[1] + b"}}"
    if kind == "bom":
        return b"\xef\xbb\xbf" + data
    return data.replace(b'"steps": 4', b'"steps": ' + edit[1].encode(), 1)


@fuzz_settings(60)
@given(
    recipe=st.sampled_from(RECIPES),
    text_edits=st.lists(text_edit, max_size=2),
    doc=st.one_of(st.none(), mutated_document()),
)
def test_mutated_graph_files_through_t2i_run(
    t2i_manager, tmp_path_factory, recipe, text_edits, doc
):
    folder = tmp_path_factory.mktemp("g")
    data = json.dumps(DOCUMENTS[recipe] if doc is None else doc, allow_nan=True).encode()
    for edit in text_edits:
        data = _apply_text(data, edit)
    path = folder / f"g{next(_names)}.json"
    path.write_bytes(data)

    def run() -> None:
        out = CliRunner().invoke(
            cli, ["run", str(path), "-o", str(folder / "out")], catch_exceptions=False
        )
        if out.exit_code not in (0, 2) or "Traceback" in out.output:
            raise RuntimeError(f"t2i run exited {out.exit_code}: {out.output[-400:]}")
        if out.exit_code == 2:  # a usage error: it says what and where
            raise UsageError(out.output.strip())

    with bounded_memory():
        obeys_rule("graph json (t2i run)", run, documented=(UsageError,), check_message=_clear)


class UsageError(Exception):
    """``t2i run`` exited 2 with this message."""
