//! Soundness proof of a procedure by exhaustive exploration of its token game: ignoring data
//! (every guard may be true or false), show that from every reachable state a proper end can
//! still be reached, that no join can wait forever, and that no end step is reached while
//! other branches are still running. When it fails, report the shortest run that shows it.
//!
//! A state is the multiset of tokens (step positions), kept as a sorted `Vec<u16>`. Moves: a
//! token at a task, auto or subprocess step moves to one of its successors; a token at a
//! parallel step becomes one token per branch; a join holding as many tokens as its parallel
//! step has branches replaces them by one token at one of its successors; a token at an end
//! step terminates the instance if it is alone, and is otherwise an improper end (the token
//! is then dropped and the others go on, so a join left waiting is found too).
//!
//! The exploration is bounded: at most [`MAX_STATES`] states, and it stops as soon as a state
//! holds every token of one of its ancestors and more (the run between them can repeat
//! forever, so open work grows without limit). Either way the result is the warning
//! `soundness-unproven`, never a false verdict.
//!
//! This module must not repeat what `graph.rs` already says in other words: it runs only when
//! every reference resolves, and it stays silent about states whose trouble is a step that
//! cannot reach an end at all (a dead end or a loop without exit, which `graph.rs` reports).
//! It must never panic and must stay bounded on any input.

use std::collections::{HashMap, VecDeque};

use super::diagnostic::Diagnostic;
use super::graph::Graph;
use super::model::{Procedure, StepKind};
use super::source::{ptr, SpannedDoc};

/// Most states explored before giving up with `soundness-unproven`.
pub const MAX_STATES: usize = 200_000;

/// Most tokens in one state: a last guard on memory, should growth escape the ancestor test.
const MAX_TOKENS: usize = 4_096;

/// Proves the procedure sound or reports how it is not: at most one each of the errors
/// `unsound-deadlock`, `unsound-improper-end`, `unsound-no-end`, and the warning
/// `soundness-unproven`. Returns nothing when a reference does not resolve.
pub fn check(proc: &Procedure, doc: &SpannedDoc) -> Vec<Diagnostic> {
    check_bounded(proc, doc, MAX_STATES)
}

/// [`check`] with a custom state bound (for tests and tools).
pub fn check_bounded(proc: &Procedure, doc: &SpannedDoc, max_states: usize) -> Vec<Diagnostic> {
    let g = Graph::new(proc);
    let Some(net) = Net::new(&g) else {
        return Vec::new();
    };
    let exploration = explore(&net, max_states);
    diagnose(&g, &net, &exploration, doc)
}

/// The states of the token game a procedure reaches from its start, by step name: an
/// operator's move or a migration must leave an instance in one of them, because from those
/// (the procedure being proven sound) a proper end can always be reached, while an arbitrary
/// placement of work (a branch left without its sibling before a join) may deadlock.
pub struct Markings {
    index: HashMap<String, u16>,
    states: std::collections::HashSet<Vec<u16>>,
    /// False when the exploration stopped at its bound: a state not found may still be
    /// reachable.
    pub complete: bool,
}

impl Markings {
    /// `None` when the procedure's references do not resolve (it would not have loaded).
    pub fn of(proc: &Procedure) -> Option<Markings> {
        let g = Graph::new(proc);
        let net = Net::new(&g)?;
        let ex = explore(&net, MAX_STATES);
        let index = proc
            .steps
            .keys()
            .filter_map(|k| Some((k.clone(), u16::try_from(g.index_of(k)?).ok()?)))
            .collect();
        Some(Markings {
            index,
            states: ex.states.into_iter().collect(),
            complete: !ex.truncated,
        })
    }

    /// Whether work at exactly these steps (a step named twice holds two tokens, as a join
    /// with two branches arrived) is a state the procedure reaches by itself. `Err` names a
    /// step the procedure does not have.
    pub fn contains(&self, tokens: &[&str]) -> Result<bool, String> {
        let mut state = Vec::with_capacity(tokens.len());
        for t in tokens {
            state.push(*self.index.get(*t).ok_or_else(|| (*t).to_string())?);
        }
        state.sort_unstable();
        Ok(self.states.contains(&state))
    }
}

/// One move of the token game.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Move {
    /// A token moves from a task, auto or subprocess step to a successor.
    Step { from: u16, to: u16 },
    /// A parallel step starts its branches.
    Split { at: u16 },
    /// A join has all its branches and moves on.
    Fire { at: u16, to: u16 },
    /// A token reaches an end step while others still run; it is dropped.
    EndEarly { at: u16 },
    /// A token reaches a terminating end step: every other token is withdrawn.
    Terminate { at: u16 },
}

/// The procedure as a token game, with every reference known to resolve.
struct Net {
    kind: Vec<StepKind>,
    succ: Vec<Vec<u16>>,
    /// Branch starts of each parallel step, duplicates kept (each one is a token).
    branches: Vec<Vec<u16>>,
    /// How many tokens each join waits for.
    arity: Vec<usize>,
    /// The parallel step each join belongs to.
    owner: Vec<Option<u16>>,
    /// For a partial join (`wait_for`): the steps of its block, whose tokens it withdraws
    /// when it fires.
    region: Vec<Option<Vec<bool>>>,
    /// End steps with `terminate`.
    terminate: Vec<bool>,
    start: u16,
    /// Steps that cannot reach an end in the plain graph (reported by `graph.rs`).
    stuck: Vec<bool>,
}

impl Net {
    /// `None` when the graph has unresolved references or is too large to index: the
    /// reference pass reports the former, and the latter gets no proof at all.
    fn new(g: &Graph) -> Option<Net> {
        let n = g.len();
        if n >= usize::from(u16::MAX) || g.dangling.iter().any(|d| *d) {
            return None;
        }
        let start = u16::try_from(g.start?).ok()?;
        let to16 = |i: usize| u16::try_from(i).ok();
        let mut kind = Vec::with_capacity(n);
        let mut succ = Vec::with_capacity(n);
        let mut branches = Vec::with_capacity(n);
        for (i, step) in g.steps.iter().enumerate() {
            kind.push(step.kind);
            succ.push(g.succ[i].iter().filter_map(|&j| to16(j)).collect());
            let mut bs = Vec::new();
            if step.kind == StepKind::Parallel {
                for b in &step.branches {
                    bs.push(to16(g.index_of(b)?)?);
                }
            }
            branches.push(bs);
        }
        let mut arity = vec![1; n];
        let mut owner = vec![None; n];
        let mut region = vec![None; n];
        for (p, join) in g.parallels() {
            let Some(name) = g.steps.get(p).and_then(|s| s.join.as_deref()) else {
                continue;
            };
            // A join naming an unknown step is a missing reference.
            let j = join.or_else(|| g.index_of(name))?;
            if owner[j].is_none() && g.kind(j) == Some(StepKind::Join) {
                owner[j] = to16(p);
                arity[j] = branches[p].len().max(1);
                if let Some(w) = g.steps.get(j).and_then(|s| s.wait_for) {
                    let w = usize::try_from(w).unwrap_or(usize::MAX).max(1);
                    arity[j] = arity[j].min(w);
                    let starts: Vec<usize> = g.branches(p).into_iter().map(|(_, b)| b).collect();
                    region[j] = Some(g.reach(&starts, Some(j)));
                }
            }
        }
        let terminate = g.steps.iter().map(|s| s.terminate).collect();
        Some(Net {
            kind,
            succ,
            branches,
            arity,
            owner,
            region,
            terminate,
            start,
            stuck: g.stuck(),
        })
    }

    fn kind(&self, i: u16) -> StepKind {
        self.kind.get(usize::from(i)).copied().unwrap_or_default()
    }

    fn succ(&self, i: u16) -> &[u16] {
        self.succ.get(usize::from(i)).map_or(&[], Vec::as_slice)
    }

    /// Every move possible in `state`, with the state it leads to.
    fn moves(&self, state: &[u16]) -> Vec<(Move, Vec<u16>)> {
        let mut out = Vec::new();
        let mut positions: Vec<u16> = state.to_vec();
        positions.dedup();
        for &t in &positions {
            match self.kind(t) {
                StepKind::Task | StepKind::Auto | StepKind::Subprocess => {
                    for &to in self.succ(t) {
                        out.push((Move::Step { from: t, to }, replace(state, t, 1, &[to])));
                    }
                }
                StepKind::Parallel => {
                    let bs = self
                        .branches
                        .get(usize::from(t))
                        .map_or(&[][..], Vec::as_slice);
                    // Without branches the step is a dead end, which graph.rs reports.
                    if !bs.is_empty() {
                        out.push((Move::Split { at: t }, replace(state, t, 1, bs)));
                    }
                }
                StepKind::Join => {
                    let need = self.arity.get(usize::from(t)).copied().unwrap_or(1);
                    let have = state.iter().filter(|&&s| s == t).count();
                    if have >= need {
                        for &to in self.succ(t) {
                            let next = match self.region.get(usize::from(t)) {
                                Some(Some(region)) => withdraw(state, t, region, to),
                                _ => replace(state, t, need, &[to]),
                            };
                            out.push((Move::Fire { at: t, to }, next));
                        }
                    }
                }
                StepKind::End => {
                    if state.len() > 1 {
                        if self.terminate.get(usize::from(t)).copied().unwrap_or(false) {
                            out.push((Move::Terminate { at: t }, vec![t]));
                        } else {
                            out.push((Move::EndEarly { at: t }, replace(state, t, 1, &[])));
                        }
                    }
                }
            }
        }
        out
    }

    fn is_proper_end(&self, state: &[u16]) -> bool {
        matches!(state, [only] if self.kind(*only) == StepKind::End)
    }

    fn has_stuck_token(&self, state: &[u16]) -> bool {
        state
            .iter()
            .any(|&t| self.stuck.get(usize::from(t)).copied().unwrap_or(false))
    }
}

/// `state` after the partial join `at` fires into `to`: the tokens at the join and every
/// token still inside its block are withdrawn.
fn withdraw(state: &[u16], at: u16, region: &[bool], to: u16) -> Vec<u16> {
    let mut out: Vec<u16> = state
        .iter()
        .copied()
        .filter(|&s| s != at && !region.get(usize::from(s)).copied().unwrap_or(false))
        .collect();
    out.push(to);
    out.sort_unstable();
    out
}

/// `state` with `count` tokens at `at` removed and `add` added, sorted.
fn replace(state: &[u16], at: u16, count: usize, add: &[u16]) -> Vec<u16> {
    let mut out = Vec::with_capacity(state.len() + add.len());
    let mut left = count;
    for &s in state {
        if s == at && left > 0 {
            left -= 1;
        } else {
            out.push(s);
        }
    }
    out.extend_from_slice(add);
    out.sort_unstable();
    out
}

/// The explored state space.
struct Exploration {
    states: Vec<Vec<u16>>,
    /// How each state was first reached (BFS, so along a shortest run).
    parent: Vec<Option<(usize, Move)>>,
    /// Successor states of each explored state.
    edges: Vec<Vec<usize>>,
    /// Whether all moves of each state were followed (false past the bound).
    expanded: Vec<bool>,
    /// The bound was hit: the proof is incomplete.
    truncated: bool,
    /// A state that holds every token of one of its ancestors and more: the run that leads
    /// to it can repeat forever, each time leaving more work open.
    unbounded: Option<usize>,
}

fn explore(net: &Net, max_states: usize) -> Exploration {
    let mut ex = Exploration {
        states: vec![vec![net.start]],
        parent: vec![None],
        edges: vec![Vec::new()],
        expanded: vec![false],
        truncated: false,
        unbounded: None,
    };
    let mut index: HashMap<Vec<u16>, usize> = HashMap::new();
    index.insert(vec![net.start], 0);
    let mut queue = VecDeque::from([0usize]);
    while let Some(s) = queue.pop_front() {
        let Some(state) = ex.states.get(s).cloned() else {
            continue;
        };
        if state.len() > MAX_TOKENS {
            ex.truncated = true;
            continue;
        }
        let mut next = Vec::new();
        let mut complete = true;
        for (mv, succ) in net.moves(&state) {
            let id = match index.get(&succ) {
                Some(&id) => id,
                None => {
                    if ex.states.len() >= max_states {
                        ex.truncated = true;
                        complete = false;
                        continue;
                    }
                    // Only a split adds tokens, so only then can a state outgrow an ancestor.
                    let grows = succ.len() > state.len() && ex.covers_ancestor(s, &succ);
                    let id = ex.states.len();
                    index.insert(succ.clone(), id);
                    ex.states.push(succ);
                    ex.parent.push(Some((s, mv)));
                    ex.edges.push(Vec::new());
                    ex.expanded.push(false);
                    queue.push_back(id);
                    if grows {
                        ex.unbounded = Some(id);
                        ex.truncated = true;
                        complete = false;
                        next.push(id);
                        break;
                    }
                    id
                }
            };
            next.push(id);
        }
        if let Some(e) = ex.edges.get_mut(s) {
            *e = next;
        }
        // A state with moves cut off by the bound is not known to be stuck.
        if let Some(e) = ex.expanded.get_mut(s) {
            *e = complete;
        }
        if ex.unbounded.is_some() {
            break;
        }
    }
    ex
}

/// Whether sorted multiset `small` is contained in sorted multiset `big`.
fn sub_multiset(small: &[u16], big: &[u16]) -> bool {
    let mut it = big.iter();
    small.iter().all(|x| it.any(|y| y == x))
}

impl Exploration {
    /// Whether `state` (about to be reached from `s`) strictly contains `s` or one of its
    /// ancestors on the BFS tree.
    fn covers_ancestor(&self, mut s: usize, state: &[u16]) -> bool {
        loop {
            let Some(a) = self.states.get(s) else {
                return false;
            };
            if a.len() < state.len() && sub_multiset(a, state) {
                return true;
            }
            match self.parent.get(s) {
                Some(Some((p, _))) => s = *p,
                _ => return false,
            }
        }
    }

    fn run(&self, mut s: usize) -> Vec<Move> {
        let mut moves = Vec::new();
        while let Some(Some((p, mv))) = self.parent.get(s) {
            moves.push(*mv);
            s = *p;
        }
        moves.reverse();
        moves
    }

    /// States from which some state in `targets` can be reached.
    fn backward(&self, targets: &[bool]) -> Vec<bool> {
        let n = self.states.len();
        let mut pred: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (s, es) in self.edges.iter().enumerate() {
            for &t in es {
                if let Some(p) = pred.get_mut(t) {
                    p.push(s);
                }
            }
        }
        let mut seen = targets.to_vec();
        let mut queue: VecDeque<usize> = (0..n).filter(|&s| seen[s]).collect();
        while let Some(s) = queue.pop_front() {
            for &p in &pred[s] {
                if !seen[p] {
                    seen[p] = true;
                    queue.push_back(p);
                }
            }
        }
        seen
    }
}

/// The raw findings of an exploration, before they become diagnostics: each is the first
/// (so shortest-run) state showing the problem.
#[derive(Debug, Default, PartialEq)]
struct Findings {
    deadlock: Option<usize>,
    improper_end: Option<usize>,
    /// A state from which no proper end can be reached.
    no_end: Option<usize>,
    /// Same as `no_end`, but only counting states not explained by a deadlock or by a step
    /// `graph.rs` reports: the one worth its own diagnostic.
    livelock: Option<usize>,
    truncated: bool,
}

fn findings(net: &Net, ex: &Exploration) -> Findings {
    let n = ex.states.len();
    let mut f = Findings {
        truncated: ex.truncated,
        ..Findings::default()
    };
    let mut proper = vec![false; n];
    let mut explained = vec![false; n];
    for (s, state) in ex.states.iter().enumerate() {
        proper[s] = net.is_proper_end(state);
        let expanded = ex.expanded.get(s).copied().unwrap_or(false);
        let dead = expanded && !proper[s] && ex.edges.get(s).is_none_or(Vec::is_empty);
        let stuck = net.has_stuck_token(state);
        explained[s] = dead || stuck;
        if dead && !stuck && f.deadlock.is_none() {
            f.deadlock = Some(s);
        }
        if f.improper_end.is_none()
            && state.len() > 1
            && state.iter().any(|&t| {
                net.kind(t) == StepKind::End
                    && !net.terminate.get(usize::from(t)).copied().unwrap_or(false)
            })
        {
            f.improper_end = Some(s);
        }
    }
    // Without the whole state space, "cannot end" is not proven.
    if !ex.truncated {
        let can_end = ex.backward(&proper);
        let explained = ex.backward(&explained);
        f.no_end = (0..n).find(|&s| !can_end[s]);
        f.livelock = (0..n).find(|&s| !can_end[s] && !explained[s]);
    }
    f
}

/// Where the token game went: the steps in the order a person would read them.
fn describe_run(g: &Graph, net: &Net, moves: &[Move]) -> String {
    let name = |i: u16| -> String {
        let id = g.id(usize::from(i));
        match net.kind(i) {
            StepKind::Parallel => format!("{id}(parallel)"),
            _ => id.to_string(),
        }
    };
    let mut items: Vec<String> = vec!["start".to_string(), name(net.start)];
    let mut last = Some(net.start);
    for mv in moves {
        let (from, to) = match *mv {
            Move::Step { from, to } => (from, Some(to)),
            Move::Fire { at, to } => (at, Some(to)),
            Move::Split { at } => (at, None),
            // The end was already named when the token arrived there.
            Move::EndEarly { .. } | Move::Terminate { .. } => continue,
        };
        if last != Some(from) {
            items.push(name(from));
        }
        last = Some(from);
        if let Some(to) = to {
            items.push(name(to));
            last = Some(to);
        }
    }
    // Long runs keep their beginning and the end, where the trouble is.
    const KEEP: usize = 24;
    if items.len() > KEEP {
        let tail = items.split_off(items.len() - (KEEP - 8));
        items.truncate(8);
        items.push("…".to_string());
        items.extend(tail);
    }
    items.join(" → ")
}

/// A token with the branches it descends from (parallel step, branch position) and the steps
/// it went through, to say which branch a join misses and why.
#[derive(Clone)]
struct Tagged {
    at: u16,
    tag: Vec<(u16, usize)>,
    trail: Vec<u16>,
}

/// Replays `moves` keeping track of branches: returns the final tokens and, for tokens that
/// ended early, where they ended.
fn replay(net: &Net, moves: &[Move]) -> (Vec<Tagged>, Vec<Tagged>) {
    let mut tokens = vec![Tagged {
        at: net.start,
        tag: Vec::new(),
        trail: vec![net.start],
    }];
    let mut ended = Vec::new();
    let take = |tokens: &mut Vec<Tagged>, at: u16| -> Option<Tagged> {
        let pos = tokens.iter().position(|t| t.at == at)?;
        Some(tokens.remove(pos))
    };
    for mv in moves {
        match *mv {
            Move::Step { from, to } => {
                if let Some(t) = tokens.iter_mut().find(|t| t.at == from) {
                    t.at = to;
                    t.trail.push(to);
                }
            }
            Move::Split { at } => {
                if let Some(t) = take(&mut tokens, at) {
                    let bs = net
                        .branches
                        .get(usize::from(at))
                        .cloned()
                        .unwrap_or_default();
                    for (pos, b) in bs.into_iter().enumerate() {
                        let mut tag = t.tag.clone();
                        tag.push((at, pos));
                        let mut trail = t.trail.clone();
                        trail.push(b);
                        tokens.push(Tagged { at: b, tag, trail });
                    }
                }
            }
            Move::Fire { at, to } => {
                let need = net.arity.get(usize::from(at)).copied().unwrap_or(1);
                let mut first = None;
                for _ in 0..need {
                    if let Some(t) = take(&mut tokens, at) {
                        first.get_or_insert(t);
                    }
                }
                if let Some(Some(region)) = net.region.get(usize::from(at)) {
                    tokens.retain(|t| {
                        t.at != at && !region.get(usize::from(t.at)).copied().unwrap_or(false)
                    });
                }
                let (mut tag, mut trail) = first.map(|t| (t.tag, t.trail)).unwrap_or_default();
                tag.pop();
                trail.push(to);
                tokens.push(Tagged { at: to, tag, trail });
            }
            Move::Terminate { at } => {
                tokens.retain(|t| t.at == at);
                tokens.truncate(1);
            }
            Move::EndEarly { at } => {
                if let Some(t) = take(&mut tokens, at) {
                    ended.push(t);
                }
            }
        }
    }
    (tokens, ended)
}

fn step_key(g: &Graph, doc: &SpannedDoc, i: u16) -> Option<std::ops::Range<usize>> {
    doc.key_span(&ptr(&["steps", g.id(usize::from(i))]))
}

fn diagnose(g: &Graph, net: &Net, ex: &Exploration, doc: &SpannedDoc) -> Vec<Diagnostic> {
    let f = findings(net, ex);
    let mut out = Vec::new();
    let state = |s: usize| ex.states.get(s).map_or(&[][..], Vec::as_slice);
    let id = |i: u16| g.id(usize::from(i));

    if let Some(s) = f.improper_end {
        let st = state(s);
        let run = describe_run(g, net, &ex.run(s));
        let end = st
            .iter()
            .copied()
            .find(|&t| net.kind(t) == StepKind::End)
            .unwrap_or(net.start);
        let mut others: Vec<String> = st
            .iter()
            .filter(|&&t| t != end)
            .map(|&t| format!("`{}`", id(t)))
            .collect();
        others.dedup();
        out.push(
            Diagnostic::error(
                "unsound-improper-end",
                format!(
                    "the instance can reach the end step `{}` while other work is still open: \
                     after `{run}`, {} {} still running",
                    id(end),
                    others.join(", "),
                    if others.len() == 1 { "is" } else { "are" }
                ),
            )
            .at(step_key(g, doc, end))
            .label("reached too early")
            .help(
                "let every branch of a parallel step lead to its join, and end the procedure \
                 after the join",
            ),
        );
    }

    if let Some(s) = f.deadlock {
        let st = state(s);
        let moves = ex.run(s);
        let run = describe_run(g, net, &moves);
        let waiting = st.iter().copied().find(|&t| {
            net.kind(t) == StepKind::Join
                && st.iter().filter(|&&u| u == t).count()
                    < net.arity.get(usize::from(t)).copied().unwrap_or(1)
        });
        let d = match waiting {
            Some(j) => {
                let (tokens, ended) = replay(net, &moves);
                let owner = net.owner.get(usize::from(j)).copied().flatten();
                let (why, reentered) = owner
                    .map(|p| missing_branches(g, net, p, j, &tokens, &ended))
                    .filter(|(w, _)| !w.is_empty())
                    .unwrap_or_else(|| ("not all of its branches can arrive".to_string(), false));
                let help = match owner.filter(|_| reentered) {
                    Some(p) => format!(
                        "to do part of the parallel work again, lead back to the parallel step \
                         `{}` itself, not into one of its branches",
                        id(p)
                    ),
                    None => "every branch started by a parallel step must arrive at its join: do \
                             not let a branch leave for another part of the procedure"
                        .to_string(),
                };
                Diagnostic::error(
                    "unsound-deadlock",
                    format!(
                        "the join `{}` can wait forever: after `{run}`, {why}",
                        id(j)
                    ),
                )
                .at(step_key(g, doc, j))
                .label("waits forever")
                .help(help)
            }
            None => {
                let at = st.first().copied().unwrap_or(net.start);
                Diagnostic::error(
                    "unsound-deadlock",
                    format!("the procedure can get stuck: after `{run}`, no step can go on"),
                )
                .at(step_key(g, doc, at))
                .label("stuck here")
                .help("every step on the way must be able to go on to an end step")
            }
        };
        out.push(d);
    }

    if f.deadlock.is_none() && f.improper_end.is_none() {
        if let Some(s) = f.livelock {
            let st = state(s);
            let run = describe_run(g, net, &ex.run(s));
            let at = st
                .iter()
                .copied()
                .find(|&t| net.kind(t) == StepKind::Join)
                .or_else(|| st.first().copied())
                .unwrap_or(net.start);
            let open: Vec<String> = st.iter().map(|&t| format!("`{}`", id(t))).collect();
            out.push(
                Diagnostic::error(
                    "unsound-no-end",
                    format!(
                        "after `{run}` the procedure can never end: with work open at {}, every \
                         way on keeps it running without reaching an end step",
                        open.join(", ")
                    ),
                )
                .at(step_key(g, doc, at))
                .label("no end reachable from here")
                .help("make sure every branch can reach its join and every loop has a way out"),
            );
        }
    }

    if let Some(s) = ex.unbounded {
        let moves = ex.run(s);
        let run = describe_run(g, net, &moves);
        let split = moves
            .iter()
            .rev()
            .find_map(|m| match m {
                Move::Split { at } => Some(*at),
                _ => None,
            })
            .unwrap_or(net.start);
        out.push(
            Diagnostic::warning(
                "soundness-unproven",
                format!(
                    "the parallel step `{}` can start its branches again and again while earlier \
                     ones are still open (after `{run}`), so open work can grow without limit \
                     and the procedure cannot be checked to the end",
                    id(split)
                ),
            )
            .at(step_key(g, doc, split))
            .label("starts more work each time round")
            .help("lead each branch to the join before anything loops back to this parallel step"),
        );
    } else if f.truncated {
        out.push(
            Diagnostic::warning(
                "soundness-unproven",
                format!(
                    "the procedure is too large to check exhaustively (more than {} \
                     combinations of open steps); it may still be correct, but it was not proven \
                     that every instance can finish",
                    thousands(ex.states.len())
                ),
            )
            .at(doc.value_span(&ptr(&["start"])))
            .help("split the procedure into child procedures, or use fewer parallel branches"),
        );
    }
    out
}

/// `200000` as `200,000`.
fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Why join `j` of parallel step `p` lacks branches: which branch was entered from outside
/// (without `p` starting the others), and which never arrive and where they went instead.
/// The flag says whether a branch was entered from outside.
fn missing_branches(
    g: &Graph,
    net: &Net,
    p: u16,
    j: u16,
    tokens: &[Tagged],
    ended: &[Tagged],
) -> (String, bool) {
    let names = g
        .steps
        .get(usize::from(p))
        .map_or(&[][..], |s| s.branches.as_slice());
    let starts = net
        .branches
        .get(usize::from(p))
        .map_or(&[][..], Vec::as_slice);
    let pid = g.id(usize::from(p));
    let name = |pos: usize| names.get(pos).map_or("?", String::as_str);
    let in_branch = |t: &Tagged, pos: usize| t.tag.contains(&(p, pos));

    let mut seated = vec![false; names.len()];
    for t in tokens.iter().filter(|t| t.at == j) {
        if let Some(&(_, pos)) = t.tag.last().filter(|(q, _)| *q == p) {
            if let Some(seat) = seated.get_mut(pos) {
                *seat = true;
            }
        }
    }
    // Tokens at the join that `p` did not start came into a branch from elsewhere (a loop
    // back into the branch): name the branch they went through.
    let mut foreign = Vec::new();
    for t in tokens
        .iter()
        .filter(|t| t.at == j && t.tag.last().is_none_or(|(q, _)| *q != p))
    {
        let pos = t
            .trail
            .iter()
            .rev()
            .find_map(|s| starts.iter().position(|b| b == s));
        match pos {
            Some(pos) if !seated.get(pos).copied().unwrap_or(true) => {
                if let Some(seat) = seated.get_mut(pos) {
                    *seat = true;
                }
                foreign.push(format!(
                    "branch `{}` is entered again without passing the parallel step `{pid}`",
                    name(pos)
                ));
            }
            Some(_) => {}
            None => {
                // Straight into the join: the step it came from is the one to name.
                let from = t
                    .trail
                    .iter()
                    .rev()
                    .nth(1)
                    .map_or(pid, |&s| g.id(usize::from(s)));
                foreign.push(format!(
                    "`{from}` leads into it without passing the parallel step `{pid}`"
                ));
            }
        }
    }
    let mut missing = Vec::new();
    for pos in (0..names.len()).filter(|&pos| !seated[pos]) {
        let tail = if let Some(t) = tokens.iter().find(|t| t.at != j && in_branch(t, pos)) {
            format!(" (it is stuck at `{}`)", g.id(usize::from(t.at)))
        } else if let Some(t) = ended.iter().find(|t| in_branch(t, pos)) {
            format!(" (it ended at `{}`)", g.id(usize::from(t.at)))
        } else {
            String::new()
        };
        missing.push(format!("branch `{}` never arrives{tail}", name(pos)));
    }
    let why = match (foreign.is_empty(), missing.is_empty()) {
        (_, true) => String::new(),
        (true, false) => missing.join("; "),
        (false, false) => format!("{}, so {}", foreign.join(" and "), missing.join(" and ")),
    };
    (why, !foreign.is_empty())
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

    #[test]
    fn markings_are_the_states_the_procedure_reaches_by_itself() {
        let (proc, _, _) = load(
            r#"
[steps.a]
next = [{ to = "split" }]
[steps.split]
kind = "parallel"
branches = ["x", "y"]
join = "joined"
[steps.x]
next = [{ to = "joined" }]
[steps.y]
next = [{ to = "joined" }]
[steps.joined]
kind = "join"
next = [{ to = "z" }]
[steps.z]
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#,
        );
        let m = Markings::of(&proc).unwrap();
        assert!(m.complete);
        assert_eq!(m.contains(&["a"]), Ok(true));
        assert_eq!(m.contains(&["x", "y"]), Ok(true));
        // One branch done and waiting at the join while the other works.
        assert_eq!(m.contains(&["joined", "y"]), Ok(true));
        assert_eq!(m.contains(&["z"]), Ok(true));
        // A branch without its sibling could never pass the join; two at `z` never happen.
        assert_eq!(m.contains(&["x"]), Ok(false));
        assert_eq!(m.contains(&["z", "z"]), Ok(false));
        assert_eq!(m.contains(&["x", "z"]), Ok(false));
        assert_eq!(m.contains(&["nope"]), Err("nope".to_string()));
    }

    fn raw(steps: &str) -> Findings {
        let (proc, _, _) = load(steps);
        let g = Graph::new(&proc);
        let net = Net::new(&g).unwrap();
        findings(&net, &explore(&net, MAX_STATES))
    }

    fn diags(steps: &str) -> Vec<Diagnostic> {
        let (proc, doc, _) = load(steps);
        check(&proc, &doc)
    }

    const SOUND_LOOP: &str = r#"
[steps.a]
next = [{ to = "b" }]
[steps.b]
outcomes = ["ok", "rework"]
next = [{ to = "a", on = "rework" }, { to = "done" }]
[steps.done]
kind = "end"
"#;

    const ESCAPING_BRANCH: &str = r#"
[steps.a]
next = [{ to = "assess" }]
[steps.assess]
kind = "parallel"
branches = ["engineering", "office"]
join = "assessed"
[steps.engineering]
next = [{ to = "assessed" }, { to = "closed", when = "withdrawn" }]
[steps.office]
next = [{ to = "assessed" }]
[steps.assessed]
kind = "join"
next = [{ to = "closed" }]
[steps.closed]
kind = "end"
"#;

    #[test]
    fn a_terminating_end_reached_from_a_branch_is_a_proper_end() {
        let terminating = ESCAPING_BRANCH.replace(
            "[steps.closed]\nkind = \"end\"",
            "[steps.closed]\nkind = \"end\"\nterminate = true",
        );
        assert_ne!(terminating, ESCAPING_BRANCH);
        assert_eq!(raw(&terminating), Findings::default());
        assert!(diags(&terminating).is_empty());
    }

    #[test]
    fn a_partial_join_does_not_wait_for_the_withdrawn_branches() {
        // The office branch may loop for ever on its own; with `wait_for = 1` the join goes on
        // after engineering and withdraws it, so every run still ends.
        let steps = r#"
[steps.a]
next = [{ to = "assess" }]
[steps.assess]
kind = "parallel"
branches = ["engineering", "office", "quality"]
join = "assessed"
[steps.engineering]
next = [{ to = "assessed" }]
[steps.office]
next = [{ to = "office_again" }]
[steps.office_again]
next = [{ to = "office" }, { to = "assessed" }]
[steps.quality]
next = [{ to = "assessed" }]
[steps.assessed]
kind = "join"
wait_for = 1
next = [{ to = "closed" }]
[steps.closed]
kind = "end"
"#;
        assert_eq!(raw(steps), Findings::default());
        // The join leaves nothing behind: the end is reached with no token beside it.
        let whole = steps.replace("wait_for = 1\n", "");
        assert_eq!(
            raw(&whole),
            Findings::default(),
            "sound when waiting for all too"
        );
        // A join waiting for two of three, where one branch can escape to the end: still an
        // improper end, the partial join does not hide it.
        let escaping = steps.replace("wait_for = 1", "wait_for = 2").replace(
            "[steps.quality]\nnext = [{ to = \"assessed\" }]",
            "[steps.quality]\nnext = [{ to = \"assessed\" }, { to = \"closed\" }]",
        );
        assert!(raw(&escaping).improper_end.is_some());
    }

    #[test]
    fn a_loop_with_an_exit_is_sound() {
        assert_eq!(raw(SOUND_LOOP), Findings::default());
        assert!(diags(SOUND_LOOP).is_empty());
    }

    #[test]
    fn a_loop_without_exit_is_found_but_left_to_the_graph_check() {
        let steps = r#"
[steps.a]
next = [{ to = "b" }, { to = "done" }]
[steps.b]
next = [{ to = "c" }]
[steps.c]
next = [{ to = "b" }]
[steps.done]
kind = "end"
"#;
        let f = raw(steps);
        assert!(f.no_end.is_some());
        assert_eq!((f.deadlock, f.improper_end, f.livelock), (None, None, None));
        // graph.rs says `loop-without-exit`; saying it again here would only repeat it.
        assert!(diags(steps).is_empty());
    }

    #[test]
    fn a_branch_escaping_to_an_end_is_an_improper_end_and_a_deadlock() {
        let (proc, doc, src) = load(ESCAPING_BRANCH);
        let ds = check(&proc, &doc);
        assert_eq!(ds.len(), 2, "{ds:#?}");
        let improper = &ds[0];
        assert_eq!(improper.code, "unsound-improper-end");
        assert_eq!(
            improper.message,
            "the instance can reach the end step `closed` while other work is still open: after \
             `start → a → assess(parallel) → engineering → closed`, `office` is still running"
        );
        assert_eq!(&src[improper.span.clone().unwrap()], "closed");
        let deadlock = &ds[1];
        assert_eq!(deadlock.code, "unsound-deadlock");
        assert_eq!(
            deadlock.message,
            "the join `assessed` can wait forever: after `start → a → assess(parallel) → \
             engineering → closed → office → assessed`, branch `engineering` never arrives (it \
             ended at `closed`)"
        );
        assert_eq!(&src[deadlock.span.clone().unwrap()], "assessed");
    }

    #[test]
    fn an_end_reached_beside_a_running_branch_without_deadlock_is_an_improper_end() {
        // Both branches end on their own: the join is never used, nothing waits, but the
        // first end is reached while the other branch still runs.
        let steps = r#"
[steps.a]
next = [{ to = "p" }]
[steps.p]
kind = "parallel"
branches = ["x", "y"]
join = "j"
[steps.x]
next = [{ to = "done" }]
[steps.y]
next = [{ to = "done" }]
[steps.j]
kind = "join"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;
        let f = raw(steps);
        assert!(f.improper_end.is_some());
        assert_eq!((f.deadlock, f.no_end), (None, None));
        let ds = diags(steps);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(ds[0].code, "unsound-improper-end");
    }

    #[test]
    fn nested_parallel_blocks_with_loops_are_sound() {
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
next = [{ to = "inner_met" }, { to = "x", on = "again" }]
[steps.y]
next = [{ to = "inner_met" }]
[steps.inner_met]
kind = "join"
next = [{ to = "outer_met" }, { to = "inner", on = "redo" }]
[steps.z]
next = [{ to = "outer_met" }]
[steps.outer_met]
kind = "join"
next = [{ to = "done" }, { to = "a", on = "restart" }]
[steps.done]
kind = "end"
"#;
        assert_eq!(raw(steps), Findings::default());
        assert!(diags(steps).is_empty());
    }

    #[test]
    fn a_join_fed_by_a_non_branch_deadlocks() {
        // `y` may leave for another parallel block and finish there: `j` then waits for it.
        let steps = r#"
[steps.a]
next = [{ to = "p" }]
[steps.p]
kind = "parallel"
branches = ["x", "y"]
join = "j"
[steps.x]
next = [{ to = "j" }]
[steps.y]
next = [{ to = "j" }, { to = "q" }]
[steps.j]
kind = "join"
next = [{ to = "done" }]
[steps.q]
kind = "parallel"
branches = ["r"]
join = "k"
[steps.r]
next = [{ to = "k" }]
[steps.k]
kind = "join"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;
        let ds = diags(steps);
        let dl: Vec<_> = ds.iter().filter(|d| d.code == "unsound-deadlock").collect();
        assert_eq!(dl.len(), 1, "{ds:#?}");
        assert!(
            dl[0].message.contains("branch `y` never arrives"),
            "{}",
            dl[0].message
        );
    }

    #[test]
    fn re_entering_a_branch_from_outside_deadlocks_the_join() {
        let steps = r#"
[steps.a]
next = [{ to = "assess" }]
[steps.assess]
kind = "parallel"
branches = ["hazard", "losses"]
join = "assessed"
[steps.hazard]
next = [{ to = "assessed" }]
[steps.losses]
next = [{ to = "assessed" }]
[steps.assessed]
kind = "join"
next = [{ to = "decide" }]
[steps.decide]
outcomes = ["close", "reassess"]
next = [{ to = "closed", on = "close" }, { to = "hazard", on = "reassess" }]
[steps.closed]
kind = "end"
"#;
        let ds = diags(steps);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(ds[0].code, "unsound-deadlock");
        assert_eq!(
            ds[0].message,
            "the join `assessed` can wait forever: after `start → a → assess(parallel) → hazard → \
             assessed → losses → assessed → decide → hazard → assessed`, branch `hazard` is \
             entered again without passing the parallel step `assess`, so branch `losses` never \
             arrives"
        );
        assert!(ds[0]
            .help
            .as_deref()
            .unwrap_or("")
            .contains("`assess` itself"));
    }

    #[test]
    fn too_many_states_is_a_warning_not_a_verdict() {
        let (proc, doc, _) = load(ESCAPING_BRANCH);
        let ds = check_bounded(&proc, &doc, 3);
        assert_eq!(ds.len(), 1, "{ds:#?}");
        assert_eq!(ds[0].code, "soundness-unproven");
        assert!(
            ds[0].message.contains("more than 3 combinations"),
            "{}",
            ds[0].message
        );
        assert_eq!(thousands(200_000), "200,000");
        assert_eq!(thousands(999), "999");
        assert!(!ds[0].is_error());
        // A parallel step inside a loop without a join firing grows without bound.
        let steps = r#"
[steps.a]
next = [{ to = "p" }]
[steps.p]
kind = "parallel"
branches = ["a", "x"]
join = "j"
[steps.x]
next = [{ to = "j" }]
[steps.j]
kind = "join"
next = [{ to = "done" }]
[steps.done]
kind = "end"
"#;
        let (proc, doc, src) = load(steps);
        let ds = check_bounded(&proc, &doc, MAX_STATES);
        let unproven: Vec<_> = ds
            .iter()
            .filter(|d| d.code == "soundness-unproven")
            .collect();
        assert_eq!(unproven.len(), 1, "{ds:#?}");
        assert_eq!(
            unproven[0].message,
            "the parallel step `p` can start its branches again and again while earlier ones are \
             still open (after `start → a → p(parallel)`), so open work can grow without limit \
             and the procedure cannot be checked to the end"
        );
        assert_eq!(&src[unproven[0].span.clone().unwrap()], "p");
        assert!(sub_multiset(&[1, 3, 3], &[0, 1, 2, 3, 3]));
        assert!(!sub_multiset(&[1, 3, 3], &[1, 2, 3]));
    }

    proptest::proptest! {
        /// Any graph at all — wrong kinds, dangling names, joins of nobody — is checked,
        /// proven and drawn without a panic and within the bound.
        #[test]
        fn never_panics_on_any_graph(
            steps in proptest::collection::vec(
                (0u8..6, proptest::collection::vec(0u8..9, 0..4), proptest::option::of(0u8..9)),
                1..8,
            ),
            start in 0u8..9,
        ) {
            let name = |i: u8| if usize::from(i) < steps.len() { format!("s{i}") } else { "ghost".into() };
            let kinds = ["task", "auto", "parallel", "join", "subprocess", "end"];
            let mut src = format!(
                "id = \"p\"\nversion = 1\ntitle = \"P\"\nstart = \"{}\"\n",
                name(start)
            );
            for (i, (kind, targets, join)) in steps.iter().enumerate() {
                let kind = kinds[usize::from(*kind) % kinds.len()];
                src.push_str(&format!("[steps.s{i}]\nkind = \"{kind}\"\n"));
                let list: Vec<String> = targets.iter().map(|&t| format!("\"{}\"", name(t))).collect();
                if kind == "parallel" {
                    src.push_str(&format!("branches = [{}]\n", list.join(", ")));
                } else {
                    let next: Vec<String> = list.iter().map(|t| format!("{{ to = {t} }}")).collect();
                    src.push_str(&format!("next = [{}]\n", next.join(", ")));
                }
                if let Some(j) = join {
                    src.push_str(&format!("join = \"{}\"\n", name(*j)));
                }
            }
            let proc: Procedure = toml::from_str(&src).unwrap();
            let doc = SpannedDoc::parse(&src).unwrap();
            let _ = super::super::graph::check(&proc, &doc);
            let _ = check_bounded(&proc, &doc, 5_000);
            let _ = super::super::render::mermaid(&proc);
            let _ = super::super::render::dot(&proc);
        }
    }

    #[test]
    fn skips_procedures_with_missing_references() {
        let steps = r#"
[steps.a]
next = [{ to = "nowhere" }]
[steps.done]
kind = "end"
"#;
        assert!(diags(steps).is_empty());
        let (mut proc, doc, _) = load(SOUND_LOOP);
        proc.start = "missing".into();
        assert!(check(&proc, &doc).is_empty());
        proc.steps.clear();
        assert!(check(&proc, &doc).is_empty());
    }
}
