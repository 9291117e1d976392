"""OpenAI's pickled dVAE modules -> safetensors, through the restricted unpickler."""

import os
import pickle
import zipfile

import pytest
import torch
from safetensors.torch import load_file
from t2i_dalle.convert import UnsafePickleError, convert_openai_dvae, load_module_records
from t2i_dalle.dvae import Decoder, Encoder, config_from_state

dall_e = pytest.importorskip("dall_e", reason="the test-only reference `dall-e` is not installed")

SMALL = {"n_hid": 64, "n_blk_per_group": 1, "vocab_size": 512}


def test_converted_encoder_and_decoder_load_and_match(tmp_path, rel_err):
    """torch.save of dall_e's own modules (the release's layout) -> our modules, same outputs."""
    enc = dall_e.Encoder(**SMALL, use_mixed_precision=False)
    dec = dall_e.Decoder(n_init=32, **SMALL, use_mixed_precision=False)
    torch.save(enc, tmp_path / "encoder.pkl")
    torch.save(dec, tmp_path / "decoder.pkl")
    for ref, name, cls in ((enc, "encoder", Encoder), (dec, "decoder", Decoder)):
        out = convert_openai_dvae(tmp_path / f"{name}.pkl", tmp_path / f"{name}.safetensors")
        state = load_file(out)
        assert state.keys() == ref.state_dict().keys()
        ours = cls(config_from_state(state, name))
        ours.load_state_dict(state)
        x = (
            torch.rand(1, 3, 16, 16)
            if name == "encoder"
            else torch.nn.functional.one_hot(torch.randint(0, 512, (1, 2, 2)), 512)
            .permute(0, 3, 1, 2)
            .float()
        )
        with torch.no_grad():
            assert rel_err(ours(x), ref(x)) < 1e-6


class _Exploit:
    """Pickles as a call of os.system that would create a marker file."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_malicious_pickle_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    bad = tmp_path / "encoder.pkl"
    torch.save({"model": _Exploit(marker)}, bad)
    with pytest.raises(UnsafePickleError, match=r"refused global '(posix|os|nt)\.system'"):
        convert_openai_dvae(bad, tmp_path / "out.safetensors")
    assert not marker.exists()
    assert not (tmp_path / "out.safetensors").exists()
    # the same archive through plain pickle WOULD run it: the side effect is real
    with zipfile.ZipFile(bad) as z:
        data = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    pickle.loads(data)
    assert marker.exists()


def test_eval_global_inside_module_state_is_refused(tmp_path):
    enc = dall_e.Encoder(**SMALL, use_mixed_precision=False)
    enc.blocks.input.hook = _Exploit(tmp_path / "pwned")  # hidden in a module's __dict__
    torch.save(enc, tmp_path / "encoder.pkl")
    with pytest.raises(UnsafePickleError, match="refused global"):
        load_module_records(tmp_path / "encoder.pkl")
    assert not (tmp_path / "pwned").exists()


def test_not_a_zip_archive_is_refused(tmp_path):
    path = tmp_path / "legacy.pkl"
    path.write_bytes(pickle.dumps({"w": 1}))
    with pytest.raises(UnsafePickleError, match=r"not a torch\.save zip archive"):
        load_module_records(path)
