"""Schemathesis hooks for .ci/run (loaded through SCHEMATHESIS_HOOKS).

One check replaces schemathesis' `positive_data_acceptance`: it is that check, except for
the 422 answers that depend on state no OpenAPI document can describe. A schema-valid
request may still be refused for these, and only these, problem codes:

- `currency_mismatch`: the currency must be the programme's (one document serves every
  programme, whatever its currency);
- `idempotency_key_reused`: the key was already used by this client for another request
  (schemathesis draws keys from a small space and reuses them);
- `redemption_exceeds_amount`: the points paid are worth more than the bill (the worth of
  a point is the programme's);
- `validation_failed` naming only `amount.amount` (decimals beyond the programme
  currency's minor unit, or points beyond what a purchase can earn at the partner's rate)
  or only `qualifying_spend.amount` (a tier's spend, likewise in the currency's minor
  unit) or only `cursor` (a cursor is an opaque value only the server hands out, like an
  id; an unknown id is a 404, an unknown cursor a 422) or only `ends_at` (a floor on a
  member's tier must end in the future: it depends on the clock);
- `validation_failed` naming only fields of an earning rule whose validity depends on
  the programme or on another field of the same rule, which OpenAPI cannot say:
  `conditions.partner_ids` and `conditions.tier_ids` (must name the programme's partners
  and tiers), `funder.partner_id` and `funder.kind` (a partner or bank of the programme;
  a bank funder must name a bank), `conditions.min_amount.amount` and
  `conditions.min_amount.currency` (the programme's currency and its minor unit),
  `valid_to` (after `valid_from`), `effect.value` (its range depends on `effect.kind`:
  a multiplier above 1, a percent up to 100, whole bonus points) and
  `conditions.hours.to` (not equal to `from`). Several of them may be named at once.

Any other refusal of schema-valid data still fails the run.
"""

import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

STATEFUL_CODES = {"currency_mismatch", "idempotency_key_reused", "redemption_exceeds_amount"}
STATEFUL_FIELDS = {"amount.amount", "qualifying_spend.amount", "cursor", "ends_at"}
RULE_FIELDS = {
    "conditions.partner_ids", "conditions.tier_ids", "funder.partner_id", "funder.kind",
    "conditions.min_amount.amount", "conditions.min_amount.currency", "valid_to",
    "effect.value", "conditions.hours.to",
}


def refused_for_state(response) -> bool:
    if response.status_code != 422:
        return False
    try:
        problem = response.json()
    except Exception:
        return False
    if not isinstance(problem, dict):
        return False
    code = problem.get("code")
    if code in STATEFUL_CODES:
        return True
    fields = {e.get("field") for e in problem.get("errors") or [] if isinstance(e, dict)}
    if code != "validation_failed" or not fields:
        return False
    return (len(fields) == 1 and fields <= STATEFUL_FIELDS) or fields <= RULE_FIELDS


@schemathesis.check
def positive_data_acceptance_beyond_state(ctx, response, case):
    """positive_data_acceptance, less the refusals that depend on server state."""
    if refused_for_state(response):
        return None
    return positive_data_acceptance(ctx, response, case)
