//! `Framework`: the configured plugins of one profile, run at each
//! extension point as upstream's `frameworkImpl` runs them.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;

use k8s_openapi::api::core::v1::Pod;

use super::{
    BindPlugin, ClusterEvent, Code, CycleState, FilterPlugin, NodeInfo, NodePluginScores, NodeScore, NodeToStatus, NominatedPods, PodInfo,
    PostFilterContext, PostFilterPlugin, PostFilterResult, PreFilterPlugin, PreFilterResult, PreScorePlugin, QueueSortPlugin, QueuedPodInfo,
    ScorePlugin, Snapshot, Status, MAX_NODE_SCORE, MIN_NODE_SCORE,
};

pub struct Framework {
    pub profile_name: String,
    pub queue_sort: Arc<dyn QueueSortPlugin>,
    pub pre_filter: Vec<Arc<dyn PreFilterPlugin>>,
    pub filter: Vec<Arc<dyn FilterPlugin>>,
    pub post_filter: Vec<Arc<dyn PostFilterPlugin>>,
    pub pre_score: Vec<Arc<dyn PreScorePlugin>>,
    /// Score plugins with their weights.
    pub score: Vec<(Arc<dyn ScorePlugin>, i64)>,
    pub bind: Vec<Arc<dyn BindPlugin>>,
    /// Cluster events each plugin registered interest in.
    pub events: HashMap<&'static str, Vec<ClusterEvent>>,
    /// `percentageOfNodesToScore`; `None` or 0 is adaptive.
    pub percentage_of_nodes_to_score: Option<u32>,
}

impl Framework {
    /// A framework with only a queue sort; add plugins with the `with_*` methods.
    pub fn new(profile_name: &str, queue_sort: Arc<dyn QueueSortPlugin>) -> Framework {
        Framework {
            profile_name: profile_name.to_string(),
            queue_sort,
            pre_filter: Vec::new(),
            filter: Vec::new(),
            post_filter: Vec::new(),
            pre_score: Vec::new(),
            score: Vec::new(),
            bind: Vec::new(),
            events: HashMap::new(),
            percentage_of_nodes_to_score: None,
        }
    }

    fn register_events(&mut self, name: &'static str, events: Vec<ClusterEvent>) {
        let e = self.events.entry(name).or_default();
        for ev in events {
            if !e.contains(&ev) {
                e.push(ev);
            }
        }
    }

    pub fn with_pre_filter(mut self, p: Arc<dyn PreFilterPlugin>) -> Self {
        self.register_events(p.name(), p.events_to_register());
        self.pre_filter.push(p);
        self
    }
    pub fn with_filter(mut self, p: Arc<dyn FilterPlugin>) -> Self {
        self.register_events(p.name(), p.events_to_register());
        self.filter.push(p);
        self
    }
    pub fn with_post_filter(mut self, p: Arc<dyn PostFilterPlugin>) -> Self {
        self.post_filter.push(p);
        self
    }
    pub fn with_pre_score(mut self, p: Arc<dyn PreScorePlugin>) -> Self {
        self.pre_score.push(p);
        self
    }
    pub fn with_score(mut self, p: Arc<dyn ScorePlugin>, weight: i64) -> Self {
        self.score.push((p, weight));
        self
    }
    pub fn with_bind(mut self, p: Arc<dyn BindPlugin>) -> Self {
        self.bind.push(p);
        self
    }

    pub fn less(&self, a: &QueuedPodInfo, b: &QueuedPodInfo) -> bool {
        self.queue_sort.less(a, b)
    }

    pub fn has_filter_plugins(&self) -> bool {
        !self.filter.is_empty()
    }

    pub fn has_score_plugins(&self) -> bool {
        !self.score.is_empty()
    }

    /// PreFilter: plugins returning Skip have their Filter skipped; the
    /// node sets they return are intersected. Returns the merged result,
    /// the status, and the plugins that rejected the pod.
    pub fn run_pre_filter(&self, state: &mut CycleState, pod: &PodInfo, snapshot: &Snapshot) -> (Option<PreFilterResult>, Status, BTreeSet<&'static str>) {
        let mut result: Option<PreFilterResult> = None;
        let mut plugins_with_nodes: Vec<&'static str> = Vec::new();
        for pl in &self.pre_filter {
            let (r, s) = pl.pre_filter(state, pod, snapshot);
            if s.is_skip() {
                state.skip_filter_plugins.insert(pl.name());
                continue;
            }
            if !s.is_success() {
                let s = if s.is_rejected() { s } else { Status::error(format!("running PreFilter plugin {:?}: {}", pl.name(), s.message())) };
                return (None, s.with_plugin(pl.name()), [pl.name()].into());
            }
            if let Some(r) = r {
                if !r.all_nodes() {
                    plugins_with_nodes.push(pl.name());
                }
                let merged = match result.take() {
                    None => r,
                    Some(prev) => prev.merge(r),
                };
                if merged.node_names.as_ref().map(|n| n.is_empty()).unwrap_or(false) {
                    let msg = if plugins_with_nodes.len() == 1 {
                        format!("node(s) didn't satisfy plugin {}", plugins_with_nodes[0])
                    } else {
                        format!("node(s) didn't satisfy plugin(s) [{}] simultaneously", plugins_with_nodes.join(" "))
                    };
                    return (None, Status::unresolvable(msg), plugins_with_nodes.into_iter().collect());
                }
                result = Some(merged);
            }
        }
        (result, Status::success(), BTreeSet::new())
    }

    /// Runs every Filter plugin (except skipped ones) until one rejects.
    pub fn run_filter(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo) -> Status {
        // Run for every node of every cycle: look up the skip set only when
        // a PreFilter filled it.
        let skipping = !state.skip_filter_plugins.is_empty();
        for pl in &self.filter {
            if skipping && state.skip_filter_plugins.contains(pl.name()) {
                continue;
            }
            let s = pl.filter(state, pod, node);
            if !s.is_success() {
                let s = if s.is_rejected() { s } else { Status::error(format!("running {:?} filter plugin: {}", pl.name(), s.message())) };
                return s.with_plugin(pl.name());
            }
        }
        Status::success()
    }

    /// Filters with nominated pods of equal or higher priority taken as
    /// running on the node, then (if that passed and there were any)
    /// without them: upstream's `RunFilterPluginsWithNominatedPods`.
    pub fn run_filter_with_nominated(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, nominated: &NominatedPods) -> Status {
        let mut status = Status::success();
        let mut pods_added = false;
        for i in 0..2 {
            if i == 0 {
                match self.add_ge_nominated_pods(state, pod, node, nominated) {
                    Ok(Some((st, ni))) => {
                        pods_added = true;
                        status = self.run_filter(&st, pod, &ni);
                    }
                    Ok(None) => status = self.run_filter(state, pod, node),
                    Err(s) => return s,
                }
            } else {
                if !pods_added || !status.is_success() {
                    break;
                }
                status = self.run_filter(state, pod, node);
            }
            if !status.is_success() && !status.is_rejected() {
                return status;
            }
        }
        status
    }

    fn add_ge_nominated_pods(&self, state: &CycleState, pod: &PodInfo, node: &NodeInfo, nominated: &NominatedPods) -> Result<Option<(CycleState, NodeInfo)>, Status> {
        let relevant: Vec<&Arc<PodInfo>> = nominated.for_node(node.name()).iter().filter(|p| p.uid != pod.uid && p.priority >= pod.priority).collect();
        if relevant.is_empty() {
            return Ok(None);
        }
        let mut ni = node.clone();
        let mut st = state.clone();
        for p in relevant {
            ni.add_pod(p.clone());
            let s = self.run_pre_filter_add_pod(&mut st, pod, p, &ni);
            if !s.is_success() {
                return Err(s);
            }
        }
        Ok(Some((st, ni)))
    }

    pub fn run_pre_filter_add_pod(&self, state: &mut CycleState, pod: &PodInfo, to_add: &PodInfo, node: &NodeInfo) -> Status {
        for pl in &self.pre_filter {
            if state.skip_filter_plugins.contains(pl.name()) {
                continue;
            }
            let s = pl.add_pod(state, pod, to_add, node);
            if !s.is_success() {
                return Status::error(format!("running AddPod on PreFilter plugin {:?}: {}", pl.name(), s.message()));
            }
        }
        Status::success()
    }

    pub fn run_pre_filter_remove_pod(&self, state: &mut CycleState, pod: &PodInfo, to_remove: &PodInfo, node: &NodeInfo) -> Status {
        for pl in &self.pre_filter {
            if state.skip_filter_plugins.contains(pl.name()) {
                continue;
            }
            let s = pl.remove_pod(state, pod, to_remove, node);
            if !s.is_success() {
                return Status::error(format!("running RemovePod on PreFilter plugin {:?}: {}", pl.name(), s.message()));
            }
        }
        Status::success()
    }

    /// PostFilter: the first plugin that succeeds (or is sure it cannot
    /// help) decides; otherwise the reasons are merged.
    pub fn run_post_filter(&self, snapshot: &Snapshot, nominated: &NominatedPods, state: &CycleState, pod: &PodInfo, statuses: &NodeToStatus) -> (Option<PostFilterResult>, Status) {
        let ctx = PostFilterContext { framework: self, snapshot, nominated };
        let mut result = None;
        let mut reasons = Vec::new();
        let mut rejector = "";
        for pl in &self.post_filter {
            let (r, s) = pl.post_filter(&ctx, state, pod, statuses);
            if s.is_success() {
                return (r, s);
            }
            if s.code == Code::UnschedulableAndUnresolvable {
                return (r, s.with_plugin(pl.name()));
            }
            if !s.is_rejected() {
                return (None, Status::error(s.message()).with_plugin(pl.name()));
            }
            if r.as_ref().map(|r| r.nominated_node_name.is_some()).unwrap_or(false) {
                result = r;
            }
            reasons.extend(s.reasons);
            if rejector.is_empty() {
                rejector = pl.name();
            }
        }
        (result, Status::with_reasons(Code::Unschedulable, reasons).with_plugin(rejector))
    }

    pub fn run_pre_score(&self, state: &mut CycleState, pod: &PodInfo, nodes: &[Arc<NodeInfo>], snapshot: &Snapshot) -> Status {
        for pl in &self.pre_score {
            let s = pl.pre_score(state, pod, nodes, snapshot);
            if s.is_skip() {
                state.skip_score_plugins.insert(pl.name());
                continue;
            }
            if !s.is_success() {
                return Status::error(format!("running PreScore plugin {:?}: {}", pl.name(), s.message())).with_plugin(pl.name());
            }
        }
        Status::success()
    }

    /// Score, NormalizeScore and weights: the total per node.
    pub fn run_score(&self, state: &CycleState, pod: &PodInfo, nodes: &[Arc<NodeInfo>]) -> Result<Vec<NodePluginScores>, Status> {
        // One list for every plugin's raw scores, refilled per plugin.
        let mut scores: Vec<NodeScore> = (0..nodes.len()).map(|index| NodeScore { index, score: 0 }).collect();
        let mut totals = vec![0i64; nodes.len()];
        for (pl, weight) in &self.score {
            if state.skip_score_plugins.contains(pl.name()) {
                continue;
            }
            for (n, s) in nodes.iter().zip(scores.iter_mut()) {
                s.score = pl.score(state, pod, n).map_err(|s| Status::error(format!("running Score plugin {:?}: {}", pl.name(), s.message())))?;
            }
            let s = pl.normalize_score(state, pod, &mut scores);
            if !s.is_success() {
                return Err(Status::error(format!("running Normalize on Score plugin {:?}: {}", pl.name(), s.message())));
            }
            for (total, s) in totals.iter_mut().zip(&scores) {
                if s.score > MAX_NODE_SCORE || s.score < MIN_NODE_SCORE {
                    return Err(Status::error(format!(
                        "plugin {:?} returns an invalid score {}, it should in the range of [{MIN_NODE_SCORE}, {MAX_NODE_SCORE}] after normalizing",
                        pl.name(),
                        s.score
                    )));
                }
                *total += s.score * weight;
            }
        }
        Ok(scores.into_iter().zip(totals).map(|(s, total)| NodePluginScores { index: s.index, total }).collect())
    }

    /// Bind: the first bind plugin that does not skip decides.
    pub async fn run_bind(&self, pod: &Pod, node_name: &str) -> Status {
        for pl in &self.bind {
            let s = pl.bind(pod, node_name).await;
            if s.is_skip() {
                continue;
            }
            return s.with_plugin(pl.name());
        }
        Status::error("no bind plugin bound the pod")
    }
}
