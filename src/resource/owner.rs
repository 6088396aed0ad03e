//! `owner`/`uid` and `group`/`gid` of a resource: names looked up in the system's user
//! and group databases, numbers taken as they are, both given must agree.

/// Which database a name is looked up in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdKind {
    User,
    Group,
}

impl IdKind {
    /// The resource key that names it (`owner`, `group`) and the one that numbers it.
    pub fn keys(self) -> (&'static str, &'static str) {
        match self {
            IdKind::User => ("owner", "uid"),
            IdKind::Group => ("group", "gid"),
        }
    }

    fn noun(self) -> &'static str {
        match self {
            IdKind::User => "user",
            IdKind::Group => "group",
        }
    }
}

/// An owner or group that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OwnerError {
    #[error("{}: unknown {} {name:?}", .kind.keys().0, .kind.noun())]
    Unknown { kind: IdKind, name: String },
    #[error("{}: cannot look up {} {name:?}: {source}", .kind.keys().0, .kind.noun())]
    Lookup {
        kind: IdKind,
        name: String,
        #[source]
        source: nix::Error,
    },
    #[error("{} {name:?} is {} {by_name}, but {} says {id}", .kind.keys().0, .kind.keys().1, .kind.keys().1)]
    Mismatch {
        kind: IdKind,
        name: String,
        by_name: u32,
        id: u32,
    },
}

/// A numeric id and/or a name for it; both given must agree.
pub fn resolve(
    kind: IdKind,
    id: Option<u32>,
    name: Option<&str>,
) -> Result<Option<u32>, OwnerError> {
    let by_name = match name {
        Some(name) => Some(lookup(kind, name)?),
        None => None,
    };
    match (id, by_name) {
        (Some(id), Some(by_name)) if id != by_name => Err(OwnerError::Mismatch {
            kind,
            name: name.unwrap_or_default().to_string(),
            by_name,
            id,
        }),
        (a, b) => Ok(a.or(b)),
    }
}

fn lookup(kind: IdKind, name: &str) -> Result<u32, OwnerError> {
    let found = match kind {
        IdKind::User => nix::unistd::User::from_name(name).map(|u| u.map(|u| u.uid.as_raw())),
        IdKind::Group => nix::unistd::Group::from_name(name).map(|g| g.map(|g| g.gid.as_raw())),
    };
    match found {
        Ok(Some(id)) => Ok(id),
        Ok(None) => Err(OwnerError::Unknown {
            kind,
            name: name.to_string(),
        }),
        Err(source) => Err(OwnerError::Lookup {
            kind,
            name: name.to_string(),
            source,
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_numbers_must_agree() {
        assert_eq!(resolve(IdKind::User, Some(0), Some("root")), Ok(Some(0)));
        assert_eq!(resolve(IdKind::Group, None, Some("root")), Ok(Some(0)));
        assert_eq!(resolve(IdKind::User, Some(7), None), Ok(Some(7)));
        let err = resolve(IdKind::User, Some(5), Some("root")).expect_err("mismatch");
        assert_eq!(err.to_string(), "owner \"root\" is uid 0, but uid says 5");
        let err = resolve(IdKind::Group, None, Some("no-such-group-here")).expect_err("unknown");
        assert_eq!(
            err.to_string(),
            "group: unknown group \"no-such-group-here\""
        );
    }
}
