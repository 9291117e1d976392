import json

import pytest

from t2i.graph import Graph, GraphValidationError, OutputRef
from t2i.testing import make_manager, toy_plugin


@pytest.fixture(scope="module")
def registry():
    return make_manager(toy_plugin).registry


def small_graph():
    g = Graph()
    tok = g.add("tok", "LoadTokenizer", name="toy.chars")
    enc = g.add("enc", "LoadTextEncoder", name="toy.embed")
    t = g.add("tokenize", "Tokenize", tokenizer=tok["tokenizer"], text="hi")
    g.add("encode", "EncodeText", tokens=t["tokens"], text_encoder=enc["text_encoder"])
    return g


def test_builder_links_and_params():
    g = small_graph()
    assert g["encode"].inputs["tokens"] == OutputRef("tokenize", "tokens")
    assert g["tokenize"].params == {"text": "hi"}
    assert g.topological_order().index("tokenize") < g.topological_order().index("encode")


def test_json_round_trip_with_named_outputs(registry):
    g = small_graph()
    data = json.loads(g.to_json())
    assert data["nodes"]["encode"]["inputs"]["tokens"] == ["tokenize", "tokens"]
    g2 = Graph.from_json(g.to_json())
    assert g2.to_dict() == g.to_dict()
    g2.validate(registry)


def test_type_mismatch_names_node_and_port(registry):
    g = small_graph()
    g.connect(g["tok"]["tokenizer"], "encode", "tokens")
    with pytest.raises(GraphValidationError) as err:
        g.validate(registry)
    assert err.value.node == "encode" and err.value.port == "tokens"
    assert "TOKENIZER" in str(err.value) and "TOKENS" in str(err.value)


def test_missing_input(registry):
    g = small_graph()
    del g["encode"].inputs["text_encoder"]
    with pytest.raises(GraphValidationError) as err:
        g.validate(registry)
    assert (err.value.node, err.value.port) == ("encode", "text_encoder")


def test_cycle(registry):
    g = Graph()
    a = g.add("a", "Decode")
    b = g.add("b", "EncodeImage", image=a["image"])
    g.connect(b["latent"], "a", "samples")
    with pytest.raises(GraphValidationError, match="cycle"):
        g.topological_order()


def test_unknown_node_type_and_param_and_output(registry):
    g = small_graph()
    g.add("x", "NoSuchNode")
    with pytest.raises(GraphValidationError) as err:
        g.validate(registry)
    assert err.value.node == "x" and "NoSuchNode" in str(err.value)
    g = small_graph()
    g.set_params("tokenize", txt="typo")
    with pytest.raises(GraphValidationError, match="no parameter 'txt'"):
        g.validate(registry)
    g = small_graph()
    g.connect(OutputRef("tok", "nope"), "tokenize", "tokenizer")
    with pytest.raises(GraphValidationError, match="no output 'nope'"):
        g.validate(registry)


def test_bad_json_link():
    with pytest.raises(GraphValidationError, match=r"\[node_id, output_name\]"):
        Graph.from_dict({"nodes": {"a": {"type": "Decode", "inputs": {"samples": ["x", 0]}}}})
    with pytest.raises(GraphValidationError, match="version"):
        Graph.from_dict({"version": 99, "nodes": {}})


def test_text_and_mermaid_rendering():
    g = small_graph()
    text = g.render_text()
    assert "encode = EncodeText(" in text and "tokens=tokenize.tokens" in text
    mer = g.render_mermaid()
    assert mer.startswith("flowchart LR") and "n_tokenize -->|tokens -> tokens| n_encode" in mer


def test_edit_replace_and_insert(registry):
    g = small_graph()
    g.replace("enc", name="other.encoder")
    assert g["enc"].params["name"] == "other.encoder"
    g = small_graph()
    g.insert(
        "tokenize2",
        "Tokenize",
        after=g["tok"]["tokenizer"],
        input_name="tokenizer",
        output_name="tokens",
        text="x",
    )
    # the Tokenize consumer of the tokenizer now reads the inserted node (type mismatch shows it)
    assert g["tokenize"].inputs["tokenizer"] == OutputRef("tokenize2", "tokens")
    with pytest.raises(GraphValidationError):
        g.validate(registry)
    with pytest.raises(GraphValidationError, match="still used"):
        g.remove("tok")


def test_parameter_types_are_checked(registry):
    g = small_graph()
    g.set_params("tokenize", text=3)
    with pytest.raises(GraphValidationError, match="expected str or list") as err:
        g.validate(registry)
    assert (err.value.node, err.value.port) == ("tokenize", "text")
    g = Graph()
    g.add("e", "EmptyLatent", width="64")
    with pytest.raises(GraphValidationError, match="expected int"):
        g.validate(registry)
    g = Graph()
    g.add("e", "EmptyLatent", width=64, seed=3)
    g.validate(registry)
