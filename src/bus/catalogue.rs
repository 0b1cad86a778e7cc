//! The subject catalogue (`subjects/*.toml`), embedded at build time so the binary never depends
//! on its working directory. [`Catalogue::check`] holds it consistent with itself and with the
//! typed builders in [`super::subjects`].

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

use super::subjects;

/// The catalogue files, by file name. A test fails if `subjects/` holds a file not listed here.
pub const FILES: &[(&str, &str)] = &[
    ("auth.toml", include_str!("../../subjects/auth.toml")),
    ("events.toml", include_str!("../../subjects/events.toml")),
    ("inbound.toml", include_str!("../../subjects/inbound.toml")),
    (
        "outbound.toml",
        include_str!("../../subjects/outbound.toml"),
    ),
    (
        "settlement.toml",
        include_str!("../../subjects/settlement.toml"),
    ),
    ("trades.toml", include_str!("../../subjects/trades.toml")),
];

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct Family {
    family: String,
    #[serde(default)]
    streams: Vec<StreamSpec>,
    subjects: Vec<SubjectSpec>,
    #[serde(default)]
    consumers: Vec<ConsumerSpec>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    pub name: String,
    pub subjects: Vec<String>,
    pub retention: Retention,
    pub storage: Storage,
    pub discard: Discard,
    pub max_age_s: u64,
    pub max_message_bytes: i32,
    pub duplicate_window_s: u64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Retention {
    Limits,
    Interest,
    Workqueue,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Storage {
    File,
    Memory,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Discard {
    Old,
    New,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "kebab-case")]
pub enum SubjectKind {
    Stream,
    RequestReply,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct SubjectSpec {
    pub builder: String,
    pub pattern: String,
    pub kind: SubjectKind,
    pub stream: Option<String>,
    pub queue_group: Option<String>,
    pub payload: String,
    pub producers: Vec<String>,
    pub consumers: Vec<String>,
}

#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ConsumerSpec {
    pub stream: String,
    pub name: String,
    pub filter_subject: String,
    pub deliver_policy: DeliverPolicy,
    pub ack_wait_ms: u64,
    /// -1: redeliver until acknowledged (nothing is ever dropped by the server).
    pub max_deliver: i64,
    pub max_ack_pending: i64,
}

#[derive(Debug, Clone, Copy, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum DeliverPolicy {
    All,
    New,
}

/// All families merged.
#[derive(Debug, Clone)]
pub struct Catalogue {
    pub streams: Vec<StreamSpec>,
    pub subjects: Vec<SubjectSpec>,
    pub consumers: Vec<ConsumerSpec>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogueError {
    #[error("subject catalogue file subjects/{file}: {message}")]
    Syntax { file: String, message: String },
    #[error("subject catalogue: {0}")]
    Inconsistent(String),
}

impl Catalogue {
    /// The catalogue built into this binary, checked.
    pub fn embedded() -> Result<Catalogue, CatalogueError> {
        Self::from_files(FILES.iter().map(|(name, text)| (*name, *text)))
    }

    pub fn from_files<'a>(
        files: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> Result<Catalogue, CatalogueError> {
        let mut catalogue = Catalogue {
            streams: Vec::new(),
            subjects: Vec::new(),
            consumers: Vec::new(),
        };
        for (file, text) in files {
            let family: Family = toml::from_str(text).map_err(|error| CatalogueError::Syntax {
                file: file.to_owned(),
                message: error.to_string(),
            })?;
            if format!("{}.toml", family.family) != file {
                return Err(CatalogueError::Syntax {
                    file: file.to_owned(),
                    message: format!(
                        "family `{}` must live in {}.toml",
                        family.family, family.family
                    ),
                });
            }
            catalogue.streams.extend(family.streams);
            catalogue.subjects.extend(family.subjects);
            catalogue.consumers.extend(family.consumers);
        }
        catalogue.check()?;
        Ok(catalogue)
    }

    /// Internal consistency and agreement with the typed builders.
    pub fn check(&self) -> Result<(), CatalogueError> {
        let fail = |message: String| Err(CatalogueError::Inconsistent(message));

        let declared: BTreeSet<(&str, &str)> = self
            .subjects
            .iter()
            .map(|s| (s.builder.as_str(), s.pattern.as_str()))
            .collect();
        let built: BTreeSet<(&str, &str)> = subjects::ALL
            .iter()
            .map(|p| (p.builder, p.pattern))
            .collect();
        if declared.len() != self.subjects.len() {
            return fail("a builder or pattern is declared twice".to_owned());
        }
        if let Some(missing) = built.difference(&declared).next() {
            return fail(format!(
                "code builds {} `{}` but no subjects/*.toml declares it",
                missing.0, missing.1
            ));
        }
        if let Some(extra) = declared.difference(&built).next() {
            return fail(format!(
                "subjects/*.toml declares {} `{}` but src/bus/subjects.rs has no such builder",
                extra.0, extra.1
            ));
        }

        let streams: BTreeMap<&str, &StreamSpec> =
            self.streams.iter().map(|s| (s.name.as_str(), s)).collect();
        if streams.len() != self.streams.len() {
            return fail("a stream is declared twice".to_owned());
        }
        for (a, b) in pairs(&self.streams) {
            for fa in &a.subjects {
                for fb in &b.subjects {
                    if filters_overlap(fa, fb) {
                        return fail(format!(
                            "streams {} and {} overlap on `{fa}` / `{fb}`",
                            a.name, b.name
                        ));
                    }
                }
            }
        }

        for subject in &self.subjects {
            if !is_valid_pattern(&subject.pattern) {
                return fail(format!(
                    "pattern `{}` is not lowercase tokens",
                    subject.pattern
                ));
            }
            let wildcard = subjects::pattern_wildcard(&subject.pattern);
            match (subject.kind, &subject.stream, &subject.queue_group) {
                (SubjectKind::Stream, Some(stream), None) => {
                    let Some(spec) = streams.get(stream.as_str()) else {
                        return fail(format!("{} names unknown stream {stream}", subject.builder));
                    };
                    if !spec.subjects.iter().any(|f| filter_covers(f, &wildcard)) {
                        return fail(format!(
                            "stream {stream} does not capture `{}`",
                            subject.pattern
                        ));
                    }
                }
                (SubjectKind::RequestReply, None, Some(_)) => {
                    if let Some(spec) = self
                        .streams
                        .iter()
                        .find(|s| s.subjects.iter().any(|f| filters_overlap(f, &wildcard)))
                    {
                        return fail(format!(
                            "request-reply `{}` would be captured by stream {}",
                            subject.pattern, spec.name
                        ));
                    }
                }
                _ => {
                    return fail(format!(
                        "{}: a stream subject names a stream, a request-reply subject a queue group",
                        subject.builder
                    ));
                }
            }
        }

        for consumer in &self.consumers {
            let Some(spec) = streams.get(consumer.stream.as_str()) else {
                return fail(format!(
                    "consumer {} names unknown stream {}",
                    consumer.name, consumer.stream
                ));
            };
            if !spec
                .subjects
                .iter()
                .any(|f| filter_covers(f, &consumer.filter_subject))
            {
                return fail(format!(
                    "consumer {} filters `{}` outside stream {}",
                    consumer.name, consumer.filter_subject, consumer.stream
                ));
            }
        }
        Ok(())
    }
}

fn pairs<T>(items: &[T]) -> impl Iterator<Item = (&T, &T)> {
    items
        .iter()
        .enumerate()
        .flat_map(move |(i, a)| items[i + 1..].iter().map(move |b| (a, b)))
}

fn is_valid_pattern(pattern: &str) -> bool {
    pattern.split('.').all(|token| {
        let inner = token
            .strip_prefix('{')
            .and_then(|t| t.strip_suffix('}'))
            .unwrap_or(token);
        !inner.is_empty()
            && inner
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    })
}

/// Whether NATS filter `filter` matches every subject that filter `narrower` matches.
pub fn filter_covers(filter: &str, narrower: &str) -> bool {
    let f: Vec<&str> = filter.split('.').collect();
    let n: Vec<&str> = narrower.split('.').collect();
    for (i, token) in f.iter().enumerate() {
        if *token == ">" {
            return n.len() > i;
        }
        let Some(other) = n.get(i) else {
            return false;
        };
        let ok = match (*token, *other) {
            ("*", ">") => false,
            ("*", _) => true,
            (t, o) => t == o,
        };
        if !ok {
            return false;
        }
    }
    f.len() == n.len()
}

/// Whether some subject matches both filters.
pub fn filters_overlap(a: &str, b: &str) -> bool {
    let a: Vec<&str> = a.split('.').collect();
    let b: Vec<&str> = b.split('.').collect();
    for i in 0..a.len().max(b.len()) {
        match (a.get(i), b.get(i)) {
            (Some(&">"), Some(_)) | (Some(_), Some(&">")) => return true,
            (Some(x), Some(y)) => {
                if *x != "*" && *y != "*" && x != y {
                    return false;
                }
            }
            _ => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalogue_agrees_with_the_builders() {
        // Goal: code and catalogue agree. Method: the embedded catalogue passes `check`, which
        // compares the (builder, pattern) sets; then every example subject from every builder
        // matches exactly one declared pattern, the one of its builder.
        let catalogue = Catalogue::embedded().unwrap();
        for (builder, subject) in subjects::examples() {
            let matching: Vec<&SubjectSpec> = catalogue
                .subjects
                .iter()
                .filter(|s| subjects::pattern_matches(&s.pattern, subject.as_str()))
                .collect();
            assert_eq!(matching.len(), 1, "{subject} matches {matching:?}");
            assert_eq!(matching[0].builder, builder, "{subject}");
        }
    }

    #[test]
    fn every_catalogue_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("subjects");
        let mut on_disk: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|name| name.ends_with(".toml"))
            .collect();
        on_disk.sort();
        let embedded: Vec<String> = FILES.iter().map(|(name, _)| (*name).to_owned()).collect();
        assert_eq!(on_disk, embedded);
    }

    #[test]
    fn a_pattern_the_code_does_not_build_is_refused() {
        let extra = "family = \"extra\"\n[[subjects]]\nbuilder = \"extra\"\npattern = \"ccass.v1.extra\"\nkind = \"request-reply\"\nqueue_group = \"x\"\npayload = \"x\"\nproducers = []\nconsumers = []\n";
        let files = FILES
            .iter()
            .map(|(n, t)| (*n, *t))
            .chain([("extra.toml", extra)]);
        let error = Catalogue::from_files(files).unwrap_err();
        assert!(error.to_string().contains("no such builder"), "{error}");
    }

    #[test]
    fn a_changed_pattern_is_refused() {
        let files = FILES.iter().map(|(n, t)| {
            (*n, if *n == "auth.toml" { "family = \"auth\"\n[[subjects]]\nbuilder = \"auth\"\npattern = \"ccass.v1.authz.{operation}\"\nkind = \"request-reply\"\nqueue_group = \"auth\"\npayload = \"x\"\nproducers = []\nconsumers = []\n" } else { *t })
        });
        let error = Catalogue::from_files(files).unwrap_err();
        assert!(
            error.to_string().contains("ccass.v1.auth.{operation}"),
            "{error}"
        );
    }

    #[test]
    fn filter_algebra() {
        assert!(filter_covers("ccass.v1.inbound.>", "ccass.v1.inbound.*.*"));
        assert!(filter_covers("ccass.v1.outbound.*", "ccass.v1.outbound.*"));
        assert!(!filter_covers("ccass.v1.outbound.*", "ccass.v1.outbound.>"));
        assert!(!filter_covers(
            "ccass.v1.outbound.*",
            "ccass.v1.outbound.a.b"
        ));
        assert!(!filter_covers("ccass.v1.trades.*", "ccass.v1.trades"));
        assert!(filters_overlap("ccass.v1.>", "ccass.v1.auth.*"));
        assert!(!filters_overlap("ccass.v1.events.*.*", "ccass.v1.auth.*"));
        assert!(!filters_overlap("a.*", "a.*.*"));
    }
}
