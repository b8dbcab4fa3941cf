//! Rows that nothing updates once written (programme terms, partner terms), kept per
//! process after the first read so hot paths skip a round trip. Whoever adds an update
//! for one of them must bring invalidation across processes too.

use std::collections::HashMap;
use std::sync::RwLock;
use uuid::Uuid;

pub struct Remembered<V>(RwLock<HashMap<Uuid, V>>);

impl<V> Default for Remembered<V> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<V: Clone> Remembered<V> {
    pub fn get(&self, id: Uuid) -> Option<V> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    pub fn keep(&self, id: Uuid, value: V) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, value);
    }
}
