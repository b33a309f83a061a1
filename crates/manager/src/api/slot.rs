//! The daemon's manager, if it has one right now. A node becomes a manager
//! (promote, join as manager) and stops being one (demote, leave) while its
//! API keeps serving, so the API looks the manager up per request.

use std::sync::{Arc, RwLock};

use crate::manager::Manager;

#[derive(Clone, Default)]
pub struct ManagerSlot(Arc<RwLock<Option<Arc<Manager>>>>);

impl ManagerSlot {
    /// A slot that always holds `manager` (the manager port's own services).
    pub fn with(manager: Arc<Manager>) -> Self {
        ManagerSlot(Arc::new(RwLock::new(Some(manager))))
    }

    pub fn get(&self) -> Option<Arc<Manager>> {
        self.0.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub fn set(&self, manager: Option<Arc<Manager>>) {
        *self.0.write().unwrap_or_else(|p| p.into_inner()) = manager;
    }
}
