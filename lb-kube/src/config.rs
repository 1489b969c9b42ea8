//! The MetalLB configuration in a snapshot, turned into `lb-alloc` pools,
//! with every invalid field reported against its object.

use std::collections::{BTreeMap, BTreeSet};

use k8s_openapi::apimachinery::pkg::apis::meta::v1 as meta;
use lb_alloc::{AddrRange, LabelSelector, Operator, Pool, PoolSet, Requirement, ServiceAllocation};

use crate::objects::{IPAddressPool, Object, ObjectRef, object_ref};
use crate::source::{Problem, Snapshot};

/// A label value as Kubernetes takes it: at most 63 characters,
/// alphanumerics with `-`, `_` and `.` inside, or empty.
pub fn is_label_value(v: &str) -> bool {
    let b = v.as_bytes();
    let alnum = |c: &u8| c.is_ascii_alphanumeric();
    b.is_empty()
        || (b.len() <= 63
            && b.iter().all(|c| alnum(c) || matches!(c, b'-' | b'_' | b'.'))
            && b.first().is_some_and(alnum)
            && b.last().is_some_and(alnum))
}

/// A label key as Kubernetes takes it: an optional DNS subdomain prefix
/// and `/`, then a non-empty name of the value's form.
pub fn is_label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    !name.is_empty() && is_label_value(name) && prefix.is_none_or(crate::objects::validate::is_dns1123_subdomain)
}

/// Converts a Kubernetes label selector; a key or value Kubernetes would
/// refuse is an error.
pub fn label_selector(s: &meta::LabelSelector) -> Result<LabelSelector, String> {
    let labels = s.match_labels.clone().unwrap_or_default();
    for (k, v) in &labels {
        if !is_label_key(k) {
            return Err(format!("{k:?} is not a valid label key"));
        }
        if !is_label_value(v) {
            return Err(format!("{v:?} is not a valid label value (for key {k:?})"));
        }
    }
    for e in s.match_expressions.iter().flatten() {
        if !is_label_key(&e.key) {
            return Err(format!("{:?} is not a valid label key", e.key));
        }
        if let Some(v) = e.values.iter().flatten().find(|v| !is_label_value(v)) {
            return Err(format!("{v:?} is not a valid label value (for key {:?})", e.key));
        }
    }
    let exprs = s
        .match_expressions
        .iter()
        .flatten()
        .map(|e| {
            let op: Operator = e.operator.parse().map_err(|x: lb_alloc::SelectorError| x.to_string())?;
            Requirement::new(e.key.clone(), op, e.values.clone().unwrap_or_default()).map_err(|x| x.to_string())
        })
        .collect::<Result<Vec<_>, _>>()?;
    Ok(LabelSelector::new(labels, exprs))
}

pub(crate) fn selectors(
    list: Option<&Vec<meta::LabelSelector>>,
    field: &str,
    errors: &mut Vec<(String, String)>,
) -> Vec<LabelSelector> {
    list.into_iter()
        .flatten()
        .enumerate()
        .filter_map(|(i, s)| {
            label_selector(s)
                .map_err(|e| errors.push((format!("{field}[{i}]"), e)))
                .ok()
        })
        .collect()
}

/// Converts one IPAddressPool; errors are (field, message).
pub fn pool(p: &IPAddressPool) -> Result<Pool, Vec<(String, String)>> {
    let mut errors = Vec::new();
    let name = p.metadata.name.clone().unwrap_or_default();
    if p.spec.addresses.is_empty() {
        errors.push(("spec.addresses".into(), "must list at least one CIDR or range".into()));
    }
    let ranges: Vec<AddrRange> = p
        .spec
        .addresses
        .iter()
        .enumerate()
        .filter_map(|(i, a)| {
            a.parse()
                .map_err(|e: lb_alloc::AddressError| errors.push((format!("spec.addresses[{i}]"), e.to_string())))
                .ok()
        })
        .collect();
    let mut pool = Pool::new(name, ranges)
        .with_auto_assign(p.spec.auto_assign.unwrap_or(true))
        .with_avoid_buggy_ips(p.spec.avoid_buggy_ips.unwrap_or(false));
    if let Some(a) = &p.spec.service_allocation {
        let mut namespaces = BTreeSet::new();
        for (i, ns) in a.namespaces.iter().flatten().enumerate() {
            if !namespaces.insert(ns.clone()) {
                errors.push((
                    format!("spec.serviceAllocation.namespaces[{i}]"),
                    format!("namespace {ns:?} is listed twice"),
                ));
            }
        }
        pool = pool.with_allocation(ServiceAllocation {
            // MetalLB's 0 means unset.
            priority: a.priority.filter(|&p| p != 0),
            namespaces,
            namespace_selectors: selectors(
                a.namespace_selectors.as_ref(),
                "spec.serviceAllocation.namespaceSelectors",
                &mut errors,
            ),
            service_selectors: selectors(
                a.service_selectors.as_ref(),
                "spec.serviceAllocation.serviceSelectors",
                &mut errors,
            ),
        });
    }
    if errors.is_empty() { Ok(pool) } else { Err(errors) }
}

/// The pools of a snapshot, and whether they are the whole configuration.
/// Pools already in force (`previous`) keep their addresses when a new pool
/// overlaps them, and an invalid new version of a pool leaves the previous
/// version in force; otherwise the pool that sorts first by name wins. Every
/// pool left out is reported.
///
/// The set is incomplete (`false`) when a pool may be missing from it: a
/// pool (or the legacy ConfigMap) that does not read and has no earlier
/// version in force, a pool left out for overlapping, or a snapshot that is
/// itself incomplete. An incomplete configuration must release nothing.
pub fn pools(snapshot: &Snapshot, previous: &PoolSet, problems: &mut Vec<Problem>) -> (PoolSet, bool) {
    let mut complete = snapshot.complete
        && !snapshot
            .unreadable
            .iter()
            .any(|r| r.kind == "IPAddressPool" || crate::objects::legacy::is_legacy_configmap(r));
    let mut candidates: Vec<(ObjectRef, Pool)> = Vec::new();
    for (origin, obj) in &snapshot.objects {
        let Object::IPAddressPool(p) = obj else { continue };
        let r = object_ref(obj);
        match pool(p) {
            Ok(pool) => candidates.push((r, pool)),
            Err(errs) => {
                // The version in force stays in force until this one is fixed.
                let kept = previous.get(&r.name).cloned();
                let note = crate::source::kept_note(kept.is_some());
                problems.extend(errs.into_iter().map(|(field, msg)| Problem {
                    origin: origin.clone(),
                    ..Problem::error(Some(r.clone()), Some(field), format!("{msg}{note}"))
                }));
                match kept {
                    Some(kept) => candidates.push((r, kept)),
                    None => complete = false,
                }
            }
        }
    }
    candidates.sort_by(|(_, a), (_, b)| {
        let old = |p: &Pool| previous.get(p.name()).is_none();
        (old(a), a.name()).cmp(&(old(b), b.name()))
    });
    let refs: BTreeMap<String, ObjectRef> = candidates
        .iter()
        .map(|(r, p)| (p.name().to_owned(), r.clone()))
        .collect();
    let (set, errors) = PoolSet::build(candidates.into_iter().map(|(_, p)| p));
    complete &= errors.is_empty();
    for e in errors {
        let r = refs.get(e.pool()).cloned();
        let origin = r.as_ref().and_then(|r| {
            snapshot
                .objects
                .iter()
                .find(|(_, o)| matches!(o, Object::IPAddressPool(_)) && object_ref(o) == *r)
                .and_then(|(o, _)| o.clone())
        });
        problems.push(Problem {
            origin,
            ..Problem::error(r, Some("spec.addresses".into()), e.to_string())
        });
    }
    (set, complete)
}
