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

/// Reads `key = "text"`, `key = 123`, `key = true`, `key = ["a", "b"]` (joined with commas),
/// comments and blank lines: the part of TOML a flat settings file needs.
fn parse(text: &str) -> anyhow::Result<Vec<(String, Value)>> {
    let mut settings = Vec::new();
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (key, raw) = line
            .split_once('=')
            .with_context(|| format!("line {}: expected key = value", number + 1))?;
        let key = key.trim().replace('_', "-");
        let raw = strip_comment(raw.trim());
        let value = if raw == "true" || raw == "false" {
            Value::Flag(raw == "true")
        } else if let Some(items) = raw.strip_prefix('[').and_then(|raw| raw.strip_suffix(']')) {
            let items: Vec<String> = items
                .split(',')
                .map(str::trim)
                .filter(|item| !item.is_empty())
                .map(|item| unquote(item, number))
                .collect::<anyhow::Result<_>>()?;
            Value::Text(items.join(","))
        } else {
            Value::Text(unquote(raw, number)?)
        };
        settings.push((key, value));
    }
    Ok(settings)
}

fn strip_comment(raw: &str) -> &str {
    let mut quoted = false;
    for (at, c) in raw.char_indices() {
        match c {
            '"' => quoted = !quoted,
            '#' if !quoted => return raw[..at].trim_end(),
            _ => {}
        }
    }
    raw
}

fn unquote(raw: &str, number: usize) -> anyhow::Result<String> {
    if let Some(inner) = raw.strip_prefix('"').and_then(|raw| raw.strip_suffix('"')) {
        return Ok(inner.to_owned());
    }
    if !raw.is_empty() && raw.chars().all(|c| c.is_ascii_alphanumeric() || c == '.') {
        return Ok(raw.to_owned());
    }
    anyhow::bail!(
        "line {}: {raw:?} is not a string, number or boolean",
        number + 1
    )
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
        assert!(parse("key = {table}").is_err());
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
            settings in proptest::collection::vec(
                (
                    "[a-z][a-z0-9-]{0,20}",
                    proptest::prop_oneof![
                        "[a-zA-Z0-9 .:/=,@_-]{0,40}".prop_map(|text| (format!("\"{text}\""), Value::Text(text))),
                        (0u64..1_000_000).prop_map(|number| (number.to_string(), Value::Text(number.to_string()))),
                        proptest::bool::ANY.prop_map(|flag| (flag.to_string(), Value::Flag(flag))),
                    ],
                ),
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
