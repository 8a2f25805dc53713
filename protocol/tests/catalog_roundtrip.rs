//! The committed catalog fixture (`fixtures/catalog/demo-h264.json`, written by
//! `outpost package` on the H.264 fixture ladder) parses, validates and serialises back to the
//! same bytes; breaking any rule gives an error naming the field.

use protocol::catalog::{CatalogEntry, PackagingMode, Tier, TrackKind};

const FIXTURE: &str = include_str!("../../fixtures/catalog/demo-h264.json");

#[test]
fn catalog_fixture_round_trips_byte_for_byte() {
    let entry = CatalogEntry::from_json(FIXTURE).unwrap();
    assert_eq!(entry.to_json(), FIXTURE);
    assert_eq!(CatalogEntry::from_json(&entry.to_json()).unwrap(), entry);
    assert_eq!(entry.title, "demo-h264");
    assert_eq!(entry.mode, PackagingMode::OnDemand);
    assert_eq!(entry.renditions.len(), 4);
    assert_eq!(entry.renditions[0].kind, TrackKind::Video);
    assert_eq!(entry.renditions[0].tier, Some(Tier::Sd));
    assert_eq!(entry.renditions[3].codec, "mp4a.40.2");
    assert_eq!(entry.renditions_within(Tier::Sd).count(), 4);
    assert!(entry.total_bytes() > 2_000_000);
}

fn broken(edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    edit(&mut v);
    CatalogEntry::from_json(&v.to_string())
        .unwrap_err()
        .to_string()
}

#[test]
fn catalog_fixture_mutations_name_the_field() {
    let e = broken(|v| v["renditions"][1]["tier"] = "HD".into());
    assert!(e.contains("renditions[1].tier"), "{e}");
    let e = broken(|v| v["files"][0]["sha256"] = "XYZ".into());
    assert!(e.contains("files[0].sha256"), "{e}");
    let e = broken(|v| v["renditions"][0]["files"][0] = "video-360p/video-360p.mp4".into());
    assert!(e.contains("renditions[0].files[0]"), "{e}");
    let e = broken(|v| v["manifests"]["dash"] = "other.mpd".into());
    assert!(e.contains("manifests.dash"), "{e}");
    let e = broken(|v| v["renditions"][0]["surprise"] = 1.into());
    assert!(e.contains("surprise"), "{e}");
    let e = broken(|v| v["title"] = "../etc".into());
    assert!(e.contains("title"), "{e}");
}

#[test]
fn trick_play_role_on_video_only_with_a_normal_ladder() {
    // A video rendition may carry the trick role; it keeps its tier like any video rendition.
    let mut v: serde_json::Value = serde_json::from_str(FIXTURE).unwrap();
    v["renditions"][0]["role"] = protocol::catalog::TRICK_ROLE.into();
    let entry = CatalogEntry::from_json(&v.to_string()).unwrap();
    assert!(entry.renditions[0].is_trick());
    assert!(!entry.renditions[1].is_trick());
    assert_eq!(entry.renditions[0].tier, Some(Tier::Sd));
    // Any other role on video is refused, naming the field.
    let e = broken(|v| v["renditions"][1]["role"] = "main".into());
    assert!(e.contains("renditions[1].role"), "{e}");
    // Trick renditions alone (every video rendition a trick one) are refused.
    let e = broken(|v| {
        for k in 0..3 {
            v["renditions"][k]["role"] = "trick".into();
        }
    });
    assert!(e.contains("normal video rendition"), "{e}");
}
