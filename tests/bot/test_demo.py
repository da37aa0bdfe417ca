"""`hitl demo` end to end, small: every item is resolved, by the model or by a reviewer."""

from bot.demo import demo_rows, run_demo


def test_demo_subset_is_shipped_with_ten_intents() -> None:
    rows = demo_rows()
    assert len(rows) == 800
    assert len({label for _, label in rows}) == 10


def test_small_demo_resolves_every_item_and_retrains() -> None:
    seen: list[tuple[int, int]] = []
    summary = run_demo(
        items=40, seed_per_label=4, rate=50.0, progress=lambda d, t: seen.append((d, t))
    )
    assert summary.items == 40
    assert summary.auto + summary.answers == 40
    assert summary.version_before == 1
    # The second model is promoted only if it is no worse on the evaluation: either is honest.
    if summary.version_after == 2:
        assert "model v1 → v2 promoted" in summary.report
    else:
        assert summary.version_after == 1 and "kept v1" in summary.report
    assert 0 <= summary.auto_correct <= summary.auto
    if summary.answers:
        assert seen[-1] == (40, 40)
