//! Unit tests of the pure planner.

use std::collections::HashSet;

use super::*;
use crate::steering::{AdminState, Appliance, Cluster, ClusterKind, Fleet, MissClass, Thresholds};

const GB: u64 = 1 << 30;

fn appliances(n: usize, cap: u64) -> Vec<ApplianceInput> {
    (0..n)
        .map(|i| ApplianceInput {
            id: format!("oca-{i}"),
            capacity_bytes: cap,
        })
        .collect()
}

/// Zipf-like popularity: title i has 1000 / (i + 1) views.
fn titles(n: usize, bytes: u64) -> Vec<TitleInput> {
    (0..n)
        .map(|i| TitleInput {
            id: format!("t{i:04}"),
            bytes,
            popularity: 1000.0 / (i + 1) as f64,
            urgent: None,
        })
        .collect()
}

fn input(apps: Vec<ApplianceInput>, titles: Vec<TitleInput>) -> ClusterInput {
    ClusterInput {
        cluster: "isp".into(),
        appliances: apps,
        titles,
        ..Default::default()
    }
}

fn params() -> FillParams {
    FillParams {
        views_per_copy: 100.0,
        max_copies: 0,
        hysteresis: 1.25,
        capacity_fraction: 1.0,
        popularity_window_secs: 86_400,
    }
}

/// A tiny deterministic generator (xorshift64*), so the noise tests need no dependency.
struct Rng(u64);
impl Rng {
    fn next_f64(&mut self) -> f64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[test]
fn capacity_is_respected_and_filled_in_popularity_order() {
    // 4 appliances of 10 GB, 200 titles of 1 GB: room for 40 copies.
    let inp = input(appliances(4, 10 * GB), titles(200, GB));
    let plan = plan_cluster(&inp, &ClusterPlacement::default(), &params());
    for (a, ts) in &plan.placement.0 {
        assert!(ts.len() as u64 * GB <= 10 * GB, "{a} over capacity");
        assert_eq!(ts.len(), 10, "{a} not filled");
    }
    // The most popular titles are placed; the tail beyond the room is not.
    assert!(plan.placement.copies("t0000") >= 1);
    assert_eq!(plan.placement.copies("t0199"), 0);
    assert!(plan.short.contains(&"t0199".to_owned()));
    // A capacity fraction leaves headroom.
    let plan = plan_cluster(
        &inp,
        &ClusterPlacement::default(),
        &FillParams {
            capacity_fraction: 0.5,
            ..params()
        },
    );
    assert!(plan.placement.0.values().all(|ts| ts.len() == 5));
    // Titles bigger than any appliance are never placed.
    let mut big = titles(3, GB);
    big[0].bytes = 11 * GB;
    let plan = plan_cluster(
        &input(appliances(2, 10 * GB), big),
        &ClusterPlacement::default(),
        &params(),
    );
    assert_eq!(plan.placement.copies("t0000"), 0);
    assert_eq!(plan.placement.copies("t0001"), 2);
}

#[test]
fn copy_count_grows_with_popularity() {
    let inp = input(appliances(8, 1000 * GB), titles(50, GB));
    let plan = plan_cluster(&inp, &ClusterPlacement::default(), &params());
    // 1000 views / 100 per copy = 10 copies, capped at the 8 appliances: the head is everywhere.
    assert_eq!(plan.placement.copies("t0000"), 8);
    // 1000/3 = 333 views: 4 copies.
    assert_eq!(plan.placement.copies("t0002"), 4);
    // The tail (1000/50 = 20 views) gets one copy.
    assert_eq!(plan.placement.copies("t0049"), 1);
    assert_eq!(plan.titles["t0002"].copies_wanted, 4);
    // max_copies caps the head.
    let plan = plan_cluster(
        &inp,
        &ClusterPlacement::default(),
        &FillParams {
            max_copies: 3,
            ..params()
        },
    );
    assert_eq!(plan.placement.copies("t0000"), 3);
    // Zero popularity still gets one copy when there is room.
    let mut ts = titles(2, GB);
    ts[1].popularity = 0.0;
    let plan = plan_cluster(
        &input(appliances(3, 10 * GB), ts),
        &ClusterPlacement::default(),
        &params(),
    );
    assert_eq!(plan.placement.copies("t0001"), 1);
}

#[test]
fn copy_count_follows_the_clusters_share_of_demand_per_day() {
    // Region-wide popularity 1000 views/day; 100 views per copy.
    let mut inp = input(appliances(8, 1000 * GB), titles(50, GB));
    // A cluster carrying a quarter of the region: t0000 brings 250 views/day = 3 copies;
    // t0002 (333 region views, 83 here) one copy.
    inp.demand_share = Some(0.25);
    let plan = plan_cluster(&inp, &ClusterPlacement::default(), &params());
    assert_eq!(plan.placement.copies("t0000"), 3);
    assert_eq!(plan.titles["t0000"].copies_wanted, 3);
    assert_eq!(plan.placement.copies("t0002"), 1);
    // A small cluster (5% of the region) holds one copy of everything: no head duplicated at
    // the tail's expense.
    inp.demand_share = Some(0.05);
    let small = plan_cluster(&inp, &ClusterPlacement::default(), &params());
    assert!(small.titles.values().all(|d| d.copies_wanted == 1));
    // A cluster that served nothing of the region yet (share 0): one copy of each.
    inp.demand_share = Some(0.0);
    let idle = plan_cluster(&inp, &ClusterPlacement::default(), &params());
    assert!(idle.titles.values().all(|d| d.copies_wanted == 1));
    // Values that are not a share count as the whole region (the pure API's old meaning).
    for bad in [None, Some(-1.0), Some(f64::NAN)] {
        inp.demand_share = bad;
        let whole = plan_cluster(&inp, &ClusterPlacement::default(), &params());
        assert_eq!(whole.placement.copies("t0000"), 8, "{bad:?}");
        assert_eq!(whole.placement.copies("t0002"), 4, "{bad:?}");
    }
}

#[test]
fn copy_count_does_not_depend_on_the_window_length() {
    // The same daily demand measured over one day and over three days (three times the views)
    // wants the same copies.
    let one = input(appliances(8, 1000 * GB), titles(50, GB));
    let mut three = one.clone();
    for t in &mut three.titles {
        t.popularity *= 3.0;
    }
    let p1 = plan_cluster(&one, &ClusterPlacement::default(), &params());
    let p3 = plan_cluster(
        &three,
        &ClusterPlacement::default(),
        &FillParams {
            popularity_window_secs: 3 * 86_400,
            ..params()
        },
    );
    assert_eq!(p1.placement, p3.placement);
    let wanted =
        |p: &ClusterPlan| -> Vec<usize> { p.titles.values().map(|d| d.copies_wanted).collect() };
    assert_eq!(wanted(&p1), wanted(&p3));
    assert_eq!(p1.titles["t0002"].copies_wanted, 4);
    // Without the normalisation the three-day views would want three times the copies.
    let p3_as_day = plan_cluster(&three, &ClusterPlacement::default(), &params());
    assert_eq!(p3_as_day.titles["t0002"].copies_wanted, 8);
    // cluster_demand itself: views × share ÷ days; window 0 counts as a day.
    assert_eq!(cluster_demand(300.0, Some(0.5), 3 * 86_400), 50.0);
    assert_eq!(cluster_demand(300.0, Some(2.0), 0), 300.0);
    assert_eq!(cluster_demand(f64::NAN, Some(0.5), 86_400), 0.0);
}

fn steering_fleet(ids: &[String], placement: &ClusterPlacement) -> Fleet {
    let apps = ids
        .iter()
        .map(|id| Appliance {
            id: id.clone(),
            cluster: "isp".into(),
            address: "127.0.0.1".into(),
            port: 1,
            admin_state: AdminState::Reported,
            health: Some(protocol::fleet::Health::Ok),
            load: 0.1,
            last_heartbeat: Some(1000),
            titles: Some(
                placement
                    .titles_of(id)
                    .map(|s| s.iter().cloned().collect())
                    .unwrap_or_default(),
            ),
            prefixes: vec!["10.0.0.0/8".parse().unwrap()],
        })
        .collect();
    Fleet::new(
        vec![Cluster {
            id: "isp".into(),
            kind: ClusterKind::Embedded,
            fallbacks: vec![],
        }],
        apps,
    )
}

#[test]
fn placement_is_the_rendezvous_top_n_so_steering_agrees() {
    let apps = appliances(6, 1000 * GB);
    let ids: Vec<String> = apps.iter().map(|a| a.id.clone()).collect();
    let inp = input(apps, titles(300, GB));
    let plan = plan_cluster(&inp, &ClusterPlacement::default(), &params());
    let fleet = steering_fleet(&ids, &plan.placement);
    let t = Thresholds {
        offline_after_secs: 30,
        load_threshold: 0.9,
        max: 3,
    };
    for title in inp.titles.iter().map(|t| t.id.as_str()) {
        let k = plan.titles[title].copies_placed;
        let order: Vec<String> = fleet
            .hrw_order("isp", title)
            .iter()
            .map(|a| a.id.clone())
            .collect();
        let holders: HashSet<String> = ids
            .iter()
            .filter(|a| plan.placement.contains(a, title))
            .cloned()
            .collect();
        let top: HashSet<String> = order[..k].iter().cloned().collect();
        assert_eq!(holders, top, "{title}: not the rendezvous top {k}");
        // Steering sends a client to the best local appliance: it holds the title.
        let d = fleet.rank("10.1.2.3".parse().unwrap(), title, 1000, &t);
        assert_eq!(d.miss, None::<MissClass>, "{title}: {}", d.reason);
        assert_eq!(d.ranked[0].appliance, order[0]);
    }
}

#[test]
fn small_popularity_noise_changes_nothing_thanks_to_hysteresis() {
    // A full cluster (room for 60 of 300 titles), popularity jittered by +-5% each day.
    let inp = input(appliances(4, 15 * GB), titles(300, GB));
    let day0 = plan_cluster(&inp, &ClusterPlacement::default(), &params());
    assert!(!day0.changes.is_empty());
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    let mut previous = day0.placement.clone();
    let mut churn_without = 0;
    for _ in 0..10 {
        let mut noisy = inp.clone();
        for t in &mut noisy.titles {
            t.popularity *= 0.95 + 0.1 * rng.next_f64();
        }
        let next = plan_cluster(&noisy, &previous, &params());
        assert!(
            next.changes.is_empty(),
            "noise moved files: {:?}",
            next.changes
        );
        assert_eq!(next.placement, previous);
        // Without a swap cost the same noise moves files at the cutoff.
        let loose = plan_cluster(
            &noisy,
            &previous,
            &FillParams {
                hysteresis: 1.0,
                ..params()
            },
        );
        churn_without += loose.changes.len();
        previous = next.placement;
    }
    assert!(
        churn_without > 0,
        "the noise test is too weak to show anything"
    );
}

#[test]
fn a_newcomer_displaces_a_held_title_only_past_the_hysteresis() {
    // One appliance with room for one title: "old" holds it with 100 views.
    let apps = appliances(1, GB);
    let prev = ClusterPlacement::from_pairs([("oca-0".to_owned(), "old".to_owned())]);
    let mk = |new_views: f64| {
        input(
            apps.clone(),
            vec![
                TitleInput {
                    id: "old".into(),
                    bytes: GB,
                    popularity: 100.0,
                    urgent: None,
                },
                TitleInput {
                    id: "new".into(),
                    bytes: GB,
                    popularity: new_views,
                    urgent: None,
                },
            ],
        )
    };
    let p = params(); // hysteresis 1.25
    let plan = plan_cluster(&mk(120.0), &prev, &p);
    assert!(plan.changes.is_empty(), "{:?}", plan.changes);
    assert!(plan.placement.contains("oca-0", "old"));
    let plan = plan_cluster(&mk(130.0), &prev, &p);
    assert!(plan.placement.contains("oca-0", "new"));
    let adds: Vec<&PlanChange> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Add)
        .collect();
    let removes: Vec<&PlanChange> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Remove)
        .collect();
    assert_eq!(adds.len(), 1);
    assert_eq!(adds[0].title, "new");
    assert!(adds[0].reason.contains("rank 1"), "{}", adds[0].reason);
    assert_eq!(removes.len(), 1);
    assert_eq!(removes[0].title, "old");
    assert!(
        removes[0].reason.contains("displaced"),
        "{}",
        removes[0].reason
    );
    // Held (reported) counts like placed: same stickiness without a stored placement.
    let mut inp = mk(120.0);
    inp.held.insert("oca-0".into(), ["old".to_owned()].into());
    let plan = plan_cluster(&inp, &ClusterPlacement::default(), &p);
    assert!(plan.placement.contains("oca-0", "old"));
}

#[test]
fn urgent_titles_go_first_and_stale_copies_are_re_added() {
    let apps = appliances(1, 2 * GB);
    let mut ts = titles(3, GB);
    ts[2].urgent = Some(Urgency::NewRelease);
    let mut inp = input(apps, ts);
    inp.stale
        .insert("oca-0".into(), ["t0000".to_owned()].into());
    let plan = plan_cluster(&inp, &ClusterPlacement::default(), &params());
    // Room for two: the urgent tail title and the most popular one.
    let placed = plan.placement.titles_of("oca-0").unwrap();
    assert!(
        placed.contains("t0002") && placed.contains("t0000"),
        "{placed:?}"
    );
    assert_eq!(plan.ordered_titles("oca-0"), ["t0002", "t0000"]);
    let urgent = plan.changes.iter().find(|c| c.title == "t0002").unwrap();
    assert!(
        urgent.reason.starts_with("urgent (new release)"),
        "{}",
        urgent.reason
    );
    let stale = plan.changes.iter().find(|c| c.title == "t0000").unwrap();
    assert!(
        stale.reason.starts_with("new catalog version"),
        "{}",
        stale.reason
    );
}

#[test]
fn removed_appliances_and_titles_are_explained() {
    let prev = ClusterPlacement::from_pairs([
        ("gone".to_owned(), "t0000".to_owned()),
        ("oca-0".to_owned(), "retired".to_owned()),
    ]);
    let plan = plan_cluster(
        &input(appliances(1, 10 * GB), titles(1, GB)),
        &prev,
        &params(),
    );
    let why = |t: &str| {
        plan.changes
            .iter()
            .find(|c| c.title == t && c.action == Action::Remove)
            .map(|c| c.reason.clone())
            .unwrap()
    };
    assert!(why("retired").contains("no longer in the catalog"));
    assert!(why("t0000").contains("no longer planned"));
    // The plan is deterministic.
    assert_eq!(
        plan,
        plan_cluster(
            &input(appliances(1, 10 * GB), titles(1, GB)),
            &prev,
            &params()
        )
    );
}

fn report(title: &str, sid: &str, starved: u64, br: u64, mtp: u64) -> protocol::qoe::SessionQoe {
    protocol::qoe::SessionQoe {
        sid: sid.into(),
        cid: Some(title.into()),
        title: Some(title.into()),
        first_ms: 0,
        last_ms: 60_000,
        requests: 20,
        bytes: 1 << 20,
        startup_ms: Some(500),
        starvation_events: starved,
        media_ms: 60_000,
        avg_bitrate_kbps: Some(br),
        buffer_ms: Some(8_000),
        min_buffer_ms: Some(0),
        avg_throughput_kbps: Some(mtp),
        switches: 0,
        timed_bytes: None,
        timed_us: None,
    }
}

#[test]
fn low_qoe_titles_need_enough_bad_reports_and_are_bounded() {
    let signal = qoe::QoeSignal {
        min_sessions: 3,
        bad_share: 0.5,
        max_titles: 2,
    };
    let mut reports = vec![
        // a: 2 of 3 bad (one starved, one throughput below bitrate).
        report("a", "1", 2, 3000, 9000),
        report("a", "2", 0, 3000, 2000),
        report("a", "3", 0, 3000, 9000),
        // b: 3 of 3 bad.
        report("b", "4", 1, 3000, 9000),
        report("b", "5", 1, 3000, 9000),
        report("b", "6", 1, 3000, 9000),
        // c: 1 of 3 bad: below the share.
        report("c", "7", 1, 3000, 9000),
        report("c", "8", 0, 3000, 9000),
        report("c", "9", 0, 3000, 9000),
        // d: 2 of 2 bad: too few reports.
        report("d", "10", 1, 3000, 9000),
        report("d", "11", 1, 3000, 9000),
    ];
    let mut untitled = report("x", "12", 5, 3000, 100);
    untitled.title = None;
    reports.push(untitled);
    let got = qoe::low_qoe_titles(&reports, &signal);
    assert_eq!(
        got.into_iter().collect::<Vec<_>>(),
        [
            (
                "a".to_owned(),
                Urgency::LowQoe {
                    bad: 2,
                    sessions: 3
                }
            ),
            (
                "b".to_owned(),
                Urgency::LowQoe {
                    bad: 3,
                    sessions: 3
                }
            ),
        ]
    );
    // Bounded: one title at most keeps the worst share (b).
    let one = qoe::low_qoe_titles(
        &reports,
        &qoe::QoeSignal {
            max_titles: 1,
            ..signal
        },
    );
    assert_eq!(one.keys().collect::<Vec<_>>(), ["b"]);
    // Nothing bad, nothing urgent.
    let good: Vec<_> = (0..5)
        .map(|i| report("a", &i.to_string(), 0, 3000, 9000))
        .collect();
    assert!(qoe::low_qoe_titles(&good, &signal).is_empty());
}

#[test]
fn low_qoe_ranks_a_title_urgent_with_one_extra_copy_explained() {
    // Four appliances; demand for t0000 (1000 views / 100 per copy) = 10 copies capped at 4, so
    // use a title with one copy's worth of demand: t0019 (50 views).
    let apps = appliances(4, 100 * GB);
    let ts = titles(20, GB);
    let base = plan_cluster(
        &input(apps.clone(), ts.clone()),
        &ClusterPlacement::default(),
        &params(),
    );
    assert_eq!(base.titles["t0019"].copies_wanted, 1);
    assert_eq!(base.titles["t0019"].rank, 20);

    let mut ts2 = ts.clone();
    ts2[19].urgent = Some(Urgency::LowQoe {
        bad: 3,
        sessions: 4,
    });
    let plan = plan_cluster(
        &input(apps.clone(), ts2.clone()),
        &base.placement,
        &params(),
    );
    let d = &plan.titles["t0019"];
    assert_eq!((d.rank, d.copies_wanted, d.copies_placed), (1, 2, 2));
    // The copy it had stays; exactly one add, explained.
    assert!(plan.placement.titles_of("oca-0").is_some());
    let adds: Vec<_> = plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Add)
        .collect();
    assert_eq!(adds.len(), 1, "{:?}", plan.changes);
    assert_eq!(adds[0].title, "t0019");
    assert!(
        adds[0].reason.starts_with(
            "urgent (low QoE on this cluster: 3 of 4 recent sessions starved or played above their throughput; one extra copy); rank 1"
        ),
        "{}",
        adds[0].reason
    );
    assert_eq!(plan.changes.len(), 1, "{:?}", plan.changes);

    // Bounded: planned again with the QoE still bad, it stays at demand + 1 (no growth).
    let again = plan_cluster(
        &input(apps.clone(), ts2.clone()),
        &plan.placement,
        &params(),
    );
    assert_eq!(again.titles["t0019"].copies_wanted, 2);
    assert!(again.changes.is_empty(), "{:?}", again.changes);
    // ... and never above max_copies.
    let one = FillParams {
        max_copies: 1,
        ..params()
    };
    let capped = plan_cluster(
        &input(apps.clone(), ts2),
        &ClusterPlacement::default(),
        &one,
    );
    assert_eq!(capped.titles["t0019"].copies_wanted, 1);

    // Once the QoE is fine again the extra copy goes within the hysteresis band: with 2 held
    // and demand for 1, the band [copies(50/1.25), copies(50*1.25)] = [1, 1] brings it back.
    let after = plan_cluster(&input(apps, ts), &plan.placement, &params());
    assert_eq!(after.titles["t0019"].copies_wanted, 1);
    assert_eq!(
        after
            .changes
            .iter()
            .filter(|c| c.action == Action::Remove && c.title == "t0019")
            .count(),
        1
    );
}
