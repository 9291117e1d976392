from t2i import Engine
from t2i.matrix import prompt_matrix_grid


def test_prompt_matrix_renders_every_combination_with_one_seed(t2i_manager):
    pipe = Engine.build("toy-gan")
    grid, result = prompt_matrix_grid(pipe, "a cube|red|shiny", seed=5)
    assert result.prompts == ["a cube", "a cube, red", "a cube, shiny", "a cube, red, shiny"]
    assert result.seeds == [5, 5, 5, 5]
    assert len({im.tobytes() for im in result.images}) == 4  # prompts differ, seed shared
    w, h = result.images[0].size
    assert grid.size == (2 * w, 2 * (h + 14))
