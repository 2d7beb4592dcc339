"""The model page's figures: a training curve the UI can show inline, and one chart of
the candidate, the champion and popularity."""

import base64
import re

import pytest

from assets.model_chain import _judgement_shown
from assets.plots import INLINE_MARKDOWN_LIMIT, SPARK_WIDTH, training_curve
from recloop.training.chain import Judgement


def history(epochs: int) -> list[dict[str, float]]:
    return [{"epoch": e, "loss": 1.0 / e, "score": 0.3 - 0.1 / e} for e in range(1, epochs + 1)]


def svg_of(markdown: str) -> str:
    encoded = re.fullmatch(r"!\[training curve\]\(data:image/svg\+xml;base64,(.+)\)", markdown)
    assert encoded, markdown[:80]
    return base64.b64decode(encoded.group(1)).decode()


@pytest.mark.parametrize("epochs", [2, 12, 40, 300])
def test_the_training_curve_fits_the_uis_inline_limit(epochs: int) -> None:
    markdown = training_curve(history(epochs), best_epoch=epochs).value
    assert len(markdown) < INLINE_MARKDOWN_LIMIT
    svg = svg_of(markdown)
    lines = re.findall(r'points="([^"]+)"', svg)
    assert len(lines) == 2
    for points in lines:
        xs = [int(v) for v in points.split(",")[::2]]
        # Whatever the stride, the curve spans the first to the last epoch.
        assert xs[0] == 0 and xs[-1] == SPARK_WIDTH and xs == sorted(xs)
    # The kept epoch is the last here: its marker sits at the right edge.
    assert f'x1="{SPARK_WIDTH}"' in svg


def test_the_score_rises_upwards_and_the_kept_epoch_is_marked() -> None:
    svg = svg_of(training_curve(history(11), best_epoch=6).value)
    loss, score = re.findall(r'points="([^"]+)"', svg)
    score_ys = [int(v) for v in score.split(",")[1::2]]
    loss_ys = [int(v) for v in loss.split(",")[1::2]]
    # SVG's y grows downwards: a rising score draws decreasing y, a falling loss increasing.
    assert score_ys == sorted(score_ys, reverse=True) and loss_ys == sorted(loss_ys)
    assert f'x1="{SPARK_WIDTH // 2}"' in svg


def test_the_model_page_puts_the_champion_beside_the_candidate_and_popularity() -> None:
    candidate = {"ndcg@10": 0.31234, "recall@10": 0.2, "coverage": 0.5}
    champion = {"ndcg@10": 0.29, "recall@10": 0.19, "coverage": 0.4}
    popularity = {"ndcg@10": 0.2, "recall@10": 0.1, "coverage": 0.05}
    judgement = Judgement({"all": candidate}, popularity, [], champion)
    shown = _judgement_shown(judgement)
    assert shown["ndcg@10"] == 0.3123
    assert shown["champion/ndcg@10"] == 0.29 and shown["popularity/ndcg@10"] == 0.2
    assert shown["comparison"].value.startswith("![candidate, champion and popularity]")
    first_run = _judgement_shown(Judgement({"all": candidate}, popularity, []))
    assert not any(key.startswith("champion/") for key in first_run)
