//! confd's flags that are not conflux's own: those of backends conflux does not
//! have ([`ForeignFlags`], accepted and named in one warning), and the check that
//! names an unknown single-dash flag as typed. The rest of the command line is
//! [`super`]'s.

use std::ffi::OsString;

use super::normalize::long_flags;

/// confd's flags for backends conflux does not implement. Each is accepted so that a
/// confd command line or unit keeps starting; [`crate::config`] warns once, naming
/// those given.
#[derive(Debug, Clone, Default, clap::Args)]
#[command(next_help_heading = "Accepted for confd compatibility, ignored (backends conflux lacks)")]
pub struct ForeignFlags {
    /// confd: bearer token (vault, consul)
    #[arg(long, value_name = "TOKEN", hide_env_values = true)]
    pub auth_token: Option<String>,
    /// confd: vault auth backend type
    #[arg(long, value_name = "TYPE")]
    pub auth_type: Option<String>,
    /// confd: vault app-id
    #[arg(long, value_name = "ID")]
    pub app_id: Option<String>,
    /// confd: vault user-id
    #[arg(long, value_name = "ID")]
    pub user_id: Option<String>,
    /// confd: vault role-id
    #[arg(long, value_name = "ID")]
    pub role_id: Option<String>,
    /// confd: vault secret-id
    #[arg(long, value_name = "ID")]
    pub secret_id: Option<String>,
    /// confd: vault mount path of the auth method
    #[arg(long, value_name = "PATH")]
    pub path: Option<String>,
    /// confd: DynamoDB table
    #[arg(long, value_name = "TABLE")]
    pub table: Option<String>,
    /// confd: redis key separator
    #[arg(long, value_name = "SEP")]
    pub separator: Option<String>,
}

impl ForeignFlags {
    /// The flags given, as confd spells them (`-auth-type`).
    pub fn given(&self) -> Vec<&'static str> {
        [
            ("-auth-token", self.auth_token.is_some()),
            ("-auth-type", self.auth_type.is_some()),
            ("-app-id", self.app_id.is_some()),
            ("-user-id", self.user_id.is_some()),
            ("-role-id", self.role_id.is_some()),
            ("-secret-id", self.secret_id.is_some()),
            ("-path", self.path.is_some()),
            ("-table", self.table.is_some()),
            ("-separator", self.separator.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

/// The first single-dash word longer than one letter that the rewrite left alone:
/// an unknown flag in confd's spelling. clap would read `-bogus` as the short
/// flags `-b -o …` and name `-b`; the flag as typed is what the user must see.
pub(super) fn unknown_flag(args: &[OsString]) -> Option<String> {
    use clap::CommandFactory;
    // The top level's flags: a subcommand's are judged by clap after its name.
    let flags = long_flags(&super::Cli::command());
    let mut value_expected = false;
    for arg in args.iter().skip(1) {
        let text = arg.to_str().unwrap_or("");
        if std::mem::take(&mut value_expected) {
            continue;
        }
        if text == "--" {
            return None;
        }
        if let Some(long) = text.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            value_expected = !inline && flags.iter().any(|(n, v)| n == name && *v);
            continue;
        }
        // A bare word is a subcommand (or an error clap reports): what follows is
        // its own to judge.
        let body = text.strip_prefix('-')?;
        // `-5` is a value, `-h` and `-V` are clap's own short flags.
        if body.chars().count() > 1 && body.parse::<f64>().is_err() {
            return Some(text.split('=').next().unwrap_or(text).to_string());
        }
    }
    None
}
