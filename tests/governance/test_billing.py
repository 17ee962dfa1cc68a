"""Billing arithmetic against cases computed by hand (decimal, rounded once per call to 6 places, half up)."""

from __future__ import annotations

from decimal import Decimal

from tokenyard.governance.billing import BillingConfig, ModelPrice, PriceTable, TokenCounts


def table(**prices: ModelPrice) -> PriceTable:
    return PriceTable(
        BillingConfig(
            prices=prices,
            group_multipliers={"gold": Decimal("0.8"), "resale": Decimal("1.25")},
            tenant_groups={"acme": "gold", "bigco": "resale"},
        )
    )


FULL = ModelPrice(
    per_call=Decimal("0.01"),
    per_1k_prompt=Decimal("0.5"),
    per_1k_completion=Decimal("1.5"),
    per_1k_cached_prompt=Decimal("0.05"),
)


def test_every_part_of_the_price_by_hand() -> None:
    tokens = TokenCounts(prompt_tokens=1234, completion_tokens=567, cached_tokens=1000)
    # 234 uncached prompt tokens: 0.5 * 0.234 = 0.117; 1000 cached: 0.05 * 1 = 0.05;
    # 567 completion: 1.5 * 0.567 = 0.8505; one call: 0.01.  Sum 1.0275.
    assert table(m=FULL).cost("m", "nobody", tokens) == Decimal("1.027500")
    # acme is in group gold (x0.8): 0.822; bigco in resale (x1.25): 1.284375.
    assert table(m=FULL).cost("m", "acme", tokens) == Decimal("0.822000")
    assert table(m=FULL).cost("m", "bigco", tokens) == Decimal("1.284375")


def test_rounding_is_half_up_at_six_places_once_per_call() -> None:
    prices = table(
        a=ModelPrice(per_1k_prompt=Decimal("0.0015")),
        b=ModelPrice(per_1k_prompt=Decimal("0.0025")),
        c=ModelPrice(per_1k_prompt=Decimal("0.0014")),
    )
    one = TokenCounts(prompt_tokens=1)
    assert prices.cost("a", None, one) == Decimal("0.000002")  # 0.0000015 -> up
    assert prices.cost("b", None, one) == Decimal("0.000003")  # 0.0000025 -> up (banker's rounding would give 2)
    assert prices.cost("c", None, one) == Decimal("0.000001")  # 0.0000014 -> down
    # Rounded once: 3 tokens at 0.0015 are 0.0000045 -> 0.000005, not 3 x 0.000002.
    assert prices.cost("a", None, TokenCounts(prompt_tokens=3)) == Decimal("0.000005")


def test_no_float_error_creeps_in() -> None:
    prices = table(m=ModelPrice(per_call=Decimal("0.1"), per_1k_prompt=Decimal("0.2")))
    cost = prices.cost("m", None, TokenCounts(prompt_tokens=1000))
    assert cost == Decimal("0.3") and str(cost) == "0.300000"  # 0.1 + 0.2 in floats is 0.30000000000000004
    total = sum((prices.cost("m", None, TokenCounts(prompt_tokens=1000)) for _ in range(10)), Decimal(0))
    assert total == Decimal("3")


def test_cached_tokens_default_to_the_prompt_price_and_never_exceed_the_prompt() -> None:
    prices = table(m=ModelPrice(per_1k_prompt=Decimal("2")))
    with_cache = TokenCounts(prompt_tokens=500, cached_tokens=400)
    assert prices.cost("m", None, with_cache) == Decimal("1.000000")  # 500 x 2 / 1000, cache or not
    odd = TokenCounts(prompt_tokens=10, cached_tokens=50)  # a worker can't cache more than the prompt
    assert table(m=FULL).cost("m", None, odd) == Decimal("0.010500")  # 0.01 + 10 x 0.05 / 1000


def test_unlisted_models_take_the_star_price_or_are_free() -> None:
    tokens = TokenCounts(prompt_tokens=1000, completion_tokens=1000)
    assert table().cost("m", None, tokens) == Decimal(0)
    star = table(**{"*": ModelPrice(per_call=Decimal("1"))}, m=ModelPrice(per_call=Decimal("2")))
    assert star.cost("other", None, tokens) == Decimal("1.000000")
    assert star.cost("m", None, tokens) == Decimal("2.000000")


def test_the_most_a_call_can_cost_rounds_up_and_ignores_the_cache_discount() -> None:
    prices = table(m=FULL, tiny=ModelPrice(per_1k_prompt=Decimal("0.0011")))
    # 0.01 + 0.5 x 0.1 + 1.5 x 0.2 = 0.36 for 100 prompt tokens and max_tokens 200.
    assert prices.most("m", None, 100, 200) == Decimal("0.360000")
    assert prices.most("tiny", None, 1, 0) == Decimal("0.000002")  # 0.0000011 rounded up
    real = prices.cost("m", None, TokenCounts(prompt_tokens=100, completion_tokens=200, cached_tokens=100))
    assert real <= prices.most("m", None, 100, 200)


def test_prices_from_yaml_floats_are_exact_decimals() -> None:
    config = BillingConfig.model_validate({"prices": {"m": {"per_1k_prompt": 0.1}}})
    assert config.prices["m"].per_1k_prompt == Decimal("0.1")
