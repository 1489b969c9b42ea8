//! Which Ingresses are ours: IngressClass selection (DESIGN §4,
//! reference/ingress.md §1.6).

use crate::ingress::{Ingress, IngressClass};

/// The legacy class annotation, still honoured when `ingressClassName` is
/// not set.
pub const LEGACY_CLASS_ANNOTATION: &str = "kubernetes.io/ingress.class";
/// Marks the cluster's default IngressClass.
pub const DEFAULT_CLASS_ANNOTATION: &str = "ingressclass.kubernetes.io/is-default-class";
/// Our controller name, as IngressClasses name it in `spec.controller`.
pub const CONTROLLER: &str = "lb.io/ingress";

/// How Ingresses are picked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClassConfig {
    /// `spec.controller` of our IngressClasses.
    pub controller: String,
    /// A class name that is ours even without an IngressClass object
    /// (`--ingress-class`; users migrating from ingress-nginx set `nginx`).
    pub class: String,
    /// Serve Ingresses without any class (`--watch-ingress-without-class`).
    pub watch_without_class: bool,
}

impl Default for ClassConfig {
    fn default() -> Self {
        Self {
            controller: CONTROLLER.to_owned(),
            class: "lb".to_owned(),
            watch_without_class: false,
        }
    }
}

impl ClassConfig {
    fn ours(&self, c: &IngressClass) -> bool {
        c.spec.controller.as_deref() == Some(self.controller.as_str())
    }

    fn names_ours(&self, name: &str, classes: &[IngressClass]) -> bool {
        name == self.class || classes.iter().any(|c| c.metadata.name == name && self.ours(c))
    }

    /// Whether we serve this Ingress: its `ingressClassName` names one of
    /// our IngressClasses or equals our class name (whatever controller an
    /// IngressClass of that name declares: migrating users keep theirs);
    /// else its legacy annotation does; else, with no class at all, one of
    /// our IngressClasses is the default or class-less Ingresses are
    /// watched.
    pub fn selects(&self, ing: &Ingress, classes: &[IngressClass]) -> bool {
        if let Some(name) = &ing.spec.ingress_class_name {
            return self.names_ours(name, classes);
        }
        if let Some(name) = ing.metadata.annotations.get(LEGACY_CLASS_ANNOTATION) {
            return self.names_ours(name, classes);
        }
        self.watch_without_class
            || classes.iter().any(|c| {
                self.ours(c)
                    && c.metadata
                        .annotations
                        .get(DEFAULT_CLASS_ANNOTATION)
                        .is_some_and(|v| v == "true")
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn class(name: &str, controller: &str, default: bool) -> IngressClass {
        let mut c = IngressClass::default();
        c.metadata.name = name.into();
        c.spec.controller = Some(controller.into());
        if default {
            c.metadata
                .annotations
                .insert(DEFAULT_CLASS_ANNOTATION.into(), "true".into());
        }
        c
    }

    fn ing(class_name: Option<&str>, legacy: Option<&str>) -> Ingress {
        let mut i = Ingress::default();
        i.spec.ingress_class_name = class_name.map(Into::into);
        if let Some(l) = legacy {
            i.metadata.annotations.insert(LEGACY_CLASS_ANNOTATION.into(), l.into());
        }
        i
    }

    #[test]
    fn selection() {
        let cfg = ClassConfig::default();
        let classes = [
            class("ours", CONTROLLER, false),
            class("nginx", "k8s.io/ingress-nginx", false),
        ];
        assert!(cfg.selects(&ing(Some("ours"), None), &classes));
        assert!(!cfg.selects(&ing(Some("nginx"), None), &classes));
        assert!(
            !cfg.selects(&ing(Some("missing"), None), &classes),
            "a non-existent class is not ours"
        );
        assert!(
            cfg.selects(&ing(Some("lb"), None), &classes),
            "our class name without an object"
        );
        assert!(cfg.selects(&ing(None, Some("lb")), &classes));
        assert!(cfg.selects(&ing(None, Some("ours")), &classes));
        assert!(!cfg.selects(&ing(None, Some("nginx")), &classes));
        // The field wins over the annotation.
        assert!(!cfg.selects(&ing(Some("nginx"), Some("lb")), &classes));
        // No class: only with a default class of ours, or when asked.
        assert!(!cfg.selects(&ing(None, None), &classes));
        assert!(cfg.selects(&ing(None, None), &[class("ours", CONTROLLER, true)]));
        assert!(!cfg.selects(&ing(None, None), &[class("theirs", "x.io/y", true)]));
        let watch = ClassConfig {
            watch_without_class: true,
            ..ClassConfig::default()
        };
        assert!(watch.selects(&ing(None, None), &[]));
        // Migrating users name ingress-nginx's class.
        let nginx = ClassConfig {
            class: "nginx".into(),
            ..ClassConfig::default()
        };
        assert!(nginx.selects(&ing(None, Some("nginx")), &[]));
        assert!(nginx.selects(&ing(Some("nginx"), None), &classes));
    }
}
