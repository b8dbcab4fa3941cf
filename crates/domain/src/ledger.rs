//! Double-entry journal in points. Every entry's postings sum to zero; the journal is
//! append-only, and a correction is a new entry.

use crate::rules::Funder;
use crate::Points;
use uuid::Uuid;

/// The kinds of ledger account. Member accounts carry a guarded balance; partner and
/// operator accounts are append-only sums of their postings (they would be hot rows).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AccountKind {
    Member,
    PartnerIssued,
    PartnerRedeemed,
    OperatorBreakage,
    OperatorFunding,
}

impl AccountKind {
    pub const ALL: [AccountKind; 5] = [
        AccountKind::Member,
        AccountKind::PartnerIssued,
        AccountKind::PartnerRedeemed,
        AccountKind::OperatorBreakage,
        AccountKind::OperatorFunding,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            AccountKind::Member => "member",
            AccountKind::PartnerIssued => "partner_issued",
            AccountKind::PartnerRedeemed => "partner_redeemed",
            AccountKind::OperatorBreakage => "operator_breakage",
            AccountKind::OperatorFunding => "operator_funding",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.as_str() == text)
    }
}

/// A ledger account: its kind and the id of what owns it (a member points account, a
/// partner, or the programme for operator accounts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountRef {
    pub kind: AccountKind,
    pub owner: Uuid,
}

impl AccountRef {
    pub fn member(account_id: Uuid) -> Self {
        Self {
            kind: AccountKind::Member,
            owner: account_id,
        }
    }
    pub fn partner_issued(partner_id: Uuid) -> Self {
        Self {
            kind: AccountKind::PartnerIssued,
            owner: partner_id,
        }
    }
    pub fn partner_redeemed(partner_id: Uuid) -> Self {
        Self {
            kind: AccountKind::PartnerRedeemed,
            owner: partner_id,
        }
    }
    /// Where expired points go: the operator's breakage, one account per programme.
    pub fn operator_breakage(programme_id: Uuid) -> Self {
        Self {
            kind: AccountKind::OperatorBreakage,
            owner: programme_id,
        }
    }

    /// What the operator funds (rules it pays for), owned by the programme.
    pub fn operator_funding(programme_id: Uuid) -> Self {
        Self {
            kind: AccountKind::OperatorFunding,
            owner: programme_id,
        }
    }

    /// The account a rule's points come from: a partner's or a bank's issued account,
    /// or the operator's funding account.
    pub fn funding(funder: Funder, programme_id: Uuid, seller: Uuid) -> Self {
        match funder {
            Funder::SellingPartner => Self::partner_issued(seller),
            Funder::Partner(id) | Funder::Bank(id) => Self::partner_issued(id),
            Funder::Operator => Self::operator_funding(programme_id),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Posting {
    pub account: AccountRef,
    pub amount: Points,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Purchase,
    Refund,
    CardTransfer,
    Expiry,
    /// Points taken alone at a partner (a reward), by capturing a POS hold.
    Redemption,
    /// An erased member's remaining points, forfeited to the operator's breakage.
    Erasure,
}

impl EntryKind {
    pub fn as_str(self) -> &'static str {
        match self {
            EntryKind::Purchase => "purchase",
            EntryKind::Refund => "refund",
            EntryKind::CardTransfer => "card_transfer",
            EntryKind::Expiry => "expiry",
            EntryKind::Redemption => "redemption",
            EntryKind::Erasure => "erasure",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("journal entry postings sum to {0}, not zero")]
    Unbalanced(Points),
    #[error("points overflow")]
    Overflow,
}

/// A balanced set of postings, built up move by move. Zero moves are dropped so the
/// history never shows empty lines.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalEntry {
    pub kind: EntryKind,
    pub postings: Vec<Posting>,
}

impl JournalEntry {
    pub fn new(kind: EntryKind) -> Self {
        Self {
            kind,
            postings: Vec::new(),
        }
    }

    /// Moves `points` from one account to another: two postings that cancel.
    pub fn transfer(mut self, from: AccountRef, to: AccountRef, points: Points) -> Self {
        if points != 0 {
            self.postings.push(Posting {
                account: from,
                amount: -points,
            });
            self.postings.push(Posting {
                account: to,
                amount: points,
            });
        }
        self
    }

    /// Checks the entry balances before anything is written.
    pub fn balanced(self) -> Result<Self, LedgerError> {
        let sum = self
            .postings
            .iter()
            .try_fold(0i64, |acc, p| acc.checked_add(p.amount))
            .ok_or(LedgerError::Overflow)?;
        if sum != 0 {
            return Err(LedgerError::Unbalanced(sum));
        }
        Ok(self)
    }

    /// Net change of one account in this entry.
    pub fn net_for(&self, account: AccountRef) -> Points {
        self.postings
            .iter()
            .filter(|p| p.account == account)
            .map(|p| p.amount)
            .sum()
    }
}

/// A purchase at `partner`: the member pays `redeemed` points to the partner's redeemed
/// account and earns each of `earned` from the account that funds it (the partner's
/// issued account for its base rate; a rule's funder for the rule's points). Moves from
/// one funder are merged into one posting pair.
pub fn purchase_entry(
    partner: Uuid,
    member_account: Uuid,
    earned: &[(AccountRef, Points)],
    redeemed: Points,
) -> Result<JournalEntry, LedgerError> {
    let member = AccountRef::member(member_account);
    let mut entry = JournalEntry::new(EntryKind::Purchase).transfer(
        member,
        AccountRef::partner_redeemed(partner),
        redeemed,
    );
    for (funder, points) in merged(earned)? {
        entry = entry.transfer(funder, member, points);
    }
    entry.balanced()
}

/// Sums the points per account, in the order each account first appears.
fn merged(moves: &[(AccountRef, Points)]) -> Result<Vec<(AccountRef, Points)>, LedgerError> {
    let mut out: Vec<(AccountRef, Points)> = Vec::new();
    for (account, points) in moves {
        match out.iter_mut().find(|(a, _)| a == account) {
            Some((_, sum)) => *sum = sum.checked_add(*points).ok_or(LedgerError::Overflow)?,
            None => out.push((*account, *points)),
        }
    }
    Ok(out)
}

/// A reward at `partner`: the member pays `points` to the partner's redeemed account,
/// with no purchase to earn on.
pub fn redemption_entry(
    partner: Uuid,
    member_account: Uuid,
    points: Points,
) -> Result<JournalEntry, LedgerError> {
    JournalEntry::new(EntryKind::Redemption)
        .transfer(
            AccountRef::member(member_account),
            AccountRef::partner_redeemed(partner),
            points,
        )
        .balanced()
}

/// A refund reverses a share of a purchase: spent points go back to the member, clawed
/// back points go back to the accounts that funded them.
pub fn refund_entry(
    partner: Uuid,
    member_account: Uuid,
    clawed_back: &[(AccountRef, Points)],
    returned: Points,
) -> Result<JournalEntry, LedgerError> {
    let member = AccountRef::member(member_account);
    let mut entry = JournalEntry::new(EntryKind::Refund).transfer(
        AccountRef::partner_redeemed(partner),
        member,
        returned,
    );
    for (funder, points) in merged(clawed_back)? {
        entry = entry.transfer(member, funder, points);
    }
    entry.balanced()
}

/// A refund on the account of a member whose data was erased: the redemption is
/// reversed as usual, and the returned points go straight on to the operator's
/// breakage, as her points did at the erasure (nothing is clawed back: she holds none).
pub fn refund_entry_after_erasure(
    programme: Uuid,
    partner: Uuid,
    member_account: Uuid,
    returned: Points,
) -> Result<JournalEntry, LedgerError> {
    let member = AccountRef::member(member_account);
    JournalEntry::new(EntryKind::Refund)
        .transfer(AccountRef::partner_redeemed(partner), member, returned)
        .transfer(member, AccountRef::operator_breakage(programme), returned)
        .balanced()
}

/// Points that outlived their lots leave the member for the operator's breakage.
pub fn expiry_entry(
    programme: Uuid,
    member_account: Uuid,
    expired: Points,
) -> Result<JournalEntry, LedgerError> {
    JournalEntry::new(EntryKind::Expiry)
        .transfer(
            AccountRef::member(member_account),
            AccountRef::operator_breakage(programme),
            expired,
        )
        .balanced()
}

/// An erased member's points, all of them, to the operator's breakage: they are no
/// one's any more, and the ledger still sums.
pub fn erasure_entry(
    programme: Uuid,
    member_account: Uuid,
    forfeited: Points,
) -> Result<JournalEntry, LedgerError> {
    JournalEntry::new(EntryKind::Erasure)
        .transfer(
            AccountRef::member(member_account),
            AccountRef::operator_breakage(programme),
            forfeited,
        )
        .balanced()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn purchase_postings_balance_and_net_on_the_member() {
        let (p, m) = (Uuid::new_v4(), Uuid::new_v4());
        let e = purchase_entry(p, m, &[(AccountRef::partner_issued(p), 80)], 2_000).unwrap();
        assert_eq!(e.postings.len(), 4);
        assert_eq!(e.net_for(AccountRef::member(m)), -1_920);
        assert_eq!(e.net_for(AccountRef::partner_issued(p)), -80);
        assert_eq!(e.net_for(AccountRef::partner_redeemed(p)), 2_000);
    }

    #[test]
    fn expired_points_move_from_the_member_to_breakage() {
        let (programme, m) = (Uuid::new_v4(), Uuid::new_v4());
        let e = expiry_entry(programme, m, 70).unwrap();
        assert_eq!(e.kind.as_str(), "expiry");
        assert_eq!(e.net_for(AccountRef::member(m)), -70);
        assert_eq!(e.net_for(AccountRef::operator_breakage(programme)), 70);
    }

    #[test]
    fn a_reward_moves_points_from_the_member_to_the_partners_redeemed_account() {
        let (p, m) = (Uuid::new_v4(), Uuid::new_v4());
        let e = redemption_entry(p, m, 700).unwrap();
        assert_eq!(e.kind.as_str(), "redemption");
        assert_eq!(e.net_for(AccountRef::member(m)), -700);
        assert_eq!(e.net_for(AccountRef::partner_redeemed(p)), 700);
        assert_eq!(e.postings.len(), 2);
    }

    #[test]
    fn rule_points_come_from_their_funders() {
        let (seller, bank, programme, m) = (
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
            Uuid::now_v7(),
        );
        let funding = |f| AccountRef::funding(f, programme, seller);
        let earned = [
            (funding(Funder::SellingPartner), 10),
            (funding(Funder::Operator), 25),
            (funding(Funder::Bank(bank)), 5),
            (funding(Funder::Partner(seller)), 3),
        ];
        let e = purchase_entry(seller, m, &earned, 0).unwrap();
        assert_eq!(e.postings.len(), 6, "the seller's two moves are one");
        assert_eq!(e.net_for(AccountRef::member(m)), 43);
        assert_eq!(e.net_for(AccountRef::partner_issued(seller)), -13);
        assert_eq!(e.net_for(AccountRef::operator_funding(programme)), -25);
        assert_eq!(e.net_for(AccountRef::partner_issued(bank)), -5);
    }

    #[test]
    fn zero_moves_leave_no_postings() {
        let e = refund_entry(Uuid::new_v4(), Uuid::new_v4(), &[], 0).unwrap();
        assert!(e.postings.is_empty());
    }

    #[test]
    fn unbalanced_entries_are_refused() {
        let mut e = JournalEntry::new(EntryKind::Purchase);
        e.postings.push(Posting {
            account: AccountRef::member(Uuid::nil()),
            amount: 5,
        });
        assert_eq!(e.balanced(), Err(LedgerError::Unbalanced(5)));
    }

    #[test]
    fn account_kinds_round_trip_as_text() {
        for k in AccountKind::ALL {
            assert_eq!(AccountKind::parse(k.as_str()), Some(k));
        }
    }
}
