//! Roles, authority levels and who may read whom.
//!
//! A context names the roles it is written for; the roles that may open it
//! are those plus every role that may read one of them (an admin reads all,
//! an architect reads developer records). That set, the *reader closure*, is
//! computed in one place ([`RoleSet::reader_closure`]) because encryption,
//! indexing and access checks must agree on it exactly: a record sealed to a
//! smaller set is unreadable by someone allowed to read it, a larger set
//! leaks it.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

/// Longest role name accepted.
pub const MAX_ROLE_LEN: usize = 64;

/// A role name: `[A-Za-z0-9_-]{1,64}`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct RoleName(String);

impl RoleName {
    pub fn new(s: impl Into<String>) -> Result<Self, RoleError> {
        let s = s.into();
        if s.is_empty()
            || s.len() > MAX_ROLE_LEN
            || !s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return Err(RoleError::InvalidName(s.chars().take(80).collect()));
        }
        Ok(RoleName(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for RoleName {
    type Error = RoleError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        RoleName::new(s)
    }
}

impl From<RoleName> for String {
    fn from(r: RoleName) -> String {
        r.0
    }
}

impl fmt::Display for RoleName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::str::FromStr for RoleName {
    type Err = RoleError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RoleName::new(s)
    }
}

/// What a role may decide, from most to least.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum Authority {
    Master,
    Decision,
    Coordination,
    Suggestion,
    #[default]
    ReadOnly,
}

/// Problems with roles and the roles file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RoleError {
    #[error("invalid role name {0:?}: 1 to 64 characters of [A-Za-z0-9_-]")]
    InvalidName(String),
    #[error("unknown role {0:?}")]
    Unknown(String),
    #[error("role {role:?} reads unknown role {target:?}")]
    UnknownReadTarget { role: String, target: String },
    #[error("roles file: {0}")]
    Parse(String),
    #[error("roles file defines no roles")]
    Empty,
}

/// One role as written in the roles file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleDef {
    #[serde(default)]
    pub authority: Authority,
    /// Roles whose records this role may read (itself is implied). The
    /// single entry `"*"` means every role.
    #[serde(default)]
    pub reads: Vec<String>,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RolesFile {
    roles: BTreeMap<String, RoleDef>,
}

/// The validated role hierarchy.
///
/// `reads` is transitive: if admin reads architect and architect reads
/// developer, admin reads developer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleSet {
    defs: BTreeMap<RoleName, RoleDef>,
    /// role → every role it may read (itself included), transitively.
    can_read: BTreeMap<RoleName, BTreeSet<RoleName>>,
}

/// The default roles file.
pub const DEFAULT_ROLES_TOML: &str = r#"
[roles.admin]
authority = "master"
reads = ["*"]
description = "Reads every record; holds the master key."

[roles.architect]
authority = "decision"
reads = ["architect", "developer", "observer"]
description = "Makes design decisions; reads developer and observer records."

[roles.developer]
authority = "suggestion"
reads = ["developer"]
description = "Writes and reads developer records."

[roles.observer]
authority = "read_only"
reads = ["observer"]
description = "Reads records written for observers."
"#;

impl Default for RoleSet {
    fn default() -> Self {
        RoleSet::from_toml(DEFAULT_ROLES_TOML).expect("default roles file is valid")
    }
}

impl RoleSet {
    /// Parses and validates a roles file.
    pub fn from_toml(text: &str) -> Result<Self, RoleError> {
        let file: RolesFile = toml::from_str(text).map_err(|e| RoleError::Parse(e.to_string()))?;
        let mut defs = BTreeMap::new();
        for (name, def) in file.roles {
            defs.insert(RoleName::new(name)?, def);
        }
        Self::from_defs(defs)
    }

    /// Builds the set from definitions, checking every `reads` target exists.
    pub fn from_defs(defs: BTreeMap<RoleName, RoleDef>) -> Result<Self, RoleError> {
        if defs.is_empty() {
            return Err(RoleError::Empty);
        }
        let all: BTreeSet<RoleName> = defs.keys().cloned().collect();
        let mut direct: BTreeMap<RoleName, BTreeSet<RoleName>> = BTreeMap::new();
        for (name, def) in &defs {
            let mut set = BTreeSet::from([name.clone()]);
            for target in &def.reads {
                if target == "*" {
                    set.extend(all.iter().cloned());
                    continue;
                }
                let t = RoleName::new(target.clone())?;
                if !all.contains(&t) {
                    return Err(RoleError::UnknownReadTarget {
                        role: name.to_string(),
                        target: target.clone(),
                    });
                }
                set.insert(t);
            }
            direct.insert(name.clone(), set);
        }
        // Transitive closure: few roles, so a fixed-point loop is plenty.
        let mut can_read = direct.clone();
        loop {
            let mut changed = false;
            for name in all.iter() {
                let reach: BTreeSet<RoleName> = can_read[name]
                    .iter()
                    .flat_map(|r| can_read[r].iter().cloned())
                    .collect();
                let entry = can_read.get_mut(name).expect("every role has an entry");
                let before = entry.len();
                entry.extend(reach);
                changed |= entry.len() != before;
            }
            if !changed {
                break;
            }
        }
        Ok(RoleSet { defs, can_read })
    }

    /// The roles file text of this set.
    pub fn to_toml(&self) -> String {
        let file = RolesFile {
            roles: self
                .defs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect(),
        };
        toml::to_string_pretty(&file).unwrap_or_default()
    }

    pub fn roles(&self) -> impl Iterator<Item = &RoleName> {
        self.defs.keys()
    }

    pub fn contains(&self, role: &RoleName) -> bool {
        self.defs.contains_key(role)
    }

    /// Looks a role up by name.
    pub fn get(&self, name: &str) -> Result<RoleName, RoleError> {
        let r = RoleName::new(name)?;
        if self.defs.contains_key(&r) {
            Ok(r)
        } else {
            Err(RoleError::Unknown(name.to_string()))
        }
    }

    pub fn authority(&self, role: &RoleName) -> Option<Authority> {
        self.defs.get(role).map(|d| d.authority)
    }

    /// Whether `reader` may read records written for `target`.
    pub fn may_read(&self, reader: &RoleName, target: &RoleName) -> bool {
        self.can_read
            .get(reader)
            .is_some_and(|set| set.contains(target))
    }

    /// Whether `reader` may read a record whose listed roles are `listed`.
    pub fn may_read_any(&self, reader: &RoleName, listed: &[RoleName]) -> bool {
        listed.iter().any(|t| self.may_read(reader, t))
    }

    /// The reader closure of a record: the roles listed on it plus every role
    /// that may read one of them. Sorted, without duplicates. Unknown roles
    /// are an error.
    pub fn reader_closure(&self, listed: &[RoleName]) -> Result<Vec<RoleName>, RoleError> {
        for r in listed {
            if !self.contains(r) {
                return Err(RoleError::Unknown(r.to_string()));
            }
        }
        Ok(self
            .can_read
            .iter()
            .filter(|(_, reads)| listed.iter().any(|l| reads.contains(l)))
            .map(|(r, _)| r.clone())
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn r(s: &str) -> RoleName {
        RoleName::new(s).unwrap()
    }

    #[test]
    fn default_hierarchy() {
        let set = RoleSet::default();
        assert!(set.may_read(&r("admin"), &r("developer")));
        assert!(set.may_read(&r("architect"), &r("developer")));
        assert!(!set.may_read(&r("developer"), &r("architect")));
        assert!(!set.may_read(&r("observer"), &r("developer")));
        assert_eq!(
            set.reader_closure(&[r("developer")]).unwrap(),
            vec![r("admin"), r("architect"), r("developer")]
        );
        assert_eq!(
            set.reader_closure(&[r("architect")]).unwrap(),
            vec![r("admin"), r("architect")]
        );
        assert_eq!(
            set.reader_closure(&[r("observer")]).unwrap(),
            vec![r("admin"), r("architect"), r("observer")]
        );
        assert_eq!(set.authority(&r("admin")), Some(Authority::Master));
        assert!(matches!(
            set.reader_closure(&[r("ghost")]),
            Err(RoleError::Unknown(_))
        ));
    }

    #[test]
    fn reads_are_transitive() {
        let set = RoleSet::from_toml(
            r#"
            [roles.lead]
            reads = ["senior"]
            [roles.senior]
            reads = ["junior"]
            [roles.junior]
            "#,
        )
        .unwrap();
        assert!(set.may_read(&r("lead"), &r("junior")));
        assert_eq!(
            set.reader_closure(&[r("junior")]).unwrap(),
            vec![r("junior"), r("lead"), r("senior")]
        );
    }

    #[test]
    fn bad_files_are_typed_errors() {
        assert!(matches!(
            RoleSet::from_toml("[roles.a]\nreads=[\"b\"]"),
            Err(RoleError::UnknownReadTarget { .. })
        ));
        assert!(matches!(
            RoleSet::from_toml("[roles.\"a b\"]"),
            Err(RoleError::InvalidName(_))
        ));
        assert!(matches!(
            RoleSet::from_toml("roles = {}"),
            Err(RoleError::Empty)
        ));
        assert!(matches!(
            RoleSet::from_toml("[roles.a]\nauthority=\"king\""),
            Err(RoleError::Parse(_))
        ));
        let round = RoleSet::from_toml(&RoleSet::default().to_toml()).unwrap();
        assert_eq!(round, RoleSet::default());
    }

    proptest! {
        /// Every role in the closure may read a listed role, and every role
        /// that may read a listed role is in the closure.
        #[test]
        fn closure_is_exact(edges in proptest::collection::vec((0usize..6, 0usize..6), 0..20),
                            listed in proptest::collection::btree_set(0usize..6, 1..4)) {
            let names: Vec<String> = (0..6).map(|i| format!("r{i}")).collect();
            let mut defs = BTreeMap::new();
            for n in &names {
                defs.insert(r(n), RoleDef { authority: Authority::ReadOnly, reads: vec![], description: String::new() });
            }
            for (a, b) in edges {
                defs.get_mut(&r(&names[a])).unwrap().reads.push(names[b].clone());
            }
            let set = RoleSet::from_defs(defs).unwrap();
            let listed: Vec<RoleName> = listed.into_iter().map(|i| r(&names[i])).collect();
            let closure = set.reader_closure(&listed).unwrap();
            for role in set.roles() {
                prop_assert_eq!(closure.contains(role), set.may_read_any(role, &listed));
            }
            for l in &listed {
                prop_assert!(closure.contains(l));
            }
        }
    }
}
