//! `CycleState`: data plugins share within one scheduling cycle, keyed by
//! name. Cloneable (preemption evaluates nodes on copies), so every entry
//! is `Clone`.

use std::any::Any;
use std::collections::{HashMap, HashSet};

pub trait StateData: Any + Send + Sync {
    fn clone_box(&self) -> Box<dyn StateData>;
    fn as_any(&self) -> &dyn Any;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<T: Any + Send + Sync + Clone> StateData for T {
    fn clone_box(&self) -> Box<dyn StateData> {
        Box::new(self.clone())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

#[derive(Default)]
pub struct CycleState {
    data: HashMap<&'static str, Box<dyn StateData>>,
    /// Plugins whose PreFilter returned Skip: their Filter is not run.
    pub skip_filter_plugins: HashSet<&'static str>,
    /// Plugins whose PreScore returned Skip: their Score is not run.
    pub skip_score_plugins: HashSet<&'static str>,
}

impl Clone for CycleState {
    fn clone(&self) -> Self {
        CycleState {
            data: self.data.iter().map(|(k, v)| (*k, (**v).clone_box())).collect(),
            skip_filter_plugins: self.skip_filter_plugins.clone(),
            skip_score_plugins: self.skip_score_plugins.clone(),
        }
    }
}

impl CycleState {
    pub fn new() -> CycleState {
        CycleState::default()
    }

    pub fn write<T: StateData>(&mut self, key: &'static str, value: T) {
        self.data.insert(key, Box::new(value));
    }

    pub fn read<T: 'static>(&self, key: &str) -> Option<&T> {
        self.data.get(key).and_then(|b| (**b).as_any().downcast_ref::<T>())
    }

    pub fn read_mut<T: 'static>(&mut self, key: &str) -> Option<&mut T> {
        self.data.get_mut(key).and_then(|b| (**b).as_any_mut().downcast_mut::<T>())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clone_is_deep() {
        let mut s = CycleState::new();
        s.write("k", vec![1, 2]);
        let c = s.clone();
        s.read_mut::<Vec<i32>>("k").unwrap().push(3);
        assert_eq!(c.read::<Vec<i32>>("k").unwrap(), &vec![1, 2]);
        assert_eq!(s.read::<Vec<i32>>("k").unwrap(), &vec![1, 2, 3]);
        assert!(s.read::<String>("k").is_none());
    }
}
