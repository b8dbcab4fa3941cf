//! Pure domain of the coalition programme: money, points, earning and refund rules,
//! ledger postings, point lots and card numbers. No I/O lives here.

pub mod bank;
pub mod campaigns;
pub mod card_number;
pub mod classify;
pub mod clv;
pub mod earning;
pub mod forecast;
pub mod imports;
pub mod ledger;
pub mod limits;
pub mod lots;
pub mod money;
pub mod refund;
pub mod rules;
pub mod settlement;
pub mod stats;
pub mod tiers;
pub mod webhooks;

pub use ledger::{AccountKind, AccountRef, EntryKind, JournalEntry, LedgerError, Posting};
pub use money::{Currency, Money, MoneyError};

/// Points are whole numbers; a member can never hold a fraction of one.
pub type Points = i64;
