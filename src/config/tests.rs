//! Tests of merging and validating the configuration layers.

use super::*;

fn cli(args: &[&str]) -> Cli {
    crate::cli::parse_from(std::iter::once("conflux").chain(args.iter().copied())).expect("parses")
}

fn raw(text: &str) -> RawConfig {
    parse_config(Path::new("conflux.toml"), text).expect("valid")
}

#[test]
fn defaults() {
    let c = merge(&Cli::default(), RawConfig::default()).expect("valid");
    assert_eq!(c.confdir, PathBuf::from("/etc/conflux"));
    assert_eq!(c.mode, Mode::Interval(Duration::from_secs(600)));
    assert_eq!(c.prefix, "/");
    match c.backend {
        BackendConfig::Etcd(e) => assert_eq!(e.nodes, vec![DEFAULT_NODE]),
        other => panic!("{other:?}"),
    }
}

#[test]
fn command_line_beats_config_file() {
    let file = raw("backend = \"env\"\nprefix = \"/file\"\ninterval = 5\nlog-level = \"debug\"\n");
    let c = merge(&cli(&["--prefix", "/flag", "--backend", "env"]), file).expect("valid");
    assert_eq!(c.prefix, "/flag");
    assert_eq!(c.mode, Mode::Interval(Duration::from_secs(5)));
    assert_eq!(c.log_level, tracing::Level::DEBUG);
}

#[test]
fn confd_keys_are_accepted() {
    let file = raw(
        "backend = \"etcdv3\"\nnodes = [\"http://a:2379\"]\nsync-only = true\nkeepstagefile = true\n\
         client_cakeys = \"/ca.pem\"\nbasic_auth = true\nusername = \"u\"\npassword = \"p\"\nwatch = true\n",
    );
    let c = merge(&Cli::default(), file).expect("valid");
    assert!(c.sync_only && c.keep_stage_file);
    assert_eq!(c.mode, Mode::Watch);
    match c.backend {
        BackendConfig::Etcd(e) => {
            assert_eq!(e.nodes, vec!["http://a:2379"]);
            assert_eq!(e.client_ca_keys, Some(PathBuf::from("/ca.pem")));
            assert_eq!(e.username.as_deref(), Some("u"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn unknown_key_names_key_file_and_line() {
    let err = parse_config(
        Path::new("/etc/conflux/conflux.toml"),
        "backend = \"env\"\nbogus = 1\n",
    )
    .expect_err("rejected")
    .to_string();
    assert!(err.contains("/etc/conflux/conflux.toml"), "{err}");
    assert!(err.contains("bogus"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[test]
fn onetime_beats_watch() {
    let c = merge(
        &cli(&["--onetime", "--watch", "--backend", "env"]),
        RawConfig::default(),
    )
    .expect("valid");
    assert_eq!(c.mode, Mode::Onetime);
}

#[test]
fn bad_values_are_configuration_errors() {
    assert!(merge(&cli(&["--backend", "consul"]), RawConfig::default()).is_err());
    assert!(merge(&cli(&["--backend", "file"]), RawConfig::default()).is_err());
    assert!(merge(&cli(&["--log-level", "loud"]), RawConfig::default()).is_err());
}

#[test]
fn started_as_confd_the_defaults_are_confds() {
    let as_confd = Cli {
        as_confd: true,
        ..Cli::default()
    };
    let c = merge(&as_confd, RawConfig::default()).expect("valid");
    assert_eq!(c.confdir, PathBuf::from("/etc/confd"));
    assert_eq!(c.template_engine, Engine::Go);
    let c = merge(&Cli::default(), RawConfig::default()).expect("valid");
    assert_eq!(c.template_engine, Engine::Tera);
    let c = merge(&cli(&["--template-engine", "tera"]), RawConfig::default()).expect("valid");
    assert_eq!(c.template_engine, Engine::Tera);
    assert!(merge(&cli(&["--template-engine", "jinja"]), RawConfig::default()).is_err());
}

/// confd's configuration guide's example, and every key of that guide.
#[test]
fn confds_example_and_every_confd_key_are_accepted() {
    let file = raw(
        "backend = \"etcd\"\nclient_cert = \"/etc/confd/ssl/client.crt\"\n\
         client_key = \"/etc/confd/ssl/client.key\"\nconfdir = \"/etc/confd\"\n\
         log-level = \"debug\"\ninterval = 600\nnodes = [\n  \"http://127.0.0.1:4001\",\n]\n\
         noop = false\nprefix = \"/production\"\nscheme = \"https\"\nsrv_domain = \"etcd.example.com\"\n\
         srv_record = \"\"\nsync-only = false\nwatch = false\nauth_token = \"t\"\nauth_type = \"x\"\n\
         basic_auth = true\ntable = \"t\"\nseparator = \"_\"\nusername = \"u\"\npassword = \"p\"\n\
         app_id = \"a\"\nuser_id = \"u\"\nrole_id = \"r\"\nsecret_id = \"s\"\nfile = [\"a.yaml\"]\n\
         filter = \"*.yaml\"\npath = \"auth\"\nclient_insecure = true\nclient_cakeys = \"/ca\"\n\
         template_engine = \"go\"\n",
    );
    let c = merge(&Cli::default(), file).expect("valid");
    assert_eq!(c.template_engine, Engine::Go);
    match c.backend {
        BackendConfig::Etcd(e) => assert_eq!(
            e.srv,
            Some(SrvDiscovery {
                record: "_etcd._tcp.etcd.example.com.".into(),
                scheme: "https".into(),
            })
        ),
        other => panic!("{other:?}"),
    }
    assert_eq!(
        c.ignored,
        vec![
            "auth_token",
            "auth_type",
            "app_id",
            "user_id",
            "role_id",
            "secret_id",
            "table",
            "separator",
            "path",
            "client_insecure"
        ]
    );
}

/// The `conflux.toml` the package installs in /etc/conflux.
const PACKAGED: &str = include_str!("../../packaging/conflux.toml");

/// The packaged file's lines "# key = value" (a key at its default), uncommented.
fn packaged_defaults() -> String {
    PACKAGED
        .lines()
        .filter_map(|l| l.strip_prefix("# "))
        .filter(|l| l.split_once(" = ").is_some_and(|(k, _)| !k.contains(' ')))
        .map(|l| format!("{l}\n"))
        .collect()
}

#[test]
fn the_packaged_conflux_toml_sets_nothing() {
    let packaged = merge(&Cli::default(), raw(PACKAGED)).expect("valid");
    assert_eq!(
        packaged,
        merge(&Cli::default(), RawConfig::default()).expect("valid")
    );
}

/// Each "# key = value" of the packaged file is the key's real default: uncommenting
/// them all changes nothing.
#[test]
fn the_packaged_conflux_toml_shows_the_real_defaults() {
    let uncommented = packaged_defaults();
    assert!(uncommented.lines().count() >= 15, "{uncommented}");
    let c = merge(&Cli::default(), raw(&uncommented)).expect("valid");
    assert_eq!(
        c,
        merge(&Cli::default(), RawConfig::default()).expect("valid")
    );
}

/// Its examples ("#   key = value") are keys conflux knows, with values of the right type.
#[test]
fn the_packaged_conflux_toml_examples_parse() {
    let examples: String = PACKAGED
        .lines()
        .filter_map(|l| l.strip_prefix("#   "))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(examples.lines().count() >= 8, "{examples}");
    raw(&examples);
}

/// A key conflux gains must be documented in the packaged file too.
#[test]
fn the_packaged_conflux_toml_documents_every_key() {
    for key in KEYS {
        let documented = PACKAGED.lines().any(|l| {
            let l = l.trim_start_matches('#').trim_start();
            l.starts_with(&format!("{key} = "))
        });
        assert!(documented, "{key} is not in packaging/conflux.toml");
    }
}
