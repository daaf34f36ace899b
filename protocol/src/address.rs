//! UCXL addresses: the names contexts are stored under.
//!
//! An address is `ucxl://agent:role@project:task/TEMPORAL/path`. The four
//! name segments and the path say *what* a context is about; the temporal
//! part says *which version* a reader wants. The store keys records by the
//! address without its temporal part ([`UcxlAddress::key`]), so every version
//! of one context lives under one key, and a reader's temporal selector is
//! applied to that key's history.
//!
//! A segment may be the wildcard `any`; such an address is a *pattern* for
//! list and search and can never name a stored record
//! ([`UcxlAddress::is_pattern`]).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The URI scheme every address starts with.
pub const SCHEME: &str = "ucxl://";

/// Longest address accepted, in bytes. Addresses are keys in every table and
/// on the wire; a bound keeps keys small and parsing cheap.
pub const MAX_ADDRESS_LEN: usize = 1024;

/// The wildcard segment.
pub const ANY: &str = "any";

/// Which field of an address a parse error is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AddressField {
    Scheme,
    Agent,
    Role,
    Project,
    Task,
    Temporal,
    Path,
    Whole,
}

impl fmt::Display for AddressField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            AddressField::Scheme => "scheme",
            AddressField::Agent => "agent",
            AddressField::Role => "role",
            AddressField::Project => "project",
            AddressField::Task => "task",
            AddressField::Temporal => "temporal",
            AddressField::Path => "path",
            AddressField::Whole => "address",
        })
    }
}

/// A malformed address: names the field and quotes the offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid UCXL address {field}: {reason} (in {input:?})")]
pub struct AddressError {
    /// The field that failed.
    pub field: AddressField,
    /// The part of the input that was rejected (bounded to 128 bytes).
    pub input: String,
    /// What is wrong with it.
    pub reason: String,
}

impl AddressError {
    fn new(field: AddressField, input: &str, reason: impl Into<String>) -> Self {
        let mut end = input.len().min(128);
        while !input.is_char_boundary(end) {
            end -= 1;
        }
        AddressError {
            field,
            input: input[..end].to_string(),
            reason: reason.into(),
        }
    }
}

/// One of the four name segments: a concrete name or the wildcard `any`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Segment {
    Any,
    Name(String),
}

impl Segment {
    /// Parses a segment: `[A-Za-z0-9_-]+` or `any`.
    pub fn parse(field: AddressField, s: &str) -> Result<Self, AddressError> {
        if s.is_empty() {
            return Err(AddressError::new(field, s, "must not be empty"));
        }
        if let Some(bad) = s
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
        {
            return Err(AddressError::new(
                field,
                s,
                format!("character {bad:?} not allowed; use [A-Za-z0-9_-]"),
            ));
        }
        Ok(if s == ANY {
            Segment::Any
        } else {
            Segment::Name(s.to_string())
        })
    }

    /// Whether `other` (a concrete segment) matches this one (possibly `any`).
    pub fn matches(&self, other: &Segment) -> bool {
        match self {
            Segment::Any => true,
            Segment::Name(n) => matches!(other, Segment::Name(o) if o == n),
        }
    }

    pub fn as_str(&self) -> &str {
        match self {
            Segment::Any => ANY,
            Segment::Name(n) => n,
        }
    }
}

impl fmt::Display for Segment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which version of a context a reader asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Temporal {
    /// `*^`: the newest version.
    #[default]
    Latest,
    /// `*~`: any version (history and list use it).
    Any,
    /// `*~N`: version N, counting from 1 in the address's history order.
    Version(u64),
    /// `~~N`: N versions before the newest (`~~0` is the newest).
    Back(u64),
    /// `^^N`: N versions after the oldest (`^^0` is the first version).
    Forward(u64),
}

impl Temporal {
    fn parse(s: &str) -> Result<Self, AddressError> {
        let num = |digits: &str| -> Result<u64, AddressError> {
            if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
                return Err(AddressError::new(
                    AddressField::Temporal,
                    s,
                    "expected a decimal number after the selector",
                ));
            }
            digits.parse::<u64>().map_err(|_| {
                AddressError::new(AddressField::Temporal, s, "number does not fit in 64 bits")
            })
        };
        match s {
            "*^" => Ok(Temporal::Latest),
            "*~" => Ok(Temporal::Any),
            _ if s.starts_with("*~") => {
                let n = num(&s[2..])?;
                if n == 0 {
                    return Err(AddressError::new(
                        AddressField::Temporal,
                        s,
                        "versions are numbered from 1",
                    ));
                }
                Ok(Temporal::Version(n))
            }
            _ if s.starts_with("~~") => Ok(Temporal::Back(num(&s[2..])?)),
            _ if s.starts_with("^^") => Ok(Temporal::Forward(num(&s[2..])?)),
            _ => Err(AddressError::new(
                AddressField::Temporal,
                s,
                "expected one of *^, *~, *~N, ~~N, ^^N",
            )),
        }
    }

    /// Picks the index into a history of `len` versions (oldest first) that
    /// this selector names, or `None` when it names no version. `Any`
    /// resolves like `Latest`.
    pub fn select(&self, len: usize) -> Option<usize> {
        if len == 0 {
            return None;
        }
        let len64 = len as u64;
        let idx = match *self {
            Temporal::Latest | Temporal::Any => len64 - 1,
            Temporal::Version(n) => n.checked_sub(1).filter(|i| *i < len64)?,
            Temporal::Back(n) => (len64 - 1).checked_sub(n)?,
            Temporal::Forward(n) => Some(n).filter(|i| *i < len64)?,
        };
        Some(idx as usize)
    }
}

impl fmt::Display for Temporal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Temporal::Latest => f.write_str("*^"),
            Temporal::Any => f.write_str("*~"),
            Temporal::Version(n) => write!(f, "*~{n}"),
            Temporal::Back(n) => write!(f, "~~{n}"),
            Temporal::Forward(n) => write!(f, "^^{n}"),
        }
    }
}

/// A parsed UCXL address.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UcxlAddress {
    pub agent: Segment,
    pub role: Segment,
    pub project: Segment,
    pub task: Segment,
    pub temporal: Temporal,
    /// The path, without a leading slash; may be empty.
    pub path: String,
}

fn validate_path(path: &str) -> Result<(), AddressError> {
    if let Some(bad) = path
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '/' | '.')))
    {
        return Err(AddressError::new(
            AddressField::Path,
            path,
            format!("character {bad:?} not allowed; use [A-Za-z0-9_-/.]"),
        ));
    }
    Ok(())
}

impl UcxlAddress {
    /// Builds a concrete address at the latest version.
    pub fn new(
        agent: &str,
        role: &str,
        project: &str,
        task: &str,
        path: &str,
    ) -> Result<Self, AddressError> {
        validate_path(path)?;
        let addr = UcxlAddress {
            agent: Segment::parse(AddressField::Agent, agent)?,
            role: Segment::parse(AddressField::Role, role)?,
            project: Segment::parse(AddressField::Project, project)?,
            task: Segment::parse(AddressField::Task, task)?,
            temporal: Temporal::Latest,
            path: path.trim_start_matches('/').to_string(),
        };
        addr.check_len()?;
        Ok(addr)
    }

    /// Parses `ucxl://agent:role@project:task/TEMPORAL/path`.
    pub fn parse(input: &str) -> Result<Self, AddressError> {
        if input.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::new(
                AddressField::Whole,
                input,
                format!("longer than {MAX_ADDRESS_LEN} bytes"),
            ));
        }
        let rest = input.strip_prefix(SCHEME).ok_or_else(|| {
            AddressError::new(AddressField::Scheme, input, "must start with ucxl://")
        })?;
        let (authority, rest) = rest.split_once('/').ok_or_else(|| {
            AddressError::new(
                AddressField::Temporal,
                rest,
                "missing /TEMPORAL after project:task",
            )
        })?;
        let (who, what) = authority.split_once('@').ok_or_else(|| {
            AddressError::new(
                AddressField::Whole,
                authority,
                "expected agent:role@project:task",
            )
        })?;
        let (agent, role) = who.split_once(':').ok_or_else(|| {
            AddressError::new(AddressField::Role, who, "expected agent:role before @")
        })?;
        let (project, task) = what.split_once(':').ok_or_else(|| {
            AddressError::new(AddressField::Task, what, "expected project:task after @")
        })?;
        let (temporal, path) = match rest.split_once('/') {
            Some((t, p)) => (t, p),
            None => (rest, ""),
        };
        validate_path(path)?;
        Ok(UcxlAddress {
            agent: Segment::parse(AddressField::Agent, agent)?,
            role: Segment::parse(AddressField::Role, role)?,
            project: Segment::parse(AddressField::Project, project)?,
            task: Segment::parse(AddressField::Task, task)?,
            temporal: Temporal::parse(temporal)?,
            path: path.to_string(),
        })
    }

    fn check_len(&self) -> Result<(), AddressError> {
        let s = self.to_string();
        if s.len() > MAX_ADDRESS_LEN {
            return Err(AddressError::new(
                AddressField::Whole,
                &s,
                format!("longer than {MAX_ADDRESS_LEN} bytes"),
            ));
        }
        Ok(())
    }

    /// Whether any segment is the wildcard `any`.
    pub fn is_pattern(&self) -> bool {
        [&self.agent, &self.role, &self.project, &self.task]
            .iter()
            .any(|s| matches!(s, Segment::Any))
    }

    /// The storage key: the address without its temporal part,
    /// `ucxl://agent:role@project:task/path`. Every version of a context
    /// shares it.
    pub fn key(&self) -> String {
        format!(
            "{SCHEME}{}:{}@{}:{}/{}",
            self.agent, self.role, self.project, self.task, self.path
        )
    }

    /// The latest-version address of a storage key (the inverse of
    /// [`UcxlAddress::key`]).
    pub fn from_key(key: &str) -> Result<Self, AddressError> {
        let rest = key.strip_prefix(SCHEME).ok_or_else(|| {
            AddressError::new(AddressField::Scheme, key, "must start with ucxl://")
        })?;
        let (authority, path) = rest.split_once('/').ok_or_else(|| {
            AddressError::new(
                AddressField::Path,
                rest,
                "a key needs /path after project:task",
            )
        })?;
        UcxlAddress::parse(&format!("{SCHEME}{authority}/*^/{path}"))
    }

    /// The same address with another temporal selector.
    pub fn with_temporal(&self, temporal: Temporal) -> Self {
        UcxlAddress {
            temporal,
            ..self.clone()
        }
    }

    /// Whether the concrete address `other` matches this pattern: every
    /// segment matches (wildcards match anything) and the path of `other`
    /// starts with this path (an empty path matches every path).
    pub fn matches(&self, other: &UcxlAddress) -> bool {
        self.agent.matches(&other.agent)
            && self.role.matches(&other.role)
            && self.project.matches(&other.project)
            && self.task.matches(&other.task)
            && path_has_prefix(&other.path, &self.path)
    }

    /// The parent path (`src/auth/login.rs` → `src/auth`), or `None` at the
    /// root.
    pub fn parent_path(&self) -> Option<&str> {
        parent_path(&self.path)
    }
}

/// Whether `path` equals `prefix` or lies under it as a directory. An empty
/// prefix matches every path.
pub fn path_has_prefix(path: &str, prefix: &str) -> bool {
    let prefix = prefix.trim_end_matches('/');
    if prefix.is_empty() {
        return true;
    }
    match path.strip_prefix(prefix) {
        Some("") => true,
        Some(rest) => rest.starts_with('/'),
        None => false,
    }
}

/// The parent of a slash-separated path, or `None` for the root (empty path).
pub fn parent_path(path: &str) -> Option<&str> {
    let path = path.trim_end_matches('/');
    if path.is_empty() {
        return None;
    }
    Some(match path.rfind('/') {
        Some(i) => &path[..i],
        None => "",
    })
}

impl fmt::Display for UcxlAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{SCHEME}{}:{}@{}:{}/{}/{}",
            self.agent, self.role, self.project, self.task, self.temporal, self.path
        )
    }
}

impl FromStr for UcxlAddress {
    type Err = AddressError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        UcxlAddress::parse(s)
    }
}

impl Serialize for UcxlAddress {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for UcxlAddress {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        UcxlAddress::parse(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn parses_the_example() {
        let a =
            UcxlAddress::parse("ucxl://claude:architect@bzzz:v2-migration/*^/src/main.go").unwrap();
        assert_eq!(a.agent, Segment::Name("claude".into()));
        assert_eq!(a.role, Segment::Name("architect".into()));
        assert_eq!(a.project, Segment::Name("bzzz".into()));
        assert_eq!(a.task, Segment::Name("v2-migration".into()));
        assert_eq!(a.temporal, Temporal::Latest);
        assert_eq!(a.path, "src/main.go");
        assert_eq!(
            a.key(),
            "ucxl://claude:architect@bzzz:v2-migration/src/main.go"
        );
        assert!(!a.is_pattern());
    }

    #[test]
    fn temporal_forms() {
        for (s, t) in [
            ("*^", Temporal::Latest),
            ("*~", Temporal::Any),
            ("*~3", Temporal::Version(3)),
            ("~~2", Temporal::Back(2)),
            ("^^0", Temporal::Forward(0)),
        ] {
            let a = UcxlAddress::parse(&format!("ucxl://a:b@c:d/{s}/x")).unwrap();
            assert_eq!(a.temporal, t, "{s}");
        }
    }

    #[test]
    fn errors_name_the_field_and_quote_input() {
        let cases = [
            ("http://a:b@c:d/*^/x", AddressField::Scheme),
            ("ucxl://a b:b@c:d/*^/x", AddressField::Agent),
            ("ucxl://a:b!@c:d/*^/x", AddressField::Role),
            ("ucxl://a:b@:d/*^/x", AddressField::Project),
            ("ucxl://a:b@c:d$/*^/x", AddressField::Task),
            ("ucxl://a:b@c:d/*x/x", AddressField::Temporal),
            ("ucxl://a:b@c:d/*~0/x", AddressField::Temporal),
            ("ucxl://a:b@c:d/~~/x", AddressField::Temporal),
            ("ucxl://a:b@c:d/*^/x y", AddressField::Path),
            ("ucxl://a:b@c:d", AddressField::Temporal),
        ];
        for (input, field) in cases {
            let e = UcxlAddress::parse(input).unwrap_err();
            assert_eq!(e.field, field, "{input}: {e}");
            assert!(!e.input.is_empty() || field == AddressField::Project, "{e}");
            assert!(e.to_string().contains(&field.to_string()));
        }
        let e = UcxlAddress::parse("ucxl://a:b@c:d/*^/x y").unwrap_err();
        assert!(e.to_string().contains("\"x y\""), "{e}");
    }

    #[test]
    fn too_long_is_rejected() {
        let long = format!("ucxl://a:b@c:d/*^/{}", "x".repeat(MAX_ADDRESS_LEN));
        assert_eq!(
            UcxlAddress::parse(&long).unwrap_err().field,
            AddressField::Whole
        );
    }

    #[test]
    fn patterns_match() {
        let p = UcxlAddress::parse("ucxl://any:developer@bzzz:any/*~/src").unwrap();
        assert!(p.is_pattern());
        let yes = UcxlAddress::parse("ucxl://claude:developer@bzzz:t1/*^/src/main.rs").unwrap();
        let no_path = UcxlAddress::parse("ucxl://claude:developer@bzzz:t1/*^/srcx").unwrap();
        let no_role = UcxlAddress::parse("ucxl://claude:architect@bzzz:t1/*^/src").unwrap();
        assert!(p.matches(&yes));
        assert!(!p.matches(&no_path));
        assert!(!p.matches(&no_role));
    }

    #[test]
    fn temporal_select() {
        assert_eq!(Temporal::Latest.select(3), Some(2));
        assert_eq!(Temporal::Latest.select(0), None);
        assert_eq!(Temporal::Version(1).select(3), Some(0));
        assert_eq!(Temporal::Version(4).select(3), None);
        assert_eq!(Temporal::Back(0).select(3), Some(2));
        assert_eq!(Temporal::Back(2).select(3), Some(0));
        assert_eq!(Temporal::Back(3).select(3), None);
        assert_eq!(Temporal::Forward(2).select(3), Some(2));
        assert_eq!(Temporal::Forward(3).select(3), None);
    }

    #[test]
    fn parents() {
        assert_eq!(parent_path("src/auth/login.rs"), Some("src/auth"));
        assert_eq!(parent_path("src"), Some(""));
        assert_eq!(parent_path(""), None);
        assert!(path_has_prefix("src/a", "src"));
        assert!(path_has_prefix("src", "src/"));
        assert!(!path_has_prefix("srcs", "src"));
    }

    fn segment() -> impl Strategy<Value = String> {
        prop_oneof![Just("any".to_string()), "[A-Za-z0-9_-]{1,12}"]
    }

    fn temporal() -> impl Strategy<Value = Temporal> {
        prop_oneof![
            Just(Temporal::Latest),
            Just(Temporal::Any),
            (1u64..).prop_map(Temporal::Version),
            any::<u64>().prop_map(Temporal::Back),
            any::<u64>().prop_map(Temporal::Forward),
        ]
    }

    proptest! {
        #[test]
        fn display_parse_round_trip(
            a in segment(), r in segment(), p in segment(), t in segment(),
            tm in temporal(), path in "[A-Za-z0-9_./-]{0,40}"
        ) {
            let addr = UcxlAddress {
                agent: Segment::parse(AddressField::Agent, &a).unwrap(),
                role: Segment::parse(AddressField::Role, &r).unwrap(),
                project: Segment::parse(AddressField::Project, &p).unwrap(),
                task: Segment::parse(AddressField::Task, &t).unwrap(),
                temporal: tm,
                path,
            };
            let shown = addr.to_string();
            prop_assert_eq!(
                UcxlAddress::from_key(&addr.key()).unwrap(),
                addr.with_temporal(Temporal::Latest)
            );
            let back = UcxlAddress::parse(&shown).unwrap();
            prop_assert_eq!(&back, &addr);
            prop_assert_eq!(back.to_string(), shown);
        }

        #[test]
        fn parse_never_panics(s in ".{0,200}") {
            let _ = UcxlAddress::parse(&s);
        }

        #[test]
        fn parse_never_panics_near_valid(s in "ucxl://[a-z:@*^~0-9/]{0,40}") {
            if let Ok(a) = UcxlAddress::parse(&s) {
                prop_assert_eq!(UcxlAddress::parse(&a.to_string()).unwrap(), a);
            }
        }
    }
}
