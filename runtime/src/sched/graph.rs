//! The run's graph as a state machine with no I/O: which steps still wait
//! for which, which units are ready, and which of them may start now under
//! the pools' sizes and the maps' parallelism bounds.
//!
//! The scheduler drives it: [`Graph::next_launchable`] hands out a unit and
//! counts it against its pools, [`Graph::release`] gives the slots back,
//! [`Graph::succeeded`] settles a step and returns the dependants that became
//! ready, [`Graph::downstream`] lists what a failed or skipped step takes
//! with it. Everything else (cache, execution, records, events) stays with
//! the scheduler, so this part is tested alone, in microseconds.

use std::collections::{HashMap, VecDeque};

/// A unit of work: a step, or child `k` of map step `i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum Unit {
    /// A step of the plan, by index.
    Step(usize),
    /// Child `.1` of the map step `.0`.
    Child(usize, usize),
}

impl Unit {
    /// The plan step this unit belongs to.
    pub(crate) fn step(self) -> usize {
        match self {
            Unit::Step(i) | Unit::Child(i, _) => i,
        }
    }
}

/// The readiness state of one run's steps and units.
pub(crate) struct Graph {
    /// For each step, the steps that wait for it.
    dependents: Vec<Vec<usize>>,
    /// For each step, how many of its dependencies have not succeeded.
    waiting: Vec<usize>,
    /// Each step's place in the plan's topological order (ties go first to
    /// the step earlier in the order).
    position: Vec<usize>,
    /// Whether a step has its final report (succeeded, failed, skipped...).
    settled: Vec<bool>,
    /// Each step's pool tags.
    tags: Vec<Vec<String>>,
    /// Pool sizes by tag (tags without a size are unbounded).
    pools: HashMap<String, u32>,
    /// Units running per pool.
    pool_running: HashMap<String, u32>,
    /// Each step's map parallelism bound (0: none).
    parallelism: Vec<u32>,
    /// Children running per map step.
    map_running: HashMap<usize, u32>,
    /// Units whose inputs are known, in the order they became ready.
    ready: VecDeque<Unit>,
}

impl Graph {
    /// The graph of steps whose dependencies are `deps` (indices), in the
    /// topological `order`, with pool `tags` per step, pool sizes `pools`
    /// and map `parallelism` per step (0: unbounded).
    pub(crate) fn new(
        deps: &[Vec<usize>],
        order: &[usize],
        tags: Vec<Vec<String>>,
        pools: HashMap<String, u32>,
        parallelism: Vec<u32>,
    ) -> Graph {
        let n = deps.len();
        let mut dependents: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, ds) in deps.iter().enumerate() {
            for &d in ds {
                dependents[d].push(i);
            }
        }
        let mut position = vec![0usize; n];
        for (pos, &i) in order.iter().enumerate() {
            position[i] = pos;
        }
        Graph {
            waiting: deps.iter().map(Vec::len).collect(),
            dependents,
            position,
            settled: vec![false; n],
            tags,
            pools,
            pool_running: HashMap::new(),
            parallelism,
            map_running: HashMap::new(),
            ready: VecDeque::new(),
        }
    }

    /// The steps that wait for nothing, in topological order.
    pub(crate) fn roots(&self) -> Vec<usize> {
        let mut roots: Vec<usize> = (0..self.waiting.len())
            .filter(|&i| self.waiting[i] == 0)
            .collect();
        roots.sort_by_key(|&i| self.position[i]);
        roots
    }

    /// Queues `u` as ready, behind the units already ready.
    pub(crate) fn push(&mut self, u: Unit) {
        self.ready.push_back(u);
    }

    /// Queues `u` as ready, ahead of the others (a unit that was handed out
    /// and never started goes back where it was).
    pub(crate) fn push_front(&mut self, u: Unit) {
        self.ready.push_front(u);
    }

    /// Whether no unit is ready.
    pub(crate) fn nothing_ready(&self) -> bool {
        self.ready.is_empty()
    }

    /// Whether unit `u` fits now: every pool of its step has room, and a
    /// map child's map is under its parallelism bound.
    fn fits(&self, u: Unit) -> bool {
        let i = u.step();
        let pools_ok = self.tags[i].iter().all(|t| match self.pools.get(t) {
            Some(&size) => self.pool_running.get(t).copied().unwrap_or(0) < size,
            None => true,
        });
        let map_ok = match u {
            Unit::Child(i, _) if self.parallelism[i] > 0 => {
                self.map_running.get(&i).copied().unwrap_or(0) < self.parallelism[i]
            }
            _ => true,
        };
        pools_ok && map_ok
    }

    /// The first ready unit that fits now, counted as running in its pools
    /// and map until [`Graph::release`].
    pub(crate) fn next_launchable(&mut self) -> Option<Unit> {
        let pos = self.ready.iter().position(|&u| self.fits(u))?;
        let u = self.ready.remove(pos)?;
        let i = u.step();
        for t in &self.tags[i] {
            if self.pools.contains_key(t) {
                *self.pool_running.entry(t.clone()).or_default() += 1;
            }
        }
        if let Unit::Child(i, _) = u {
            *self.map_running.entry(i).or_default() += 1;
        }
        Some(u)
    }

    /// Unit `u` no longer runs: its pools and map have room again.
    pub(crate) fn release(&mut self, u: Unit) {
        let i = u.step();
        for t in &self.tags[i] {
            if let Some(n) = self.pool_running.get_mut(t) {
                *n = n.saturating_sub(1);
            }
        }
        if let Unit::Child(i, _) = u
            && let Some(n) = self.map_running.get_mut(&i)
        {
            *n = n.saturating_sub(1);
        }
    }

    /// Step `i` has its final report.
    pub(crate) fn settle(&mut self, i: usize) {
        self.settled[i] = true;
    }

    /// Whether step `i` has its final report.
    #[cfg(test)]
    pub(crate) fn is_settled(&self, i: usize) -> bool {
        self.settled[i]
    }

    /// Step `i` succeeded: the dependants that wait for nothing more (and
    /// have no report yet), in topological order.
    pub(crate) fn succeeded(&mut self, i: usize) -> Vec<usize> {
        self.settle(i);
        let mut newly = Vec::new();
        for &d in &self.dependents[i] {
            self.waiting[d] -= 1;
            if self.waiting[d] == 0 && !self.settled[d] {
                newly.push(d);
            }
        }
        newly.sort_by_key(|&d| self.position[d]);
        newly
    }

    /// Everything downstream of step `i` that has no report yet, each once,
    /// nearest first along each path: what a failed or skipped step takes
    /// with it. The caller settles them.
    pub(crate) fn downstream(&self, i: usize) -> Vec<usize> {
        let mut seen = vec![false; self.settled.len()];
        let mut out = Vec::new();
        let mut stack = self.dependents[i].clone();
        while let Some(d) = stack.pop() {
            if self.settled[d] || seen[d] {
                continue;
            }
            seen[d] = true;
            out.push(d);
            stack.extend(self.dependents[d].iter().copied());
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A graph of `n` steps with `deps`, in index order, no pools or maps.
    fn plain(deps: &[&[usize]]) -> Graph {
        let deps: Vec<Vec<usize>> = deps.iter().map(|d| d.to_vec()).collect();
        let n = deps.len();
        let order: Vec<usize> = (0..n).collect();
        Graph::new(
            &deps,
            &order,
            vec![Vec::new(); n],
            HashMap::new(),
            vec![0; n],
        )
    }

    /// Runs the graph to the end, every step succeeding, one unit at a
    /// time; returns the order the steps ran in.
    fn run_all(g: &mut Graph) -> Vec<usize> {
        for r in g.roots() {
            g.push(Unit::Step(r));
        }
        let mut ran = Vec::new();
        while let Some(u) = g.next_launchable() {
            g.release(u);
            ran.push(u.step());
            for d in g.succeeded(u.step()) {
                g.push(Unit::Step(d));
            }
        }
        ran
    }

    #[test]
    fn a_diamond_runs_each_step_once_after_all_its_dependencies() {
        // 0 -> 1, 0 -> 2, (1, 2) -> 3
        let mut g = plain(&[&[], &[0], &[0], &[1, 2]]);
        assert_eq!(g.roots(), vec![0]);
        assert_eq!(run_all(&mut g), vec![0, 1, 2, 3]);
        assert!((0..4).all(|i| g.is_settled(i)));
    }

    #[test]
    fn ties_go_to_the_earlier_step_in_topological_order() {
        // 3 and 1 both wait for 0; the order puts 3 first.
        let deps: Vec<Vec<usize>> = vec![vec![], vec![0], vec![], vec![0]];
        let mut g = Graph::new(
            &deps,
            &[2, 0, 3, 1],
            vec![Vec::new(); 4],
            HashMap::new(),
            vec![0; 4],
        );
        assert_eq!(g.roots(), vec![2, 0]);
        assert_eq!(g.succeeded(0), vec![3, 1]);
    }

    #[test]
    fn a_pool_bounds_the_units_running_at_once() {
        let n = 5;
        let deps = vec![Vec::new(); n];
        let order: Vec<usize> = (0..n).collect();
        let mut tags = vec![vec!["db".to_string()]; n];
        tags[4] = Vec::new();
        let pools = HashMap::from([("db".to_string(), 2)]);
        let mut g = Graph::new(&deps, &order, tags, pools, vec![0; n]);
        for r in g.roots() {
            g.push(Unit::Step(r));
        }
        // Two of the pool's steps, then the untagged one jumps the queue.
        assert_eq!(g.next_launchable(), Some(Unit::Step(0)));
        assert_eq!(g.next_launchable(), Some(Unit::Step(1)));
        assert_eq!(g.next_launchable(), Some(Unit::Step(4)));
        assert_eq!(g.next_launchable(), None);
        g.release(Unit::Step(1));
        assert_eq!(g.next_launchable(), Some(Unit::Step(2)));
        assert_eq!(g.next_launchable(), None);
    }

    #[test]
    fn a_map_runs_at_most_its_parallelism_of_children_at_once() {
        let deps = vec![Vec::new(), Vec::new()];
        let mut g = Graph::new(
            &deps,
            &[0, 1],
            vec![Vec::new(); 2],
            HashMap::new(),
            vec![2, 0],
        );
        for k in 0..4 {
            g.push(Unit::Child(0, k));
        }
        for k in 0..3 {
            g.push(Unit::Child(1, k));
        }
        let mut running = Vec::new();
        while let Some(u) = g.next_launchable() {
            running.push(u);
        }
        // Map 0 stops at two; map 1 has no bound.
        assert_eq!(
            running,
            vec![
                Unit::Child(0, 0),
                Unit::Child(0, 1),
                Unit::Child(1, 0),
                Unit::Child(1, 1),
                Unit::Child(1, 2)
            ]
        );
        g.release(Unit::Child(0, 0));
        assert_eq!(g.next_launchable(), Some(Unit::Child(0, 2)));
        assert_eq!(g.next_launchable(), None);
    }

    #[test]
    fn a_unit_put_back_goes_first() {
        let mut g = plain(&[&[], &[]]);
        g.push(Unit::Step(0));
        g.push(Unit::Step(1));
        let u = g.next_launchable().unwrap();
        g.release(u);
        g.push_front(u);
        assert_eq!(g.next_launchable(), Some(Unit::Step(0)));
        assert!(!g.nothing_ready());
    }

    #[test]
    fn downstream_lists_each_unsettled_dependant_once() {
        // 0 -> 1 -> 3, 0 -> 2 -> 3, 3 -> 4; 2 already settled.
        let mut g = plain(&[&[], &[0], &[0], &[1, 2], &[3]]);
        g.settle(2);
        let mut down = g.downstream(0);
        assert_eq!(down.len(), 3, "{down:?}");
        down.sort();
        assert_eq!(down, vec![1, 3, 4]);
        assert!(g.downstream(4).is_empty());
    }

    #[test]
    fn a_step_waits_while_any_dependency_has_not_succeeded() {
        let mut g = plain(&[&[], &[], &[0, 1]]);
        assert_eq!(g.succeeded(0), Vec::<usize>::new());
        // A dependant settled meanwhile (skipped) is not ready again.
        g.settle(2);
        assert_eq!(g.succeeded(1), Vec::<usize>::new());
    }

    #[test]
    fn a_chain_of_ten_thousand_steps_is_walked_in_order() {
        let n = 10_000;
        let deps: Vec<Vec<usize>> = (0..n)
            .map(|i| if i == 0 { vec![] } else { vec![i - 1] })
            .collect();
        let order: Vec<usize> = (0..n).collect();
        let mut g = Graph::new(
            &deps,
            &order,
            vec![Vec::new(); n],
            HashMap::new(),
            vec![0; n],
        );
        let ran = run_all(&mut g);
        assert_eq!(ran, order);
    }
}
