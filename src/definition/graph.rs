//! Graph checks on a procedure's steps: every step reachable from `start`, every reachable
//! step able to reach an end, end steps without ways out, parallel blocks that meet again at
//! their own join, and separation-of-duties rules that name a step which can come first.
//!
//! The checks look at the shape of the graph only; they ignore guards (any transition may be
//! taken). They run after the reference pass, so an edge to a step that does not exist is
//! silently left out here (the reference pass reports it) — nothing in this module may panic
//! on any input, and it must not report missing references itself. Nor does it repeat what the
//! semantic pass says about single steps: a step without `next` (`no-transitions`), a parallel
//! step without `join` or `branches` (`missing-key`), `branches`/`join` on an end step
//! (`misplaced-key`), a step separated from itself (`bad-separation`).
//!
//! Edges of a step by kind: `task`, `auto`, `subprocess` and `join` have one edge per
//! `next[i].to`; `parallel` has one edge to each of its `branches`; `end` has none.

use std::collections::{HashMap, VecDeque};

use petgraph::algo::tarjan_scc;
use petgraph::graph::{DiGraph, NodeIndex};

use super::diagnostic::Diagnostic;
use super::model::{Procedure, Step, StepKind};
use super::source::{ptr, SpannedDoc};

/// The steps a step can lead to directly, by the edge rule above, in the order written.
/// Names may refer to steps that do not exist.
pub fn successors(step: &Step) -> Vec<&str> {
    match step.kind {
        StepKind::Task | StepKind::Auto | StepKind::Subprocess | StepKind::Join => {
            step.next.iter().map(|t| t.to.as_str()).collect()
        }
        StepKind::Parallel => step.branches.iter().map(String::as_str).collect(),
        StepKind::End => Vec::new(),
    }
}

/// Whether step `x` can have been completed before step `y` in some run: there is a path
/// `x → … → y`, or the two lie in different branches of one parallel step (so they run side
/// by side and either may finish first). Unknown step names give `false`.
pub fn can_precede(proc: &Procedure, x: &str, y: &str) -> bool {
    let g = Graph::new(proc);
    match (g.index_of(x), g.index_of(y)) {
        (Some(x), Some(y)) => g.can_precede(x, y),
        _ => false,
    }
}

/// Runs every graph check and returns every problem found, all errors: `unreachable-step`,
/// `loop-without-exit`, `end-has-transitions`, `join-mismatch`, `separation-order`.
pub fn check(proc: &Procedure, doc: &SpannedDoc) -> Vec<Diagnostic> {
    let g = Graph::new(proc);
    let mut out = Vec::new();
    end_steps(&g, doc, &mut out);
    if let Some(start) = g.start {
        let reach = g.reach(&[start], None);
        unreachable(&g, doc, &reach, &mut out);
        no_way_to_end(&g, doc, &reach, &mut out);
    }
    joins(&g, doc, &mut out);
    separation(&g, doc, &mut out);
    out
}

/// The procedure as an index-based graph. Edges to unknown steps are dropped but remembered
/// (`dangling`), so checks can give such steps the benefit of the doubt instead of piling a
/// second error on top of the reference pass's.
pub(crate) struct Graph<'a> {
    pub ids: Vec<&'a str>,
    pub steps: Vec<&'a Step>,
    index: HashMap<&'a str, usize>,
    /// Known successors, without duplicates, in the order written.
    pub succ: Vec<Vec<usize>>,
    pub pred: Vec<Vec<usize>>,
    /// The step names a successor that does not exist.
    pub dangling: Vec<bool>,
    pub start: Option<usize>,
    pub start_name: &'a str,
}

impl<'a> Graph<'a> {
    pub fn new(proc: &'a Procedure) -> Self {
        let ids: Vec<&str> = proc.steps.keys().map(String::as_str).collect();
        let steps: Vec<&Step> = proc.steps.values().collect();
        let index: HashMap<&str, usize> = ids.iter().enumerate().map(|(i, id)| (*id, i)).collect();
        let n = ids.len();
        let mut succ = vec![Vec::new(); n];
        let mut pred = vec![Vec::new(); n];
        let mut dangling = vec![false; n];
        for (i, step) in steps.iter().enumerate() {
            for to in successors(step) {
                match index.get(to) {
                    Some(&j) => {
                        if !succ[i].contains(&j) {
                            succ[i].push(j);
                            pred[j].push(i);
                        }
                    }
                    None => dangling[i] = true,
                }
            }
        }
        let start = index.get(proc.start.as_str()).copied();
        Graph {
            ids,
            steps,
            index,
            succ,
            pred,
            dangling,
            start,
            start_name: proc.start.as_str(),
        }
    }

    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn index_of(&self, id: &str) -> Option<usize> {
        self.index.get(id).copied()
    }

    pub fn id(&self, i: usize) -> &'a str {
        self.ids.get(i).copied().unwrap_or("?")
    }

    pub fn kind(&self, i: usize) -> Option<StepKind> {
        self.steps.get(i).map(|s| s.kind)
    }

    /// Steps reachable from `from` (included), never entering `stop`'s successors: `stop`
    /// itself is marked when reached but not walked through.
    pub fn reach(&self, from: &[usize], stop: Option<usize>) -> Vec<bool> {
        let mut seen = vec![false; self.len()];
        let mut queue: VecDeque<usize> = VecDeque::new();
        for &f in from {
            if f < self.len() && !seen[f] {
                seen[f] = true;
                queue.push_back(f);
            }
        }
        while let Some(i) = queue.pop_front() {
            if Some(i) == stop {
                continue;
            }
            for &j in &self.succ[i] {
                if !seen[j] {
                    seen[j] = true;
                    queue.push_back(j);
                }
            }
        }
        seen
    }

    /// Steps from which an end step can be reached. Steps with an edge to an unknown step
    /// count as able to: the reference pass already reports them.
    pub fn can_reach_end(&self) -> Vec<bool> {
        let mut ok: Vec<bool> = self
            .steps
            .iter()
            .zip(&self.dangling)
            .map(|(s, d)| s.kind == StepKind::End || *d)
            .collect();
        let mut queue: VecDeque<usize> = (0..ok.len()).filter(|&i| ok[i]).collect();
        while let Some(i) = queue.pop_front() {
            for &p in &self.pred[i] {
                if !ok[p] {
                    ok[p] = true;
                    queue.push_back(p);
                }
            }
        }
        ok
    }

    /// Reachable steps that can never reach an end.
    pub fn stuck(&self) -> Vec<bool> {
        let Some(start) = self.start else {
            return vec![false; self.len()];
        };
        let reach = self.reach(&[start], None);
        let ok = self.can_reach_end();
        reach.iter().zip(&ok).map(|(r, o)| *r && !*o).collect()
    }

    /// Fewest transitions from `from` to each step, `None` where it cannot be reached.
    pub fn distances(&self, from: usize) -> Vec<Option<usize>> {
        let mut dist = vec![None; self.len()];
        if from >= self.len() {
            return dist;
        }
        dist[from] = Some(0);
        let mut queue = VecDeque::from([from]);
        while let Some(i) = queue.pop_front() {
            let next = dist[i].map_or(0, |d| d + 1);
            for &j in &self.succ[i] {
                if dist[j].is_none() {
                    dist[j] = Some(next);
                    queue.push_back(j);
                }
            }
        }
        dist
    }

    /// Shortest path `from → … → to` (both included), following edges.
    pub fn path(&self, from: usize, to: usize, within: Option<&[bool]>) -> Option<Vec<usize>> {
        let allowed = |i: usize| within.is_none_or(|w| w.get(i).copied().unwrap_or(false));
        let mut parent: Vec<Option<usize>> = vec![None; self.len()];
        let mut seen = vec![false; self.len()];
        let mut queue = VecDeque::new();
        // Start from the successors so that `from == to` finds a cycle, not the empty path.
        for &j in self.succ.get(from)? {
            if allowed(j) && !seen[j] {
                seen[j] = true;
                parent[j] = Some(from);
                queue.push_back(j);
            }
        }
        while let Some(i) = queue.pop_front() {
            if i == to {
                let mut path = vec![to];
                let mut cur = to;
                while let Some(p) = parent[cur] {
                    path.push(p);
                    if p == from {
                        break;
                    }
                    cur = p;
                }
                path.reverse();
                return Some(path);
            }
            for &j in &self.succ[i] {
                if allowed(j) && !seen[j] {
                    seen[j] = true;
                    parent[j] = Some(i);
                    queue.push_back(j);
                }
            }
        }
        None
    }

    /// Parallel steps with their join (when it names an existing step), in file order.
    pub fn parallels(&self) -> Vec<(usize, Option<usize>)> {
        (0..self.len())
            .filter(|&i| self.kind(i) == Some(StepKind::Parallel))
            .map(|i| {
                let join = self.steps[i].join.as_deref().and_then(|j| self.index_of(j));
                (i, join)
            })
            .collect()
    }

    /// Known branch starts of a parallel step, with their position in `branches`.
    pub fn branches(&self, p: usize) -> Vec<(usize, usize)> {
        self.steps.get(p).map_or_else(Vec::new, |s| {
            s.branches
                .iter()
                .enumerate()
                .filter_map(|(pos, b)| self.index_of(b).map(|i| (pos, i)))
                .collect()
        })
    }

    pub fn can_precede(&self, x: usize, y: usize) -> bool {
        if self.path(x, y, None).is_some() {
            return true;
        }
        self.parallels().into_iter().any(|(p, join)| {
            let regions: Vec<Vec<bool>> = self
                .branches(p)
                .into_iter()
                .map(|(_, b)| {
                    let mut r = self.reach(&[b], join);
                    // The join is where branches meet, not part of any branch.
                    if let Some(slot) = join.and_then(|j| r.get_mut(j)) {
                        *slot = false;
                    }
                    r
                })
                .collect();
            let has = |r: &Vec<bool>, i: usize| r.get(i).copied().unwrap_or(false);
            regions.iter().enumerate().any(|(i, ri)| {
                has(ri, x)
                    && regions
                        .iter()
                        .enumerate()
                        .any(|(k, rk)| k != i && has(rk, y))
            })
        })
    }
}

fn step_key(doc: &SpannedDoc, id: &str) -> Option<std::ops::Range<usize>> {
    doc.key_span(&ptr(&["steps", id]))
}

fn quote_list(ids: &[&str]) -> String {
    ids.iter()
        .map(|s| format!("`{s}`"))
        .collect::<Vec<_>>()
        .join(" → ")
}

fn unreachable(g: &Graph, doc: &SpannedDoc, reach: &[bool], out: &mut Vec<Diagnostic>) {
    for (i, reached) in reach.iter().enumerate() {
        if !reached {
            let id = g.id(i);
            out.push(
                Diagnostic::error(
                    "unreachable-step",
                    format!(
                        "step `{id}` can never be reached: no transition leads to it from \
                         `start` (`{}`)",
                        g.start_name
                    ),
                )
                .at(step_key(doc, id))
                .label("never reached")
                .help("add a transition to it, or delete the step"),
            );
        }
    }
}

fn no_way_to_end(g: &Graph, doc: &SpannedDoc, reach: &[bool], out: &mut Vec<Diagnostic>) {
    let ok = g.can_reach_end();
    let stuck: Vec<bool> = reach.iter().zip(&ok).map(|(r, o)| *r && !*o).collect();
    if !stuck.iter().any(|s| *s) {
        return;
    }
    // Distance from start, to name the first step of a loop an instance would enter.
    let dist: Vec<usize> = match g.start {
        Some(start) => g
            .distances(start)
            .into_iter()
            .map(|d| d.unwrap_or(usize::MAX))
            .collect(),
        None => vec![usize::MAX; g.len()],
    };

    // Every successor of a stuck step is stuck too, so the stuck steps fall into components
    // some of which have no edge out at all: those are the causes; the other stuck steps only
    // lead into them, and fixing the causes fixes them.
    let mut sub: DiGraph<usize, ()> = DiGraph::new();
    let nodes: Vec<NodeIndex> = (0..g.len()).map(|i| sub.add_node(i)).collect();
    for i in (0..g.len()).filter(|&i| stuck[i]) {
        for &j in &g.succ[i] {
            if stuck[j] {
                sub.add_edge(nodes[i], nodes[j], ());
            }
        }
    }
    let mut causes: Vec<Vec<usize>> = tarjan_scc(&sub)
        .into_iter()
        .map(|c| c.into_iter().map(|n| n.index()).collect::<Vec<_>>())
        .filter(|c: &Vec<usize>| c.iter().all(|&i| stuck[i]))
        .filter(|c| c.iter().all(|&i| g.succ[i].iter().all(|j| c.contains(j))))
        .collect();
    for c in &mut causes {
        c.sort_by_key(|&i| (dist[i], i));
    }
    causes.sort_by_key(|c| c.first().map(|&i| (dist[i], i)));

    for c in causes {
        let Some(&entry) = c.first() else { continue };
        let id = g.id(entry);
        // A cause that is not a loop is a dead end: a step with no `next` (or a parallel step
        // without `branches`), since every written edge either exists or dangles and a
        // dangling one counts as a way on. The semantic pass reports exactly that step as
        // `no-transitions` / `missing-key`; a second error on it would help nobody, and the
        // steps leading into it need no sentence of their own.
        let is_loop = c.len() > 1 || g.succ[entry].contains(&entry);
        if is_loop {
            let within: Vec<bool> = (0..g.len()).map(|i| c.contains(&i)).collect();
            let cycle = g
                .path(entry, entry, Some(&within))
                .unwrap_or_else(|| vec![entry, entry]);
            let names: Vec<&str> = cycle.iter().map(|&i| g.id(i)).collect();
            let others: Vec<&str> = c
                .iter()
                .filter(|i| !cycle.contains(i))
                .map(|&i| g.id(i))
                .collect();
            let also = if others.is_empty() {
                String::new()
            } else {
                format!(
                    " (together with {})",
                    others
                        .iter()
                        .map(|s| format!("`{s}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            };
            let subject = if c.len() == 1 {
                format!("step `{id}` only leads back to itself")
            } else {
                format!(
                    "steps {} form a loop{also} with no way out",
                    quote_list(&names)
                )
            };
            out.push(
                Diagnostic::error(
                    "loop-without-exit",
                    format!("{subject}: an instance that enters it can never reach an end step"),
                )
                .at(step_key(doc, id))
                .label("the loop starts here")
                .help(
                    "add a transition from one of these steps to a step that leads to an end \
                     (for example a `when` condition that leaves the loop)",
                ),
            );
        }
    }
}

fn end_steps(g: &Graph, doc: &SpannedDoc, out: &mut Vec<Diagnostic>) {
    for (i, step) in g.steps.iter().enumerate() {
        if step.kind != StepKind::End {
            continue;
        }
        let id = g.id(i);
        // `branches` or `join` on an end step are the semantic pass's `misplaced-key`.
        if !step.next.is_empty() {
            out.push(
                Diagnostic::error(
                    "end-has-transitions",
                    format!(
                        "`{id}` is an end step, so it cannot have transitions (`next`): the \
                         instance ends there"
                    ),
                )
                .at(doc.key_span(&ptr(&["steps", id, "next"])))
                .label("not allowed on an end step")
                .help(format!(
                    "remove `next`, or change `kind` if the procedure should go on after `{id}`"
                )),
            );
        }
    }
}

fn joins(g: &Graph, doc: &SpannedDoc, out: &mut Vec<Diagnostic>) {
    let mut owner: HashMap<usize, usize> = HashMap::new();
    for (p, join) in g.parallels() {
        let pid = g.id(p);
        let step = g.steps[p];
        // A missing `join` is the semantic pass's `missing-key`.
        let Some(jname) = step.join.as_deref() else {
            continue;
        };
        let join_span = doc.value_span(&ptr(&["steps", pid, "join"]));
        // A join naming an unknown step is the reference pass's to report.
        let Some(j) = join else { continue };
        if g.kind(j) != Some(StepKind::Join) {
            out.push(
                Diagnostic::error(
                    "join-mismatch",
                    format!(
                        "parallel step `{pid}` names `{jname}` as its join, but `{jname}` is not \
                         a join step"
                    ),
                )
                .at(join_span)
                .label("not a join step")
                .help(format!(
                    "give `{jname}` `kind = \"join\"`, or name the right join"
                )),
            );
            continue;
        }
        if let Some(&first) = owner.get(&j) {
            out.push(
                Diagnostic::error(
                    "join-mismatch",
                    format!(
                        "the join `{jname}` is already the join of parallel step `{}`; parallel \
                         step `{pid}` needs a join of its own",
                        g.id(first)
                    ),
                )
                .at(join_span)
                .label("join used twice")
                .help("add a separate step with `kind = \"join\"` for each parallel step"),
            );
            continue;
        }
        owner.insert(j, p);

        let mut region = vec![false; g.len()];
        for (pos, b) in g.branches(p) {
            let bid = g.id(b);
            let seen = g.reach(&[b], Some(j));
            for (r, s) in region.iter_mut().zip(&seen) {
                *r |= *s;
            }
            // A branch must not finish the instance, start it over or split again from the
            // same parallel step before reaching its join. An end step that terminates may
            // be reached from a branch: it withdraws the others.
            let escape = (0..g.len()).find(|&i| {
                let ends = g.kind(i) == Some(StepKind::End)
                    && !g.steps.get(i).is_some_and(|s| s.terminate);
                seen[i] && i != j && (ends || Some(i) == g.start || i == p)
            });
            if let Some(e) = escape {
                let eid = g.id(e);
                let what = if g.kind(e) == Some(StepKind::End) {
                    format!("the end step `{eid}`")
                } else if e == p {
                    format!("its parallel step `{eid}` again")
                } else {
                    format!("the start step `{eid}` again")
                };
                // The path must avoid the join, as the escape it shows does.
                let mut avoid_join = seen.clone();
                if let Some(slot) = avoid_join.get_mut(j) {
                    *slot = false;
                }
                let via = g
                    .path(b, e, Some(&avoid_join))
                    // Only worth a mention when the escape is not the branch's first step.
                    .filter(|path| path.len() > 2 && path.first() == Some(&b))
                    .map(|path| {
                        let names: Vec<&str> = path.iter().map(|&i| g.id(i)).collect();
                        format!(" (by {})", quote_list(&names))
                    })
                    .unwrap_or_default();
                out.push(
                    Diagnostic::error(
                        "join-mismatch",
                        format!(
                            "branch `{bid}` of parallel step `{pid}` can reach {what} without \
                             passing the join `{jname}`{via}"
                        ),
                    )
                    .at(doc.value_span(&ptr(&["steps", pid, "branches", &pos.to_string()])))
                    .label("this branch escapes")
                    .help(format!(
                        "every path of a branch must lead to `{jname}`; the other branches would \
                         wait there forever"
                    )),
                );
            }
        }
        for &x in &g.pred[j] {
            if region[x] && x != j {
                continue;
            }
            // An empty branch (the join listed as a branch) is the parallel step itself.
            if x == p {
                continue;
            }
            let xid = g.id(x);
            let entry = g.steps[x]
                .next
                .iter()
                .position(|t| t.to == jname)
                .map(|i| ptr(&["steps", xid, "next", &i.to_string(), "to"]))
                .unwrap_or_else(|| ptr(&["steps", xid]));
            out.push(
                Diagnostic::error(
                    "join-mismatch",
                    format!(
                        "step `{xid}` leads into the join `{jname}` but is not in a branch of its \
                         parallel step `{pid}`"
                    ),
                )
                .at(doc.value_span(&entry))
                .label("enters the join from outside")
                .help(format!(
                    "only the branches started by `{pid}` may lead to `{jname}`; lead `{xid}` \
                     elsewhere"
                )),
            );
        }
    }
    for j in (0..g.len()).filter(|&j| g.kind(j) == Some(StepKind::Join)) {
        if !owner.contains_key(&j) {
            let jid = g.id(j);
            out.push(
                Diagnostic::error(
                    "join-mismatch",
                    format!(
                        "join step `{jid}` is not the `join` of any parallel step, so it has no \
                         branches to wait for"
                    ),
                )
                .at(step_key(doc, jid))
                .label("orphan join")
                .help(format!(
                    "name it in a parallel step (`join = \"{jid}\"`), or make it an ordinary step"
                )),
            );
        }
    }
}

fn separation(g: &Graph, doc: &SpannedDoc, out: &mut Vec<Diagnostic>) {
    for (yi, step) in g.steps.iter().enumerate() {
        let Some(sep) = &step.separation else {
            continue;
        };
        let y = g.id(yi);
        for (pos, x) in sep.not_same_person_as.iter().enumerate() {
            // Unknown names and a step separated from itself are the semantic pass's.
            let Some(xi) = g.index_of(x).filter(|&xi| xi != yi) else {
                continue;
            };
            if g.can_precede(xi, yi) {
                continue;
            }
            out.push(
                Diagnostic::error(
                    "separation-order",
                    format!(
                        "step `{y}` must not be done by the person who did `{x}`, but `{x}` can \
                         never happen before `{y}`"
                    ),
                )
                .at(doc.value_span(&ptr(&[
                    "steps",
                    y,
                    "separation",
                    "not_same_person_as",
                    &pos.to_string(),
                ])))
                .label("never comes first")
                .help(format!(
                    "name a step that comes before `{y}` (or runs beside it in a parallel branch), \
                     or put the rule on `{x}` instead"
                )),
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(steps: &str) -> (Procedure, SpannedDoc, String) {
        let src = format!("id = \"t\"\nversion = 1\ntitle = \"T\"\nstart = \"a\"\n{steps}");
        let proc: Procedure = toml::from_str(&src).unwrap();
        let doc = SpannedDoc::parse(&src).unwrap();
        (proc, doc, src)
    }

    fn codes(steps: &str) -> Vec<(&'static str, String)> {
        let (proc, doc, _) = load(steps);
        check(&proc, &doc)
            .into_iter()
            .map(|d| (d.code, d.message))
            .collect()
    }

    fn only_codes(steps: &str) -> Vec<&'static str> {
        codes(steps).into_iter().map(|(c, _)| c).collect()
    }

    const LINE: &str = r#"
[steps.a]
next = [{ to = "b" }]
[steps.b]
next = [{ to = "a", on = "rework" }, { to = "done" }]
[steps.done]
kind = "end"
"#;

    const PARALLEL: &str = r#"
[steps.a]
next = [{ to = "split" }]
[steps.split]
kind = "parallel"
branches = ["x", "y"]
join = "met"
[steps.x]
next = [{ to = "x2" }]
[steps.x2]
next = [{ to = "met" }]
[steps.y]
next = [{ to = "met" }]
[steps.met]
kind = "join"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;

    #[test]
    fn a_sound_procedure_has_no_graph_problems() {
        assert!(codes(LINE).is_empty(), "{:?}", codes(LINE));
        assert!(codes(PARALLEL).is_empty(), "{:?}", codes(PARALLEL));
    }

    #[test]
    fn successors_follow_the_kind() {
        let (proc, _, _) = load(PARALLEL);
        assert_eq!(successors(&proc.steps["split"]), vec!["x", "y"]);
        assert_eq!(successors(&proc.steps["met"]), vec!["done"]);
        assert!(successors(&proc.steps["done"]).is_empty());
    }

    #[test]
    fn reports_unreachable_steps_at_their_key() {
        let steps = format!("{LINE}\n[steps.orphan]\nnext = [{{ to = \"done\" }}]\n");
        let (proc, doc, src) = load(&steps);
        let diags = check(&proc, &doc);
        assert_eq!(diags.len(), 1, "{diags:?}");
        let d = &diags[0];
        assert_eq!(d.code, "unreachable-step");
        assert!(d.message.contains("`orphan`") && d.message.contains("(`a`)"));
        assert_eq!(&src[d.span.clone().unwrap()], "orphan");
    }

    #[test]
    fn reports_a_loop_without_exit_once_and_leaves_dead_ends_to_the_semantic_pass() {
        let steps = r#"
[steps.a]
next = [{ to = "b" }, { to = "stuck" }, { to = "done" }]
[steps.b]
next = [{ to = "c" }]
[steps.c]
next = [{ to = "b" }]
[steps.stuck]
title = "no way on"
[steps.done]
kind = "end"
"#;
        // `stuck` has no `next`: that is `no-transitions`, from the semantic pass.
        let found = codes(steps);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "loop-without-exit");
        assert_eq!(
            found[0].1,
            "steps `b` → `c` → `b` form a loop with no way out: an instance that enters it can \
             never reach an end step"
        );
        let (proc, _, _) = load(steps);
        let g = Graph::new(&proc);
        let stuck: Vec<&str> = (0..g.len())
            .filter(|&i| g.stuck()[i])
            .map(|i| g.id(i))
            .collect();
        assert_eq!(stuck, vec!["b", "c", "stuck"]);
    }

    #[test]
    fn a_loop_with_an_exit_is_fine_and_steps_before_a_trap_are_not_reported() {
        let steps = r#"
[steps.a]
next = [{ to = "b" }, { to = "done" }]
[steps.b]
next = [{ to = "c" }]
[steps.c]
next = [{ to = "trap" }]
[steps.trap]
next = [{ to = "trap" }]
[steps.done]
kind = "end"
"#;
        let found = codes(steps);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(found[0].0, "loop-without-exit");
        assert!(found[0].1.contains("`trap` only leads back to itself"));
    }

    #[test]
    fn end_steps_with_transitions() {
        let steps = r#"
[steps.a]
next = [{ to = "done" }]
[steps.done]
kind = "end"
next = [{ to = "a" }]
join = "a"
"#;
        let (proc, doc, src) = load(steps);
        let diags = check(&proc, &doc);
        let ends: Vec<_> = diags
            .iter()
            .filter(|d| d.code == "end-has-transitions")
            .collect();
        // `join` on an end step is the semantic pass's `misplaced-key`.
        assert_eq!(ends.len(), 1, "{diags:?}");
        assert_eq!(&src[ends[0].span.clone().unwrap()], "next");
        assert!(only_codes(LINE).is_empty());
    }

    #[test]
    fn branch_escaping_to_an_end_and_outside_entry_into_a_join() {
        let steps = r#"
[steps.a]
next = [{ to = "split" }, { to = "side" }]
[steps.side]
next = [{ to = "met" }]
[steps.split]
kind = "parallel"
branches = ["x", "y"]
join = "met"
[steps.x]
next = [{ to = "met" }, { to = "done", when = "cancelled" }]
[steps.y]
next = [{ to = "met" }]
[steps.met]
kind = "join"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;
        let (proc, doc, src) = load(steps);
        let diags = check(&proc, &doc);
        let msgs: Vec<&str> = diags.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(diags.len(), 2, "{msgs:?}");
        assert!(diags.iter().all(|d| d.code == "join-mismatch"));
        assert!(msgs[0].contains(
            "branch `x` of parallel step `split` can reach the end step `done` without passing \
             the join `met`"
        ));
        assert_eq!(&src[diags[0].span.clone().unwrap()], "\"x\"");
        assert!(msgs[1]
            .contains("step `side` leads into the join `met` but is not in a branch of its parallel step `split`"));
        assert_eq!(&src[diags[1].span.clone().unwrap()], "\"met\"");
    }

    #[test]
    fn an_escape_deep_in_a_branch_shows_its_way_around_the_join() {
        let steps = PARALLEL.replace(
            "[steps.x2]\nnext = [{ to = \"met\" }]",
            "[steps.x2]\nnext = [{ to = \"met\" }, { to = \"a\", on = \"restart\" }]",
        );
        let found = codes(&steps);
        assert_eq!(found.len(), 1, "{found:?}");
        assert_eq!(
            found[0].1,
            "branch `x` of parallel step `split` can reach the start step `a` again without \
             passing the join `met` (by `x` → `x2` → `a`)"
        );
    }

    #[test]
    fn join_must_be_a_join_of_one_parallel_step() {
        let steps = r#"
[steps.a]
next = [{ to = "p1" }]
[steps.p1]
kind = "parallel"
branches = ["x"]
join = "j"
[steps.x]
next = [{ to = "j" }]
[steps.j]
kind = "join"
next = [{ to = "p2" }]
[steps.p2]
kind = "parallel"
branches = ["y"]
join = "j"
[steps.y]
next = [{ to = "k" }]
[steps.k]
next = [{ to = "done" }]
[steps.lonely]
kind = "join"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;
        let found = codes(steps);
        let joins: Vec<&String> = found
            .iter()
            .filter(|(c, _)| *c == "join-mismatch")
            .map(|(_, m)| m)
            .collect();
        assert!(
            joins
                .iter()
                .any(|m| m.contains("already the join of parallel step `p1`")),
            "{joins:?}"
        );
        assert!(joins
            .iter()
            .any(|m| m.contains("join step `lonely` is not the `join` of any")));
        let steps = steps.replace("join = \"j\"\n[steps.x]", "join = \"x\"\n[steps.x]");
        assert!(codes(&steps)
            .iter()
            .any(|(_, m)| m.contains("`x` is not a join step")));
    }

    #[test]
    fn nested_block_structured_parallels_are_fine() {
        let steps = r#"
[steps.a]
next = [{ to = "outer" }]
[steps.outer]
kind = "parallel"
branches = ["inner", "z"]
join = "outer_met"
[steps.inner]
kind = "parallel"
branches = ["x", "y"]
join = "inner_met"
[steps.x]
next = [{ to = "inner_met" }]
[steps.y]
next = [{ to = "inner_met" }]
[steps.inner_met]
kind = "join"
next = [{ to = "outer_met" }]
[steps.z]
next = [{ to = "outer_met" }]
[steps.outer_met]
kind = "join"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;
        assert!(codes(steps).is_empty(), "{:?}", codes(steps));
        let (proc, _, _) = load(steps);
        assert!(can_precede(&proc, "x", "z") && can_precede(&proc, "z", "y"));
        assert!(!can_precede(&proc, "x", "y") || can_precede(&proc, "y", "x"));
    }

    #[test]
    fn separation_needs_a_step_that_can_come_first() {
        let ok = r#"
[steps.a]
next = [{ to = "split" }]
[steps.split]
kind = "parallel"
branches = ["x", "y"]
join = "met"
[steps.x]
next = [{ to = "met" }]
[steps.y]
separation = { not_same_person_as = ["x", "a"] }
next = [{ to = "met" }]
[steps.met]
kind = "join"
next = [{ to = "verify" }]
[steps.verify]
separation = { not_same_person_as = ["x", "verify"] }
next = [{ to = "done" }, { to = "verify", on = "again" }]
[steps.done]
kind = "end"
"#;
        assert!(codes(ok).is_empty(), "{:?}", codes(ok));
        let (proc, _, _) = load(ok);
        assert!(can_precede(&proc, "x", "y") && can_precede(&proc, "y", "x"));
        assert!(can_precede(&proc, "a", "verify") && !can_precede(&proc, "verify", "a"));
        assert!(!can_precede(&proc, "a", "a") && can_precede(&proc, "verify", "verify"));
        assert!(!can_precede(&proc, "nope", "a"));

        let bad = ok.replace("[\"x\", \"verify\"]", "[\"x\", \"missing\"]").replace(
            "[steps.a]\nnext = [{ to = \"split\" }]",
            "[steps.a]\nseparation = { not_same_person_as = [\"verify\"] }\nnext = [{ to = \"split\" }]",
        );
        let (proc, doc, src) = load(&bad);
        let diags = check(&proc, &doc);
        assert_eq!(diags.len(), 1, "{diags:?}");
        assert_eq!(diags[0].code, "separation-order");
        assert_eq!(
            diags[0].message,
            "step `a` must not be done by the person who did `verify`, but `verify` can never \
             happen before `a`"
        );
        assert_eq!(&src[diags[0].span.clone().unwrap()], "\"verify\"");
    }

    #[test]
    fn tolerates_missing_references_and_odd_input() {
        let steps = r#"
[steps.a]
next = [{ to = "nowhere" }]
[steps.p]
kind = "parallel"
branches = ["ghost"]
join = "phantom"
[steps.e]
kind = "end"
"#;
        let found = only_codes(steps);
        // Only `p` and `e` are unreachable; the dangling edges are the reference pass's.
        assert_eq!(found, vec!["unreachable-step", "unreachable-step"]);
        let (mut proc, doc, _) = load(steps);
        proc.start = "missing".into();
        assert!(check(&proc, &doc).is_empty());
        proc.steps.clear();
        assert!(check(&proc, &doc).is_empty());
    }
}
