//! Messages a user can act on: the file's own line numbers, JSON called
//! JSON, items of a `kind: List` located, no parser internals.

use lb_kube::source::file::FileSource;

fn problems(files: &[(&str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in files {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    let snap = FileSource::new(dir.path()).read().unwrap();
    snap.problems.iter().map(|p| p.to_string()).collect()
}

#[test]
fn parse_errors_name_the_line_of_the_file() {
    let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: b\n  x: [1, 2\nspec: {}\n---\na: b: c\n";
    let p = problems(&[("bad.yaml", yaml)]);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert!(
        p[0].contains("bad.yaml:6 (document 2)") && p[0].contains("at line 11 column 5"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains("bad.yaml:13 (document 3)") && p[1].contains("at line 13 column"),
        "{}",
        p[1]
    );
    for line in &p {
        assert!(
            !line.contains("-->") && !line.contains("<input>"),
            "parser internals: {line}"
        );
    }
}

#[test]
fn json_is_called_json_and_duplicates_keys_say_so_plainly() {
    let p = problems(&[
        (
            "bad.json",
            r#"{"apiVersion": "v1", "kind": "Service", "metadata": {"name": "x"}"#,
        ),
        (
            "dup.yaml",
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: d\n  name: e\n",
        ),
    ]);
    assert!(
        p[0].contains("invalid JSON at line 1") && !p[0].contains("YAML"),
        "{}",
        p[0]
    );
    assert!(
        p[1].contains("duplicate mapping key: name") && !p[1].contains("DuplicateKeyPolicy"),
        "{}",
        p[1]
    );
}

#[test]
fn list_items_and_nameless_objects_are_located() {
    let list = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: ok}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: bad}\n  spec: {ports: [{port: x}]}\n";
    let pools = "apiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nspec: {addresses: [a]}\n---\napiVersion: metallb.io/v1beta1\nkind: IPAddressPool\nspec: {addresses: [b]}\n";
    let p = problems(&[("list.yaml", list), ("pools.yaml", pools)]);
    assert!(p[0].contains("items[1].spec.ports[0].port"), "{}", p[0]);
    assert!(
        p[1].contains("pools.yaml:1 (document 1)") && p[1].contains("metadata: is required"),
        "{}",
        p[1]
    );
    assert!(p[2].contains("pools.yaml:5 (document 2)"), "{}", p[2]);
}
