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
- `pan_not_allowed`: a value holds 13 to 19 digits that pass the Luhn check — what a
  payment card number looks like — which is refused in every field, path and query of
  every request (README, "Bank"); no pattern can compute a Luhn check, and a fuzzer's
  long digit strings (a decimal's fraction, a 16-digit card number not of the
  programme's own format) pass one in ten times;
- `not_enough_data`: a customer-value model needs purchases on or before its calibration
  end, which depends on what the programme holds; `invalid_import_row`: an import's body
  is CSV or CDNOW rows, a grammar a `text/csv` string schema cannot state; and
  `validation_failed` naming only `calibration_end` (it must not be in the future);
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

- `validation_failed` naming only fields of a campaign whose validity depends on the
  programme, the clock or another field: the segment's fields a `kind` requires and the
  ids they name (`segment.*`), `reward.value` (by `reward.kind`), `reward.partner_ids`,
  `funder.*`, `ends_at` (in the future, after `starts_at`) and `reminder` (lapsed
  segments only), `segment.p_alive_below` and `segment.segments` (required by the
  `at_risk` and `rfm` kinds); and `409 no_clv_model`: an `at_risk` segment needs a CLV
  model fitted on the programme's purchases.
- `validation_failed` naming only the period and thresholds of the classic analytics
  (`from`, `to`, `a`, `b`, `x`, `y`): `from` must not follow `to` (which defaults to
  today, the clock), the period spans at most 3660 days, and `a < b`, `x < y` relate two
  parameters.
- `validation_failed` naming only `period_start` and/or `period_end` of a settlement
  (the end must not be in the future — it depends on the clock — and must follow the
  start), and `409 settlement_overlaps` (the period overlaps one already settled).
- `validation_failed` naming only `url` and/or `events` of a webhook subscription: a URL
  the document's pattern admits may still name a private, loopback or link-local
  address, or be plain http (refused unless the deployment allows it:
  COALITION_WEBHOOKS_ALLOW_INSECURE), and a partner's endpoint may not ask for the
  operator-only events (the caller decides, not the body).
- `validation_failed` naming only `from` of `GET /v1/analytics/staff` because it is
  after `to` (or after today when `to` is left out): two dates the document admits
  each, in an order it cannot state.
- `409 rotation_in_progress`: a client's secret was rotated with an overlap that still
  runs (an earlier operation of the run rotated it).
- `validation_failed` naming `card_number` or `number` (a card number in a body or a
  path) with the message of a card number, whose last digit is a Luhn check digit that
  a pattern cannot compute; beside such an error, the others are judged as above.

Any other refusal of schema-valid data still fails the run.
"""

import re
import schemathesis
from schemathesis.specs.openapi.checks import positive_data_acceptance

STATEFUL_CODES = {
    "currency_mismatch", "idempotency_key_reused", "redemption_exceeds_amount",
    "pan_not_allowed", "not_enough_data", "invalid_import_row",
    "imported_purchase_not_refundable",
}
STATEFUL_FIELDS = {"amount.amount", "qualifying_spend.amount", "cursor", "ends_at", "calibration_end"}
CARD_NUMBER_FIELDS = {"card_number", "number"}
RULE_FIELDS = {
    "conditions.partner_ids", "conditions.tier_ids", "funder.partner_id", "funder.kind",
    "conditions.min_amount.amount", "conditions.min_amount.currency", "valid_to",
    "effect.value", "conditions.hours.to",
}

CAMPAIGN_FIELDS = {
    "segment.kind", "segment.days", "segment.tier_id", "segment.buys_at", "segment.never_at",
    "segment.window_days", "segment.min_spend", "segment.min_spend.amount",
    "segment.min_spend.currency", "segment.max_spend", "segment.max_spend.amount",
    "segment.max_spend.currency", "segment.partner_id", "segment.member_ids",
    "reward.value", "reward.partner_ids", "funder.partner_id", "funder.kind", "ends_at",
    "reminder", "segment.p_alive_below", "segment.segments",
}
CLASSICS_FIELDS = {"from", "to", "a", "b", "x", "y"}
SETTLEMENT_FIELDS = {"period_start", "period_end"}
WEBHOOK_FIELDS = {"url", "events"}
# 409s that depend on what happened before: a settled period, a running rotation overlap.
CONFLICT_CODES = {"settlement_overlaps", "rotation_in_progress", "no_clv_model"}


def check_digit_refusal(error) -> bool:
    return error.get("field") in CARD_NUMBER_FIELDS and "check digit" in str(error.get("message"))


def refused_for_state(response) -> bool:
    if response.status_code == 409:
        try:
            return response.json().get("code") in CONFLICT_CODES
        except Exception:
            return False
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
    errors = [e for e in problem.get("errors") or [] if isinstance(e, dict)]
    if code != "validation_failed" or not errors:
        return False
    # A check-digit refusal is admitted beside the others, which are judged on their own.
    errors = [e for e in errors if not check_digit_refusal(e)]
    if not errors:
        return True
    fields = {e.get("field") for e in errors}
    if fields == {"from"} and all("after `to`" in str(e.get("message")) for e in errors):
        return True
    return (
        (len(fields) == 1 and fields <= STATEFUL_FIELDS)
        or fields <= RULE_FIELDS
        or fields <= CAMPAIGN_FIELDS
        or fields <= SETTLEMENT_FIELDS
        or fields <= WEBHOOK_FIELDS
        or fields <= CLASSICS_FIELDS
    )


@schemathesis.check
def positive_data_acceptance_beyond_state(ctx, response, case):
    """positive_data_acceptance, less the refusals that depend on server state."""
    if refused_for_state(response):
        return None
    # RFC 6749 §4.1.2.1: an authorization request from an unknown client, or with a
    # redirect URI not registered for it, is answered with an error page (400), never
    # redirected; which client ids and URIs are registered is server state.
    if case.path == "/oauth/authorize" and response.status_code == 400:
        return None
    # Redirect URIs: a string the document admits may still be relative, not https (plain
    # http only on loopback), hold a fragment, or repeat another entry.
    if response.status_code == 422 and redirect_uris_only(response):
        return None
    return positive_data_acceptance(ctx, response, case)


def redirect_uris_only(response) -> bool:
    try:
        problem = response.json()
    except Exception:
        return False
    errors = problem.get("errors") if isinstance(problem, dict) else None
    if problem.get("code") != "validation_failed" or not errors:
        return False
    return all(
        isinstance(e, dict) and re.fullmatch(r"redirect_uris(\[\d+\])?", str(e.get("field")))
        for e in errors
    )
