"""Prices and cost: what one call costs, in exact decimal arithmetic (never floats).

A model's price has four parts: a fixed amount per call, per 1,000 prompt tokens, per 1,000
completion tokens, and per 1,000 prompt tokens served from the prefix cache (their own, usually
lower, price; the prompt price when unset). A tenant's group multiplies the whole. The exact sum is
rounded once per call to `COST_PLACES` decimal places, half up; reports add those rounded amounts,
so a report's total is the sum of its lines to the last digit.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

from pydantic import BaseModel, ConfigDict, Field

COST_PLACES = 6
COST_QUANTUM = Decimal(1).scaleb(-COST_PLACES)  # 0.000001
THOUSAND = Decimal(1000)
DEFAULT_GROUP = "default"
ANY_MODEL = "*"


class ModelPrice(BaseModel):
    """One model's price list, in the table's currency."""

    model_config = ConfigDict(extra="forbid")

    per_call: Decimal = Field(default=Decimal(0), ge=0)
    per_1k_prompt: Decimal = Field(default=Decimal(0), ge=0)
    per_1k_completion: Decimal = Field(default=Decimal(0), ge=0)
    per_1k_cached_prompt: Decimal | None = Field(default=None, ge=0, description="default: per_1k_prompt")


class TokenCounts(BaseModel):
    """What a call used, as the worker counted it; cached tokens are part of the prompt tokens."""

    prompt_tokens: int = Field(default=0, ge=0)
    completion_tokens: int = Field(default=0, ge=0)
    cached_tokens: int = Field(default=0, ge=0)


class BillingConfig(BaseModel):
    """The `billing` section: prices per model alias and a multiplier per tenant group."""

    model_config = ConfigDict(extra="forbid")

    currency: str = "USD"
    prices: dict[str, ModelPrice] = Field(
        default_factory=dict, description="model alias -> price; '*' prices every model not listed"
    )
    group_multipliers: dict[str, Decimal] = Field(
        default_factory=dict, description="tenant group -> multiplier of every price; unlisted groups pay 1"
    )
    tenant_groups: dict[str, str] = Field(
        default_factory=dict, description="tenant -> group; unlisted tenants are in 'default'"
    )


def round_cost(amount: Decimal) -> Decimal:
    """The stated rounding: COST_PLACES decimal places, half up."""
    return amount.quantize(COST_QUANTUM, rounding=ROUND_HALF_UP)


class PriceTable:
    """Turns token counts into cost for a model and a tenant."""

    def __init__(self, config: BillingConfig) -> None:
        self._config = config

    @property
    def currency(self) -> str:
        return self._config.currency

    def price_of(self, model: str) -> ModelPrice:
        """The model's price, else the '*' price, else free."""
        prices = self._config.prices
        return prices.get(model) or prices.get(ANY_MODEL) or ModelPrice()

    def multiplier(self, tenant: str | None) -> Decimal:
        group = self._config.tenant_groups.get(tenant or "", DEFAULT_GROUP)
        return self._config.group_multipliers.get(group, Decimal(1))

    def exact_cost(self, model: str, tenant: str | None, calls: int, tokens: TokenCounts) -> Decimal:
        """The unrounded cost; `calls` is 0 for a call that is not charged its fixed part."""
        price = self.price_of(model)
        cached = min(tokens.cached_tokens, tokens.prompt_tokens)
        cached_price = price.per_1k_prompt if price.per_1k_cached_prompt is None else price.per_1k_cached_prompt
        amount = (
            price.per_call * calls
            + price.per_1k_prompt * (tokens.prompt_tokens - cached) / THOUSAND
            + cached_price * cached / THOUSAND
            + price.per_1k_completion * tokens.completion_tokens / THOUSAND
        )
        return amount * self.multiplier(tenant)

    def cost(self, model: str, tenant: str | None, tokens: TokenCounts, calls: int = 1) -> Decimal:
        """What the call is billed: the exact cost rounded as stated above."""
        return round_cost(self.exact_cost(model, tenant, calls, tokens))

    def most(self, model: str, tenant: str | None, prompt_tokens: int, max_tokens: int) -> Decimal:
        """The most a call can cost (no cached discount, every allowed token generated): what quotas reserve.

        Rounded up, so a reservation never falls short of the settled cost by a rounding step.
        """
        tokens = TokenCounts(prompt_tokens=prompt_tokens, completion_tokens=max_tokens)
        price = self.price_of(model)
        if price.per_1k_cached_prompt is not None and price.per_1k_cached_prompt > price.per_1k_prompt:
            tokens = TokenCounts(prompt_tokens=prompt_tokens, completion_tokens=max_tokens, cached_tokens=prompt_tokens)
        return self.exact_cost(model, tenant, 1, tokens).quantize(COST_QUANTUM, rounding="ROUND_CEILING")
