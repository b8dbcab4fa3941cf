//! Rows that nothing updates once written (a programme's currency, point value and
//! expiry), kept per process after the first read so hot paths skip a round trip.
//! Whoever adds an update for one of them must move it to `terms`, which sees changes
//! across processes.

use std::collections::HashMap;
use std::future::Future;
use std::sync::RwLock;
use uuid::Uuid;

pub struct Remembered<V>(RwLock<HashMap<Uuid, V>>);

impl<V> Default for Remembered<V> {
    fn default() -> Self {
        Self(RwLock::default())
    }
}

impl<V: Clone> Remembered<V> {
    /// The remembered value, or else what `load` reads, which is remembered from then on.
    pub async fn get_or_load<E>(
        &self,
        id: Uuid,
        load: impl Future<Output = Result<V, E>>,
    ) -> Result<V, E> {
        if let Some(known) = self.get(id) {
            return Ok(known);
        }
        let loaded = load.await?;
        self.keep(id, loaded.clone());
        Ok(loaded)
    }

    fn get(&self, id: Uuid) -> Option<V> {
        self.0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .get(&id)
            .cloned()
    }

    fn keep(&self, id: Uuid, value: V) {
        self.0
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id, value);
    }
}
