//! Which titles a fill pass may delete. Deleting content is the one fill action that can lose
//! data, so it takes three independent agreements:
//!
//! 1. **The plan lists the title as removable** ([`FillPlan::removals`]), naming where other
//!    copies are. A held title that is neither planned nor listed is kept: a plan computed from
//!    a half-loaded catalog, a restored database or a planner bug can leave titles out, but it
//!    cannot order their deletion by omission.
//! 2. **The removal has stood for a while:** the title has been listed in at least
//!    [`RemovalPolicy::min_plans`] consecutive plans and for at least [`RemovalPolicy::grace`].
//!    A transient plan is outlived; a title planned again in between starts over.
//! 3. **The plan is not suspect:** a plan that lists more than [`RemovalPolicy::max_share`] of
//!    the held titles for removal (and more than one) has all its removals refused, logged and
//!    counted; an operator who means it raises the share.
//!
//! [`RemovalMode::Never`] (what an origin appliance runs with) deletes nothing on a plan at all.
//! Partial downloads of a title that left the plan are not content anyone can be served, but
//! they wait out the same grace period so a transient plan does not throw away a resume.
//!
//! [`RemovalTracker`] is pure: time is an argument, the file system is the caller's.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::{Duration, Instant};

use protocol::fill::FillPlan;

/// Whether plans may delete content on this appliance at all.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RemovalMode {
    /// Titles the plan lists as removable are deleted once [`RemovalPolicy`] allows.
    Plan,
    /// Nothing is ever deleted on a plan (origin appliances; an operator freezing a cache).
    Never,
}

impl std::str::FromStr for RemovalMode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "plan" => Ok(RemovalMode::Plan),
            "never" => Ok(RemovalMode::Never),
            other => Err(format!("{other:?}: expected \"plan\" or \"never\"")),
        }
    }
}

impl std::fmt::Display for RemovalMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RemovalMode::Plan => "plan",
            RemovalMode::Never => "never",
        })
    }
}

/// How cautiously plans delete content.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RemovalPolicy {
    /// Whether plans may delete at all.
    pub mode: RemovalMode,
    /// Least time a title must have been listed as removable before it is deleted.
    pub grace: Duration,
    /// Least number of consecutive plans (by `plan_id` and `generated_at`) that must list it.
    pub min_plans: u32,
    /// Largest share of the held titles one plan may remove (0..=1); a plan over it is suspect.
    pub max_share: f64,
}

impl Default for RemovalPolicy {
    fn default() -> Self {
        RemovalPolicy {
            mode: RemovalMode::Plan,
            grace: Duration::from_secs(3600),
            min_plans: 3,
            max_share: 0.5,
        }
    }
}

impl RemovalPolicy {
    /// Removals as soon as a plan lists them (tests and demos; never a production default).
    pub fn immediate() -> Self {
        RemovalPolicy {
            grace: Duration::ZERO,
            min_plans: 1,
            ..RemovalPolicy::default()
        }
    }

    /// Most removals one plan may make among `held` titles before it is suspect.
    pub fn max_removals(&self, held: usize) -> usize {
        let share = self.max_share.clamp(0.0, 1.0);
        ((held as f64 * share).floor() as usize).max(1)
    }
}

/// Why a held title that the plan left out is still on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeptBecause {
    /// The plan does not list it as removable.
    NotListed,
    /// Listed, but not yet for long enough.
    Grace,
    /// The plan listed too many removals.
    SuspectPlan,
    /// [`RemovalMode::Never`].
    RemovalsOff,
}

impl KeptBecause {
    /// For logs.
    pub fn as_str(self) -> &'static str {
        match self {
            KeptBecause::NotListed => "not planned, not listed as removable",
            KeptBecause::Grace => "listed as removable, grace period running",
            KeptBecause::SuspectPlan => "the plan's removals were refused as suspect",
            KeptBecause::RemovalsOff => "removals are off on this appliance",
        }
    }
}

/// What one pass may delete.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// Held titles to delete now.
    pub remove: Vec<String>,
    /// Titles whose partial downloads may be deleted now.
    pub drop_partials: Vec<String>,
    /// Held titles left out of the plan and kept, with why.
    pub kept: BTreeMap<String, KeptBecause>,
    /// Set when the plan's removals were refused: the message to log.
    pub suspect: Option<String>,
    /// Whether this was the first pass over this plan (log and count once per plan).
    pub new_plan: bool,
}

#[derive(Debug, Clone, Copy)]
struct Candidate {
    since: Instant,
    plans: u32,
}

/// Candidates for deletion across passes and plans.
#[derive(Debug, Default)]
pub struct RemovalTracker {
    held: HashMap<String, Candidate>,
    partial: HashMap<String, Candidate>,
    last_plan: Option<(String, u64)>,
}

fn track(
    map: &mut HashMap<String, Candidate>,
    now_candidates: &BTreeSet<&str>,
    new_plan: bool,
    now: Instant,
) {
    map.retain(|t, _| now_candidates.contains(t.as_str()));
    for t in now_candidates {
        match map.get_mut(*t) {
            Some(c) if new_plan => c.plans = c.plans.saturating_add(1),
            Some(_) => {}
            None => {
                map.insert(
                    (*t).to_owned(),
                    Candidate {
                        since: now,
                        plans: 1,
                    },
                );
            }
        }
    }
}

impl RemovalTracker {
    /// Decides, for one pass over `plan` at `now`, which of the `held` titles (complete, served)
    /// and of the `partial` titles (downloads or files not yet complete) may be deleted.
    pub fn decide(
        &mut self,
        policy: &RemovalPolicy,
        plan: &FillPlan,
        held: &BTreeSet<String>,
        partial: &BTreeSet<String>,
        now: Instant,
    ) -> Verdict {
        let id = (plan.plan_id.clone(), plan.generated_at);
        let new_plan = self.last_plan.as_ref() != Some(&id);
        self.last_plan = Some(id);
        let planned: BTreeSet<&str> = plan.titles.iter().map(|t| t.title.as_str()).collect();
        let listed: BTreeSet<&str> = plan.removals.iter().map(|r| r.title.as_str()).collect();
        let unplanned: Vec<&str> = held
            .iter()
            .map(String::as_str)
            .filter(|t| !planned.contains(t))
            .collect();
        let mut v = Verdict {
            new_plan,
            ..Verdict::default()
        };

        let mut held_candidates: BTreeSet<&str> = BTreeSet::new();
        let listed_held = unplanned.iter().filter(|t| listed.contains(*t)).count();
        let max = policy.max_removals(held.len());
        if policy.mode == RemovalMode::Plan && listed_held > max {
            v.suspect = Some(format!(
                "plan {} lists {listed_held} of the {} held titles for removal (more than {:.0}% \
                 allows: {max}); every removal of this plan is refused",
                plan.plan_id,
                held.len(),
                policy.max_share * 100.0
            ));
        } else if policy.mode == RemovalMode::Plan {
            held_candidates = unplanned
                .iter()
                .copied()
                .filter(|t| listed.contains(t))
                .collect();
        }
        track(&mut self.held, &held_candidates, new_plan, now);
        let due = |c: &Candidate| {
            now.saturating_duration_since(c.since) >= policy.grace && c.plans >= policy.min_plans
        };
        for t in unplanned {
            let why = if policy.mode == RemovalMode::Never {
                KeptBecause::RemovalsOff
            } else if !listed.contains(t) {
                KeptBecause::NotListed
            } else if v.suspect.is_some() {
                KeptBecause::SuspectPlan
            } else if self.held.get(t).is_some_and(due) {
                v.remove.push(t.to_owned());
                continue;
            } else {
                KeptBecause::Grace
            };
            v.kept.insert(t.to_owned(), why);
        }

        let partial_candidates: BTreeSet<&str> = partial
            .iter()
            .map(String::as_str)
            .filter(|t| !planned.contains(t) && !held.contains(*t))
            .collect();
        track(&mut self.partial, &partial_candidates, new_plan, now);
        v.drop_partials = partial_candidates
            .iter()
            .filter(|t| self.partial.get(**t).is_some_and(due))
            .map(|t| (*t).to_owned())
            .collect();
        for t in v.remove.iter().chain(&v.drop_partials) {
            self.held.remove(t);
            self.partial.remove(t);
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use protocol::fill::{PlannedTitle, Removal};

    use super::*;

    fn plan(id: &str, at: u64, planned: &[&str], removable: &[&str]) -> FillPlan {
        FillPlan {
            appliance: "a".into(),
            cluster: "c".into(),
            plan_id: id.into(),
            generated_at: at,
            refresh_secs: 60,
            titles: planned
                .iter()
                .map(|t| PlannedTitle {
                    title: (*t).into(),
                    catalog_sha256: "0".repeat(64),
                    bytes: 1,
                    urgent: false,
                    reason: "r".into(),
                    sources: vec![],
                })
                .collect(),
            removals: removable
                .iter()
                .map(|t| Removal {
                    title: (*t).into(),
                    reason: "displaced".into(),
                    kept_at: vec!["peer".into()],
                })
                .collect(),
        }
    }

    fn set(v: &[&str]) -> BTreeSet<String> {
        v.iter().map(|s| (*s).to_owned()).collect()
    }

    const HELD: &[&str] = &["t0", "t1", "t2", "t3", "t4", "t5", "t6", "t7", "t8", "t9"];

    #[test]
    fn an_empty_plan_deletes_nothing() {
        let p = RemovalPolicy::immediate();
        let mut tr = RemovalTracker::default();
        let v = tr.decide(
            &p,
            &plan("p", 1, &[], &[]),
            &set(HELD),
            &BTreeSet::new(),
            Instant::now(),
        );
        assert!(v.remove.is_empty() && v.suspect.is_none(), "{v:?}");
        assert_eq!(v.kept.len(), 10);
        assert!(v.kept.values().all(|k| *k == KeptBecause::NotListed));
    }

    #[test]
    fn a_plan_removing_ninety_percent_is_refused_as_suspect() {
        let p = RemovalPolicy::immediate();
        let mut tr = RemovalTracker::default();
        let v = tr.decide(
            &p,
            &plan("p", 1, &["t0"], &HELD[1..]),
            &set(HELD),
            &BTreeSet::new(),
            Instant::now(),
        );
        assert!(v.remove.is_empty(), "{v:?}");
        assert!(
            v.suspect.as_deref().unwrap().contains("9 of the 10"),
            "{v:?}"
        );
        assert!(v.kept.values().all(|k| *k == KeptBecause::SuspectPlan));
        // Half of ten is allowed.
        let v = tr.decide(
            &p,
            &plan("q", 2, &HELD[..5], &HELD[5..]),
            &set(HELD),
            &BTreeSet::new(),
            Instant::now(),
        );
        assert_eq!(v.remove, HELD[5..].to_vec(), "{v:?}");
        assert!(v.suspect.is_none());
    }

    #[test]
    fn removals_wait_for_the_grace_period_and_consecutive_plans() {
        let p = RemovalPolicy {
            grace: Duration::from_secs(600),
            min_plans: 3,
            ..RemovalPolicy::default()
        };
        let held = set(&["keep", "gone"]);
        let t0 = Instant::now();
        let mut tr = RemovalTracker::default();
        let step = |tr: &mut RemovalTracker, id: &str, at: u64, secs: u64| {
            tr.decide(
                &p,
                &plan(id, at, &["keep"], &["gone"]),
                &held,
                &BTreeSet::new(),
                t0 + Duration::from_secs(secs),
            )
        };
        assert_eq!(step(&mut tr, "p", 1, 0).kept["gone"], KeptBecause::Grace);
        // Passes over the same plan do not count as plans.
        assert!(step(&mut tr, "p", 1, 700).remove.is_empty());
        assert!(step(&mut tr, "p", 2, 700).remove.is_empty());
        assert_eq!(step(&mut tr, "p", 3, 700).remove, vec!["gone".to_string()]);

        // Planned again in between: the count starts over.
        let mut tr = RemovalTracker::default();
        step(&mut tr, "p", 1, 0);
        step(&mut tr, "p", 2, 10);
        let back = plan("r", 3, &["keep", "gone"], &[]);
        assert!(tr
            .decide(
                &p,
                &back,
                &held,
                &BTreeSet::new(),
                t0 + Duration::from_secs(20)
            )
            .kept
            .is_empty());
        assert!(step(&mut tr, "p", 4, 700).remove.is_empty());
        assert!(step(&mut tr, "p", 5, 1300).remove.is_empty());
        assert_eq!(step(&mut tr, "p", 6, 1400).remove, vec!["gone".to_string()]);
    }

    #[test]
    fn never_mode_keeps_everything() {
        let p = RemovalPolicy {
            mode: RemovalMode::Never,
            ..RemovalPolicy::immediate()
        };
        let mut tr = RemovalTracker::default();
        let v = tr.decide(
            &p,
            &plan("p", 1, &[], &["t0"]),
            &set(&["t0"]),
            &BTreeSet::new(),
            Instant::now(),
        );
        assert!(v.remove.is_empty() && v.suspect.is_none());
        assert_eq!(v.kept["t0"], KeptBecause::RemovalsOff);
    }

    #[test]
    fn one_title_of_one_may_go_and_partials_wait_out_the_grace_period() {
        let p = RemovalPolicy::immediate();
        let mut tr = RemovalTracker::default();
        let v = tr.decide(
            &p,
            &plan("p", 1, &[], &["only"]),
            &set(&["only"]),
            &set(&["half"]),
            Instant::now(),
        );
        assert_eq!(v.remove, vec!["only".to_string()]);
        assert_eq!(v.drop_partials, vec!["half".to_string()]);

        let p = RemovalPolicy {
            grace: Duration::from_secs(60),
            min_plans: 1,
            ..RemovalPolicy::default()
        };
        let mut tr = RemovalTracker::default();
        let t0 = Instant::now();
        let empty = BTreeSet::new();
        let half = set(&["half"]);
        assert!(tr
            .decide(&p, &plan("p", 1, &[], &[]), &empty, &half, t0)
            .drop_partials
            .is_empty());
        let later = t0 + Duration::from_secs(61);
        assert_eq!(
            tr.decide(&p, &plan("p", 1, &[], &[]), &empty, &half, later)
                .drop_partials,
            vec!["half".to_string()]
        );
    }
}
