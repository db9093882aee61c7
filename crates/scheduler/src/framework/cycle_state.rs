//! `CycleState`: data plugins share within one scheduling cycle, keyed by
//! name. Cloneable (preemption evaluates nodes on copies), so every entry
//! is `Clone`.

use std::any::Any;

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
    /// A handful of entries (one per plugin with a PreFilter or PreScore),
    /// read for every node by every Filter and Score: a scan of a short
    /// vector beats hashing the key each time.
    data: Vec<(&'static str, Box<dyn StateData>)>,
    /// Plugins whose PreFilter returned Skip: their Filter is not run.
    pub skip_filter_plugins: PluginSet,
    /// Plugins whose PreScore returned Skip: their Score is not run.
    pub skip_score_plugins: PluginSet,
}

/// A set of plugin names. Filters ask it for every node: a scan of a few
/// `&'static str` (unequal lengths end a comparison at once) instead of
/// hashing the name each time.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PluginSet(Vec<&'static str>);

impl PluginSet {
    pub fn insert(&mut self, name: &'static str) -> bool {
        if self.contains(name) {
            return false;
        }
        self.0.push(name);
        true
    }

    pub fn contains(&self, name: &str) -> bool {
        self.0.contains(&name)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }
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
        match self.data.iter_mut().find(|(k, _)| *k == key) {
            Some((_, v)) => *v = Box::new(value),
            None => self.data.push((key, Box::new(value))),
        }
    }

    pub fn read<T: 'static>(&self, key: &str) -> Option<&T> {
        self.data.iter().find(|(k, _)| *k == key).and_then(|(_, b)| (**b).as_any().downcast_ref::<T>())
    }

    pub fn read_mut<T: 'static>(&mut self, key: &str) -> Option<&mut T> {
        self.data.iter_mut().find(|(k, _)| *k == key).and_then(|(_, b)| (**b).as_any_mut().downcast_mut::<T>())
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

    #[test]
    fn writes_replace_and_plugin_sets_dedupe() {
        let mut s = CycleState::new();
        s.write("a", 1u32);
        s.write("b", 2u32);
        s.write("a", 3u32);
        assert_eq!((s.read::<u32>("a"), s.read::<u32>("b"), s.read::<u32>("c")), (Some(&3), Some(&2), None));
        let mut set = PluginSet::default();
        assert!(set.is_empty());
        assert!(set.insert("NodeAffinity"));
        assert!(!set.insert("NodeAffinity"));
        assert!(set.insert("NodePorts"));
        assert_eq!(set.len(), 2);
        assert!(set.contains("NodePorts") && !set.contains("NodeName"));
    }
}
