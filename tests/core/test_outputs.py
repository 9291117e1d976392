"""Output files as A1111 writes them: format from the extension, infotext inside, never
overwritten, readable as the umask says."""

import os
import random

import pytest
from click.testing import CliRunner
from PIL import Image

from t2i.cli.main import cli
from t2i.infotext import parse_infotext
from t2i.outputs import OutputPathError, read_infotext, save_images


def _images(n):
    return [Image.new("RGB", (8, 8), (random.randrange(256), 0, 0)) for _ in range(n)]


def test_a_folder_continues_its_numbering_and_a_repeated_seed_replaces_nothing(tmp_path):
    first = save_images(_images(2), ["a", "b"], [3, 4], tmp_path)
    again = save_images(_images(1), ["c"], [3], tmp_path)
    assert [p.name for p in first + again] == ["00000-3.png", "00001-4.png", "00002-3.png"]
    assert read_infotext(first[0]) == "a" and read_infotext(again[0]) == "c"
    (tmp_path / "00041-9.png").write_bytes(b"")  # a gap: continue after the highest
    assert save_images(_images(1), ["d"], [1], tmp_path)[0].name == "00042-1.png"


def test_an_existing_file_gets_a_numbered_sibling_unless_overwrite(tmp_path):
    target = tmp_path / "out.png"
    a = save_images(_images(1), ["a"], [1], target)
    b = save_images(_images(1), ["b"], [1], target)
    c = save_images(_images(2), ["c", "d"], [1, 2], target)
    assert [p.name for p in a + b + c] == [
        "out.png",
        "out-0001.png",
        "out-0002.png",
        "out-0003.png",
    ]
    assert read_infotext(target) == "a"
    save_images(_images(1), ["new"], [1], target, overwrite=True)
    assert read_infotext(target) == "new"


@pytest.mark.parametrize(
    ("suffix", "fmt"), [(".jpg", "JPEG"), (".jpeg", "JPEG"), (".webp", "WEBP")]
)
def test_the_extension_picks_the_format_and_exif_carries_the_infotext(tmp_path, suffix, fmt):
    info = "a red cube, (shiny:1.2)\nNegative prompt: blur\nSteps: 3, Seed: 7, Size: 8x8"
    path = save_images(_images(1), [info], [7], tmp_path / f"x{suffix}")[0]
    assert path.is_file() and Image.open(path).format == fmt
    assert read_infotext(path) == info
    assert parse_infotext(read_infotext(path))["Seed"] == "7"


def test_image_formats_t2i_does_not_write_are_refused(tmp_path):
    with pytest.raises(OutputPathError, match=r"\.gif.*\.png, \.jpg, \.webp"):
        save_images(_images(1), ["a"], [1], tmp_path / "x.gif")
    assert not (tmp_path / "x.gif").exists()


def test_files_are_readable_as_the_umask_says(tmp_path):
    path = save_images(_images(1), ["a"], [1], tmp_path / "p.png")[0]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask


def test_a_name_taken_meanwhile_is_skipped_not_clobbered(tmp_path, monkeypatch):
    from t2i import outputs

    real, calls = outputs._name, []

    def racing(path, file_target, number, seed):
        target = real(path, file_target, number, seed)
        calls.append(target)
        if len(calls) == 1:  # another process writes this name first
            target.write_bytes(b"theirs")
        return target

    monkeypatch.setattr(outputs, "_name", racing)
    written = save_images(_images(1), ["mine"], [5], tmp_path)
    assert written[0].name == "00001-5.png" and (tmp_path / "00000-5.png").read_bytes() == b"theirs"


def test_cli_output_jpg_and_grid_infotext(t2i_manager, tmp_path):
    out = tmp_path / "x.jpg"
    args = ["generate", "a", "--recipe", "toy-gan", "--seed", "2", "-o", str(out)]
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert out.is_file() and Image.open(out).format == "JPEG" and "Seed: 2" in read_infotext(out)
    assert CliRunner().invoke(cli, args).exit_code == 0
    assert (tmp_path / "x-0001.jpg").is_file()  # the second run did not overwrite
    matrix = [
        "generate",
        "a|b",
        "--prompt-matrix",
        "--recipe",
        "toy-gan",
        "-o",
        str(tmp_path / "m"),
    ]
    result = CliRunner().invoke(cli, matrix)
    assert result.exit_code == 0, result.output
    assert "Seed:" in read_infotext(tmp_path / "m" / "grid.png")
