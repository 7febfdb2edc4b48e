//! Application state given to the broker, reachable from handlers through `State<T>`.

use std::any::{Any, TypeId};
use std::fmt;
use std::sync::Arc;

/// Values by type, set on the broker before it runs and read by the [`State`](crate::extract::State)
/// extractor. A handler asking for a type that was never given is refused when the app starts.
#[derive(Clone, Default)]
pub struct StateMap(Arc<Vec<Entry>>);

/// One value: its type, the type's name (for messages) and the value.
type Entry = (TypeId, &'static str, Arc<dyn Any + Send + Sync>);

impl StateMap {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds (or replaces) the value of type `T`.
    pub fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        let entries = Arc::make_mut(&mut self.0);
        entries.retain(|(id, _, _)| *id != TypeId::of::<T>());
        entries.push((
            TypeId::of::<T>(),
            std::any::type_name::<T>(),
            Arc::new(value),
        ));
    }

    /// The value of type `T`, if given.
    pub fn get<T: 'static>(&self) -> Option<&T> {
        self.0
            .iter()
            .find(|(id, _, _)| *id == TypeId::of::<T>())
            .and_then(|(_, _, v)| v.downcast_ref())
    }

    /// Whether a value of type `T` was given.
    pub fn contains<T: 'static>(&self) -> bool {
        self.0.iter().any(|(id, _, _)| *id == TypeId::of::<T>())
    }
}

impl fmt::Debug for StateMap {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(|(_, name, _)| name))
            .finish()
    }
}
