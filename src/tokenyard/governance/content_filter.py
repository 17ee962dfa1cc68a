"""The word filter as the gateway uses it: every tenant's matcher, built once from the settings.

Input texts are judged whole (`first_hit`); answers go through an `output_scan.ChoiceScanner` per
choice. A tenant with lists of its own gets the global lists plus its own; every other tenant, and
every request while auth is off, the global lists.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from itertools import chain

from tokenyard.governance.output_scan import ChoiceScanner
from tokenyard.governance.textnorm import normalise
from tokenyard.governance.wordfilter import Hit, Matcher
from tokenyard.governance.wordlists import FilterConfig, OutputAction, check_list_names, load_rules


class WordFilter:
    def __init__(self, default: Matcher, tenants: Mapping[str, Matcher], output_action: OutputAction) -> None:
        self._default = default
        self._tenants = dict(tenants)
        self.output_action = output_action

    @classmethod
    def from_config(cls, config: FilterConfig) -> WordFilter | None:
        """The filter the settings describe, or None when it is off or lists no word at all.

        Reads every file now, so a missing or unreadable list stops the gateway at start with a
        ConfigError naming it, never later on a request.
        """
        if not config.enabled:
            return None
        files = chain(
            config.word_files,
            config.allow_files,
            *(chain(lists.word_files, lists.allow_files) for lists in config.tenants.values()),
        )
        check_list_names(files)
        common = load_rules(config.word_files, allow=False, setting="filter.word_files")
        common += load_rules(config.allow_files, allow=True, setting="filter.allow_files")
        tenants = {}
        for tenant, lists in config.tenants.items():
            setting = f"filter.tenants.{tenant}"
            own = load_rules(lists.word_files, allow=False, setting=f"{setting}.word_files")
            own += load_rules(lists.allow_files, allow=True, setting=f"{setting}.allow_files")
            tenants[tenant] = Matcher(common + own)
        default = Matcher(common)
        if not default.num_listed and not any(m.num_listed for m in tenants.values()):
            return None
        return cls(default, tenants, config.output_action)

    def matcher_for(self, tenant: str | None) -> Matcher:
        return self._tenants.get(tenant, self._default) if tenant is not None else self._default

    def first_hit(self, tenant: str | None, texts: Iterable[tuple[str, str]]) -> tuple[str, Hit] | None:
        """The first listed word in the (where, text) pairs, with where it was; None if there is none."""
        matcher = self.matcher_for(tenant)
        for where, text in texts:
            hits = matcher.hits(normalise(text))
            if hits:
                return where, hits[0]
        return None

    def scanner(self, tenant: str | None) -> ChoiceScanner | None:
        """A scanner for one choice of an answer; None when this tenant has nothing listed."""
        matcher = self.matcher_for(tenant)
        return ChoiceScanner(matcher, self.output_action) if matcher.num_listed else None
