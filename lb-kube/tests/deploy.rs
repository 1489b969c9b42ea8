//! deploy/: the committed CRDs are what our types generate (set
//! LB_UPDATE_GOLDEN=1 to rewrite them after changing a type).

use std::path::PathBuf;

fn deploy(file: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)
}

#[test]
fn committed_crds_are_the_generated_ones() {
    let generated = lb_kube::objects::metallb::crds_yaml();
    let path = deploy("crds.yaml");
    if std::env::var_os("LB_UPDATE_GOLDEN").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == generated,
        "deploy/crds.yaml differs from what the types generate; run \
         `LB_UPDATE_GOLDEN=1 cargo test -p lb-kube --test deploy` and review the diff"
    );
}

/// Every manifest in deploy/ is well-formed YAML whose objects name their
/// apiVersion, kind and name (the API server test applies them for real).
#[test]
fn deploy_manifests_parse() {
    for entry in std::fs::read_dir(deploy("")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        for (line, doc) in lb_kube::source::file::split_documents(&text) {
            let v =
                lb_kube::source::file::parse_document(doc).unwrap_or_else(|e| panic!("{}:{line}: {e}", path.display()));
            if v.is_null() {
                continue;
            }
            for field in ["/apiVersion", "/kind", "/metadata/name"] {
                assert!(v.pointer(field).is_some(), "{}:{line}: no {field}", path.display());
            }
        }
    }
}
