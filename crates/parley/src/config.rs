//! `parley run --config FILE`: a TOML file of top-level settings named as the flags are. Each
//! setting becomes its flag, placed before the command line's own flags so those win; a setting
//! whose `PARLEY_…` variable is set is left to the variable.

use std::ffi::OsString;

use anyhow::Context;

/// The command line with the settings of `run --config FILE` (or `PARLEY_CONFIG`) spliced in.
pub fn expand_args(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let Some(run_at) = args.iter().position(|arg| arg == "run") else {
        return Ok(args);
    };
    let mut path = std::env::var_os("PARLEY_CONFIG");
    let mut at = run_at + 1;
    while at < args.len() {
        let arg = args[at].to_string_lossy();
        if arg == "--config" {
            path = args.get(at + 1).cloned();
        } else if let Some(value) = arg.strip_prefix("--config=") {
            path = Some(value.into());
        }
        at += 1;
    }
    let Some(path) = path else {
        return Ok(args);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("read --config {}", path.to_string_lossy()))?;
    let settings = parse(&text).with_context(|| format!("{}", path.to_string_lossy()))?;
    let mut expanded: Vec<OsString> = args[..=run_at].to_vec();
    for (key, value) in settings {
        let variable = format!("PARLEY_{}", key.to_uppercase().replace('-', "_"));
        if key == "config" || std::env::var_os(variable).is_some() {
            continue;
        }
        match value {
            Value::Flag(true) => expanded.push(format!("--{key}").into()),
            Value::Flag(false) => {}
            Value::Text(text) => {
                expanded.push(format!("--{key}").into());
                expanded.push(text.into());
            }
        }
    }
    expanded.extend_from_slice(&args[run_at + 1..]);
    Ok(expanded)
}

#[derive(Debug, PartialEq)]
enum Value {
    Text(String),
    Flag(bool),
}

/// Reads the file's top-level settings in order: strings, numbers and booleans as they are,
/// lists of them joined with commas (as the flags take them); `node_id` is read as `node-id`.
/// Tables and dates are refused: a flag has nothing to take them.
fn parse(text: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let document: toml_edit::DocumentMut = text.parse()?;
    let mut settings = Vec::new();
    for (key, item) in document.iter() {
        let value = item.as_value().and_then(setting).with_context(|| {
            format!("{key}: a setting is a string, a number, a boolean or a list of them")
        })?;
        settings.push((key.replace('_', "-"), value));
    }
    Ok(settings)
}

fn setting(value: &toml_edit::Value) -> Option<Value> {
    let text = |value: &toml_edit::Value| match value {
        toml_edit::Value::String(text) => Some(text.value().clone()),
        toml_edit::Value::Integer(number) => Some(number.value().to_string()),
        toml_edit::Value::Float(number) => Some(number.value().to_string()),
        _ => None,
    };
    match value {
        toml_edit::Value::Boolean(flag) => Some(Value::Flag(*flag.value())),
        toml_edit::Value::Array(items) => items
            .iter()
            .map(text)
            .collect::<Option<Vec<String>>>()
            .map(|items| Value::Text(items.join(","))),
        value => text(value).map(Value::Text),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_are_read_as_flags() {
        let settings = parse(
            "# a node\nnode_id = 4\nroles = [\"edge\", \"owner\"]\nmeta = \"1=127.0.0.1:7001\" # the metas\nallow-multi-login = true\nquiet = false\n",
        )
        .unwrap();
        assert_eq!(
            settings,
            vec![
                ("node-id".into(), Value::Text("4".into())),
                ("roles".into(), Value::Text("edge,owner".into())),
                ("meta".into(), Value::Text("1=127.0.0.1:7001".into())),
                ("allow-multi-login".into(), Value::Flag(true)),
                ("quiet".into(), Value::Flag(false)),
            ]
        );
        assert!(parse("no equals sign").is_err());
        assert!(parse("key = { inner = 1 }").is_err());
        assert!(parse("[section]\nkey = 1").is_err());
        assert!(parse("when = 1979-05-27").is_err());
    }

    #[test]
    fn the_command_line_comes_after_the_file() {
        let dir = std::env::temp_dir().join(format!("parley-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("node.toml");
        std::fs::write(&file, "node-id = 4\nlog-format = \"json\"\n").unwrap();
        let args: Vec<OsString> = [
            "parley",
            "run",
            "--config",
            file.to_str().unwrap(),
            "--node-id",
            "5",
        ]
        .into_iter()
        .map(OsString::from)
        .collect();
        let expanded: Vec<String> = expand_args(args)
            .unwrap()
            .into_iter()
            .map(|arg| arg.into_string().unwrap())
            .collect();
        assert_eq!(
            expanded,
            [
                "parley",
                "run",
                "--node-id",
                "4",
                "--log-format",
                "json",
                "--config",
                file.to_str().unwrap(),
                "--node-id",
                "5"
            ]
        );
    }

    use proptest::prelude::*;

    proptest! {
        /// Whatever a settings file holds, reading it answers settings or an error: no panic.
        #[test]
        fn any_text_is_read_or_refused(text in "(?s).{0,400}") {
            let _ = parse(&text);
        }

        /// Settings written as the file's format are read back as they were.
        #[test]
        fn written_settings_read_back(
            // A key appears once: TOML refuses a file that sets one twice.
            settings in proptest::collection::btree_map(
                "[a-z][a-z0-9-]{0,20}",
                proptest::prop_oneof![
                    "[a-zA-Z0-9 .:/=,@_-]{0,40}".prop_map(|text| (format!("\"{text}\""), Value::Text(text))),
                    (0u64..1_000_000).prop_map(|number| (number.to_string(), Value::Text(number.to_string()))),
                    proptest::bool::ANY.prop_map(|flag| (flag.to_string(), Value::Flag(flag))),
                ],
                0..8,
            )
        ) {
            let text: String = settings
                .iter()
                .map(|(key, (written, _))| format!("{key} = {written}  # a comment\n"))
                .collect();
            let read = parse(&text).unwrap();
            let expected: Vec<(String, Value)> = settings
                .into_iter()
                .map(|(key, (_, value))| (key, value))
                .collect();
            prop_assert_eq!(read, expected);
        }
    }
}
