//! Arbitrary text as a manifest file, then a reconcile of what decoded and
//! the speaker's BGP and L2 decisions over it: never a panic; every
//! problem names where it is.
#![no_main]

use libfuzzer_sys::fuzz_target;
use lb_kube::controller::{Controller, Options};
use lb_kube::source::file::parse_manifests;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let snap = parse_manifests(std::path::Path::new("fuzz.yaml"), text);
    for p in &snap.problems {
        assert!(p.origin.is_some(), "problem without origin: {p}");
    }
    let dir = std::env::temp_dir().join("lb-fuzz-manifests-empty");
    let _ = std::fs::create_dir_all(&dir);
    let mut problems = Vec::new();
    let (pools, _) = lb_kube::config::pools(&snap, &Default::default(), &mut problems);
    let mut bgp = lb_kube::speaker::bgp::Config::default();
    bgp.update(&snap, &pools, &mut problems);
    let _ = bgp.plan(&snap, &pools, "node-a");
    let _ = lb_kube::speaker::l2::announcements(&snap, &pools, "node-a", None);
    if let Ok(mut c) = Controller::new(Options { state_file: Some(dir.join("state.json")), ..Options::new(&dir) }) {
        let _ = c.reconcile_snapshot(&snap, std::time::Instant::now());
    }
});
