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
/// On an IngressClass of ours: how its Ingresses are matched, `strict`
/// or `ingress-nginx` (see [`Mode`]).
pub const MODE_ANNOTATION: &str = "lb.io/route-mode";

/// How the Ingresses of a class are matched.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Mode {
    /// The Kubernetes Ingress spec (the default).
    #[default]
    Strict,
    /// ingress-nginx's behaviour where it departs from the spec
    /// (reference/ingress.md §3.9), for users migrating without rewriting
    /// their Ingresses: a regex path or rewrite on a host turns every path
    /// of that host into a case-insensitive prefix regex, first match by
    /// length; a path ending in `/` answers 301 to requests without it;
    /// requests matching no path take the annotations of the host's first
    /// Ingress.
    IngressNginx,
}

impl Mode {
    /// The value of [`MODE_ANNOTATION`] that selects this mode.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Strict => "strict",
            Mode::IngressNginx => "ingress-nginx",
        }
    }
}

impl std::str::FromStr for Mode {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "strict" => Ok(Mode::Strict),
            "ingress-nginx" => Ok(Mode::IngressNginx),
            other => Err(format!(
                "{other:?} is not a route mode (\"strict\" or \"ingress-nginx\")"
            )),
        }
    }
}

/// How Ingresses are picked: `ClassConfig::default()`, then the `with_*`
/// methods.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ClassConfig {
    /// `spec.controller` of our IngressClasses.
    pub controller: String,
    /// A class name that is ours even without an IngressClass object
    /// (`--ingress-class`; users migrating from ingress-nginx set `nginx`).
    pub class: String,
    /// Serve Ingresses without any class (`--watch-ingress-without-class`).
    pub watch_without_class: bool,
    /// The mode of Ingresses whose class has no IngressClass object of
    /// ours that says otherwise (the `class` name, class-less Ingresses).
    pub mode: Mode,
}

impl ClassConfig {
    /// With this class name (`--ingress-class`).
    pub fn with_class(mut self, class: impl Into<String>) -> Self {
        self.class = class.into();
        self
    }

    /// Serving Ingresses without a class (or not).
    pub fn with_watch_without_class(mut self, on: bool) -> Self {
        self.watch_without_class = on;
        self
    }

    /// With this default mode.
    pub fn with_mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }

    /// With this `spec.controller` for our IngressClasses.
    pub fn with_controller(mut self, controller: impl Into<String>) -> Self {
        self.controller = controller.into();
        self
    }
}

impl Default for ClassConfig {
    fn default() -> Self {
        Self {
            controller: CONTROLLER.to_owned(),
            class: "lb".to_owned(),
            watch_without_class: false,
            mode: Mode::Strict,
        }
    }
}

impl ClassConfig {
    /// Whether an IngressClass is ours (its `spec.controller` is ours).
    pub fn selects_class(&self, c: &IngressClass) -> bool {
        c.spec.controller.as_deref() == Some(self.controller.as_str())
    }

    /// The mode an IngressClass of ours asks for: its [`MODE_ANNOTATION`],
    /// else [`ClassConfig::mode`]. An invalid value is an error (the
    /// caller reports it and uses [`ClassConfig::mode`]).
    pub fn mode_of(&self, c: &IngressClass) -> Result<Mode, String> {
        match c.metadata.annotations.get(MODE_ANNOTATION) {
            Some(v) => v.parse(),
            None => Ok(self.mode),
        }
    }

    /// The mode of class `name` if it is ours.
    fn named(&self, name: &str, classes: &[IngressClass]) -> Option<Mode> {
        match classes
            .iter()
            .find(|c| c.metadata.name == name && self.selects_class(c))
        {
            Some(c) => Some(self.mode_of(c).unwrap_or(self.mode)),
            None => (name == self.class).then_some(self.mode),
        }
    }

    /// Whether we serve this Ingress: its `ingressClassName` names one of
    /// our IngressClasses or equals our class name (whatever controller an
    /// IngressClass of that name declares: migrating users keep theirs);
    /// else its legacy annotation does; else, with no class at all, one of
    /// our IngressClasses is the default or class-less Ingresses are
    /// watched.
    pub fn selects(&self, ing: &Ingress, classes: &[IngressClass]) -> bool {
        self.select(ing, classes).is_some()
    }

    /// Like [`ClassConfig::selects`], with the mode the Ingress is matched
    /// in: its class's.
    pub fn select(&self, ing: &Ingress, classes: &[IngressClass]) -> Option<Mode> {
        if let Some(name) = &ing.spec.ingress_class_name {
            return self.named(name, classes);
        }
        if let Some(name) = ing.metadata.annotations.get(LEGACY_CLASS_ANNOTATION) {
            return self.named(name, classes);
        }
        let default = classes.iter().find(|c| {
            self.selects_class(c)
                && c.metadata
                    .annotations
                    .get(DEFAULT_CLASS_ANNOTATION)
                    .is_some_and(|v| v == "true")
        });
        match default {
            Some(c) => Some(self.mode_of(c).unwrap_or(self.mode)),
            None => self.watch_without_class.then_some(self.mode),
        }
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

    #[test]
    fn mode_per_class() {
        let cfg = ClassConfig::default();
        let mut compat = class("compat", CONTROLLER, true);
        compat
            .metadata
            .annotations
            .insert(MODE_ANNOTATION.into(), "ingress-nginx".into());
        let mut bad = class("bad", CONTROLLER, false);
        bad.metadata.annotations.insert(MODE_ANNOTATION.into(), "nginx".into());
        let classes = [compat, bad, class("plain", CONTROLLER, false)];
        assert_eq!(
            cfg.select(&ing(Some("compat"), None), &classes),
            Some(Mode::IngressNginx)
        );
        assert_eq!(
            cfg.select(&ing(None, Some("compat")), &classes),
            Some(Mode::IngressNginx)
        );
        assert_eq!(
            cfg.select(&ing(None, None), &classes),
            Some(Mode::IngressNginx),
            "class-less Ingresses take the default class's mode"
        );
        assert_eq!(cfg.select(&ing(Some("plain"), None), &classes), Some(Mode::Strict));
        assert!(cfg.mode_of(&classes[1]).unwrap_err().contains("\"nginx\""));
        assert_eq!(cfg.select(&ing(Some("bad"), None), &classes), Some(Mode::Strict));
        let migrating = ClassConfig {
            class: "nginx".into(),
            mode: Mode::IngressNginx,
            ..ClassConfig::default()
        };
        assert_eq!(
            migrating.select(&ing(Some("nginx"), None), &[]),
            Some(Mode::IngressNginx)
        );
        assert_eq!(
            migrating.select(&ing(Some("plain"), None), &classes),
            Some(Mode::IngressNginx),
            "a class without the annotation takes the configured mode"
        );
        assert_eq!(
            migrating.select(&ing(Some("compat"), None), &classes),
            Some(Mode::IngressNginx)
        );
    }
}
