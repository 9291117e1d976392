import random

from t2i.infotext import format_infotext, parse_infotext


def test_round_trip_with_quoting():
    params = {
        "Steps": 20,
        "Sampler": "DPM++ 2M",
        "Schedule type": "Karras",
        "CFG scale": 7,
        "Seed": random.randrange(2**32),
        "Size": "512x768",
        "Model": "my, model: v2",
        "Denoising strength": None,
    }
    text = format_infotext("a cat,\nsecond line", "ugly, blurry", params)
    assert "Denoising strength" not in text
    assert '"my, model: v2"' in text
    parsed = parse_infotext(text)
    assert parsed["Prompt"] == "a cat,\nsecond line"
    assert parsed["Negative prompt"] == "ugly, blurry"
    assert parsed["Model"] == "my, model: v2" and parsed["Seed"] == str(params["Seed"])
    assert (parsed["Size-1"], parsed["Size-2"]) == ("512", "768")


def test_a1111_example_line_parses():
    text = (
        "a photo of a cat\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ 2M, Schedule type: "
        "Karras, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 6ce0161689, "
        "Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )
    parsed = parse_infotext(text)
    assert parsed["Sampler"] == "DPM++ 2M" and parsed["Model hash"] == "6ce0161689"
    assert parsed["Prompt"] == "a photo of a cat" and parsed["Negative prompt"] == "dog"


def test_short_last_line_is_prompt_text():
    parsed = parse_infotext("just a prompt: with a colon")
    assert parsed["Prompt"] == "just a prompt: with a colon"
