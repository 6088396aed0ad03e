//! Which template language a resource's template is written in: `tera` (conflux's
//! own) or `go` (confd's Go `text/template`). Chosen per resource (`engine = "go"`)
//! with a global default (`--template-engine`, `template_engine`). Rendering with
//! each is [`super`]'s job.

use std::fmt;
use std::str::FromStr;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum Engine {
    /// Tera 2 templates, with confd's functions taking keyword arguments.
    #[default]
    Tera,
    /// Go `text/template`, as confd renders it.
    Go,
}

impl Engine {
    pub const ALL: [Engine; 2] = [Engine::Tera, Engine::Go];

    pub fn as_str(self) -> &'static str {
        match self {
            Engine::Tera => "tera",
            Engine::Go => "go",
        }
    }
}

impl fmt::Display for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown template engine {0:?}: expected \"go\" or \"tera\"")]
pub struct UnknownEngine(pub String);

impl FromStr for Engine {
    type Err = UnknownEngine;

    fn from_str(s: &str) -> Result<Engine, UnknownEngine> {
        match s {
            "tera" => Ok(Engine::Tera),
            "go" => Ok(Engine::Go),
            other => Err(UnknownEngine(other.to_string())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_names_and_refuses_others() {
        assert_eq!("go".parse(), Ok(Engine::Go));
        assert_eq!("tera".parse(), Ok(Engine::Tera));
        let err = "jinja".parse::<Engine>().unwrap_err().to_string();
        assert_eq!(
            err,
            r#"unknown template engine "jinja": expected "go" or "tera""#
        );
        assert_eq!(Engine::Go.to_string(), "go");
    }
}
