//! What never changes about a member, kept in memory: its programme, its points account,
//! and the partners known to see it. None of it is ever undone (a partner link is never
//! removed, erasure keeps the account), so a remembered fact stays true in every server
//! process, and balance reads need no database round trip to authorize.
//! Only positive facts are kept: an unknown link is looked up in the database.

use std::collections::HashMap;
use std::sync::RwLock;
use uuid::Uuid;

/// Beyond this many members the directory starts afresh rather than grow without bound.
const CAPACITY: usize = 250_000;

#[derive(Debug, Clone)]
struct Known {
    programme_id: Uuid,
    account_id: Uuid,
    partners: Vec<Uuid>,
}

#[derive(Default)]
pub struct MemberDirectory {
    members: RwLock<HashMap<Uuid, Known>>,
}

impl MemberDirectory {
    /// The member's account, if the member is known to be in `programme_id` and, for a
    /// partner, known to be visible to `partner_id`.
    pub fn account(
        &self,
        member_id: Uuid,
        programme_id: Uuid,
        partner_id: Option<Uuid>,
    ) -> Option<Uuid> {
        let members = self.members.read().unwrap_or_else(|e| e.into_inner());
        let known = members.get(&member_id)?;
        let visible = known.programme_id == programme_id
            && partner_id.is_none_or(|p| known.partners.contains(&p));
        visible.then_some(known.account_id)
    }

    /// Remembers a member (and, for a partner, that it may see the member).
    pub fn remember(
        &self,
        member_id: Uuid,
        programme_id: Uuid,
        account_id: Uuid,
        partner_id: Option<Uuid>,
    ) {
        let partners = partner_id.as_slice();
        self.remember_all(member_id, programme_id, account_id, partners);
    }

    /// Remembers a member and partners that may see it.
    pub fn remember_all(
        &self,
        member_id: Uuid,
        programme_id: Uuid,
        account_id: Uuid,
        partners: &[Uuid],
    ) {
        let mut members = self.members.write().unwrap_or_else(|e| e.into_inner());
        if members.len() >= CAPACITY && !members.contains_key(&member_id) {
            members.clear();
        }
        let known = members.entry(member_id).or_insert_with(|| Known {
            programme_id,
            account_id,
            partners: Vec::new(),
        });
        for p in partners {
            if !known.partners.contains(p) {
                known.partners.push(*p);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_remembered_facts_answer() {
        let directory = MemberDirectory::default();
        let (member, programme, account, gym, shop) = (
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
            Uuid::new_v4(),
        );
        assert_eq!(directory.account(member, programme, None), None);
        directory.remember(member, programme, account, Some(gym));
        assert_eq!(
            directory.account(member, programme, Some(gym)),
            Some(account)
        );
        assert_eq!(directory.account(member, programme, None), Some(account));
        assert_eq!(
            directory.account(member, programme, Some(shop)),
            None,
            "not known to the shop yet"
        );
        assert_eq!(
            directory.account(member, Uuid::new_v4(), None),
            None,
            "another programme"
        );
        directory.remember(member, programme, account, Some(shop));
        assert_eq!(
            directory.account(member, programme, Some(shop)),
            Some(account)
        );
    }
}
