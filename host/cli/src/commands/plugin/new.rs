//! `edgerec plugin new NAME [--lang rust|js]`: a plugin project that builds on
//! its own, outside this repository, from public packages only.
//!
//! The binary carries what the project needs: for Rust the SDK sources, its
//! manifest with the workspace inheritance resolved, the WIT and this
//! workspace's `Cargo.lock` (Cargo keeps the entries the project uses, so it
//! builds with the very versions this repository tests); for JavaScript the
//! helper module, the WIT, the TypeScript types and the pinned npm lock file.
//! All of it is read from `sdk/` when `edgerec` is compiled, so a project
//! follows whatever `sdk/` holds.

use std::path::{Path, PathBuf};

use anyhow::{Context as _, Result, bail};
use clap::{Args, ValueEnum};

/// One file of a template: path in the project, contents.
type File = (&'static str, &'static str);

/// The SDK's sources and contract, vendored into Rust projects under `vendor/edgerec-sdk/`.
/// `host/cli/tests/plugin_new.rs` checks that this list covers every file in `sdk/src` and `sdk/wit`.
pub const SDK_FILES: [File; 8] = [
    ("src/lib.rs", include_str!("../../../../../sdk/src/lib.rs")),
    ("src/candidates.rs", include_str!("../../../../../sdk/src/candidates.rs")),
    ("src/context.rs", include_str!("../../../../../sdk/src/context.rs")),
    ("src/log.rs", include_str!("../../../../../sdk/src/log.rs")),
    ("src/output.rs", include_str!("../../../../../sdk/src/output.rs")),
    ("src/plugin.rs", include_str!("../../../../../sdk/src/plugin.rs")),
    ("wit/plugin.wit", include_str!("../../../../../sdk/wit/plugin.wit")),
    ("README.md", include_str!("../../../../../sdk/README.md")),
];

const SDK_MANIFEST: &str = include_str!("../../../../../sdk/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../../../../Cargo.toml");
const WORKSPACE_LOCK: &str = include_str!("../../../../../Cargo.lock");

const RUST_TEMPLATE: [File; 8] = [
    ("Cargo.toml", include_str!("../../../templates/rust/Cargo.toml.tmpl")),
    ("rust-toolchain.toml", include_str!("../../../templates/rust/rust-toolchain.toml.tmpl")),
    ("src/lib.rs", include_str!("../../../templates/rust/src/lib.rs.tmpl")),
    ("config.json", include_str!("../../../templates/rust/config.json")),
    ("request.json", include_str!("../../../templates/rust/request.json")),
    ("README.md", include_str!("../../../templates/rust/README.md.tmpl")),
    (".gitignore", include_str!("../../../templates/rust/gitignore")),
    // The workspace's own: the first-party plugins are built with it too.
    (".cargo/config.toml", include_str!("../../../../../.cargo/config.toml")),
];

/// The JS helper package (`sdk/js`): its manifest pins the npm tools.
const JS_MANIFEST: &str = include_str!("../../../../../sdk/js/package.json");
const JS_LOCK: &str = include_str!("../../../../../sdk/js/package-lock.json");
/// The name `sdk/js`'s manifest and lock file carry (replaced by the project's).
const JS_PACKAGE_NAME: &str = "@edgerec/plugin-sdk";

const JS_TEMPLATE: [File; 13] = [
    ("package.json", include_str!("../../../templates/js/package.json.tmpl")),
    ("src/plugin.ts", include_str!("../../../templates/js/src/plugin.ts")),
    ("src/edgerec.ts", include_str!("../../../../../sdk/js/src/index.ts")),
    ("wit/plugin.wit", include_str!("../../../../../sdk/wit/plugin.wit")),
    ("types/plugin.d.ts", include_str!("../../../../../sdk/js/types/plugin.d.ts")),
    (
        "types/interfaces/edgerec-plugin-host.d.ts",
        include_str!("../../../../../sdk/js/types/interfaces/edgerec-plugin-host.d.ts"),
    ),
    (
        "types/interfaces/edgerec-plugin-stage.d.ts",
        include_str!("../../../../../sdk/js/types/interfaces/edgerec-plugin-stage.d.ts"),
    ),
    (
        "types/interfaces/edgerec-plugin-types.d.ts",
        include_str!("../../../../../sdk/js/types/interfaces/edgerec-plugin-types.d.ts"),
    ),
    ("tsconfig.json", include_str!("../../../../../sdk/js/tsconfig.json")),
    ("bundle.config.mjs", include_str!("../../../../../sdk/js/bundle.config.mjs")),
    ("config.json", include_str!("../../../templates/js/config.json")),
    ("request.json", include_str!("../../../templates/js/request.json")),
    ("README.md", include_str!("../../../templates/js/README.md.tmpl")),
];

/// The language of a new plugin project.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum Lang {
    /// Rust with the vendored edgerec SDK (cargo, wasm32-wasip2).
    Rust,
    /// TypeScript/JavaScript with jco's QuickJS backend (Node.js and npm).
    Js,
}

/// `edgerec plugin new`.
#[derive(Args)]
pub struct NewArgs {
    /// The plugin's name (also the directory and the package): 1..=64 of a-z, 0-9, '-', '_', starting with a letter.
    name: String,
    /// The language.
    #[arg(long, value_enum, default_value_t = Lang::Rust)]
    lang: Lang,
    /// Where to create the project (default: ./NAME).
    #[arg(long)]
    dir: Option<PathBuf>,
}

/// Runs `edgerec plugin new`.
pub fn new(args: NewArgs) -> Result<()> {
    let dir = args.dir.clone().unwrap_or_else(|| PathBuf::from(&args.name));
    let files = project_files(&args.name, args.lang)?;
    if dir.exists() && std::fs::read_dir(&dir).map(|mut d| d.next().is_some()).unwrap_or(true) {
        bail!("{} already exists and is not empty: choose another name or --dir", dir.display());
    }
    for (path, contents) in &files {
        let path = dir.join(path);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    let (artifact, first) = match args.lang {
        Lang::Rust => (rust_artifact(&args.name), "cargo test    # the rule's unit tests"),
        Lang::Js => (js_artifact(&args.name), "npm ci        # once: the pinned jco"),
    };
    println!("created {} ({} files)", dir.display(), files.len());
    println!("next:\n  cd {}\n  {first}", dir.display());
    println!("  edgerec plugin build");
    println!("  edgerec plugin run {artifact} --input request.json --config config.json");
    Ok(())
}

/// Checks a plugin name: it becomes a Cargo package, an npm package and the
/// plugin's name on the server, so it must be valid for all three.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
    if !ok {
        bail!("plugin name {name:?} is invalid: use 1..=64 of a-z, 0-9, '-', '_', starting with a letter");
    }
    Ok(())
}

/// The component a Rust project builds (relative to the project, default target directory).
pub fn rust_artifact(name: &str) -> String {
    format!("target/wasm32-wasip2/release/{}.wasm", name.replace('-', "_"))
}

/// The component a JS project builds (relative to the project).
pub fn js_artifact(name: &str) -> String {
    format!("dist/{name}.wasm")
}

/// Every file of a new project, with its contents.
pub fn project_files(name: &str, lang: Lang) -> Result<Vec<(String, String)>> {
    check_name(name)?;
    let workspace: toml::Table = WORKSPACE_MANIFEST.parse().context("the workspace manifest this binary carries")?;
    let rust_version = workspace
        .get("workspace")
        .and_then(|w| w.get("package"))
        .and_then(|p| p.get("rust-version"))
        .and_then(toml::Value::as_str)
        .unwrap_or("1.95")
        .to_owned();
    let js: serde_json::Value = serde_json::from_str(JS_MANIFEST).context("sdk/js/package.json")?;
    let js_version = |section: &str, package: &str| js[section][package].as_str().unwrap_or("").to_owned();
    let artifact = match lang {
        Lang::Rust => rust_artifact(name),
        Lang::Js => js_artifact(name),
    };
    let vars = [
        ("{{name}}", name.to_owned()),
        ("{{rust_version}}", rust_version),
        ("{{artifact}}", artifact),
        ("{{jco_version}}", js_version("devDependencies", "@bytecodealliance/jco")),
        ("{{preview2_shim_version}}", js_version("overrides", "@bytecodealliance/preview2-shim")),
    ];
    let fill = |text: &str| vars.iter().fold(text.to_owned(), |t, (k, v)| t.replace(k, v));
    let mut files: Vec<(String, String)> = Vec::new();
    match lang {
        Lang::Rust => {
            files.extend(RUST_TEMPLATE.iter().map(|(p, t)| (p.to_string(), fill(t))));
            files.push(("Cargo.lock".into(), WORKSPACE_LOCK.to_owned()));
            files.push(("vendor/edgerec-sdk/Cargo.toml".into(), standalone_sdk_manifest(&workspace)?));
            files.extend(SDK_FILES.iter().map(|(p, t)| (format!("vendor/edgerec-sdk/{p}"), t.to_string())));
        }
        Lang::Js => {
            files.extend(JS_TEMPLATE.iter().map(|(p, t)| (p.to_string(), fill(t))));
            let quoted = format!("\"name\": \"{JS_PACKAGE_NAME}\"");
            files.push(("package-lock.json".into(), JS_LOCK.replace(&quoted, &format!("\"name\": \"{name}\""))));
            files.push((".gitignore".into(), "/node_modules\n/dist\n".into()));
        }
    }
    Ok(files)
}

/// `sdk/Cargo.toml` with every `workspace = true` replaced by the workspace's
/// value, so the vendored copy builds outside this workspace. Its `[lints]`
/// (this repository's policy) is left out.
fn standalone_sdk_manifest(workspace: &toml::Table) -> Result<String> {
    let ws = workspace.get("workspace").and_then(toml::Value::as_table).context("no [workspace] table")?;
    let package = ws.get("package").and_then(toml::Value::as_table).context("no [workspace.package]")?;
    let deps = ws.get("dependencies").and_then(toml::Value::as_table).context("no [workspace.dependencies]")?;
    let mut out =
        String::from("# Vendored by `edgerec plugin new` from edgerec's sdk/ (workspace settings resolved).\n");
    let mut section = String::new();
    for line in SDK_MANIFEST.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('[') {
            section = trimmed.to_owned();
            if section != "[lints]" {
                out.push_str(line);
                out.push('\n');
            }
            continue;
        }
        if section == "[lints]" {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            out.push_str(line);
            out.push('\n');
            continue;
        };
        let key = key.trim();
        let value = value.trim();
        let resolved = if let Some(field) = key.strip_suffix(".workspace") {
            // `version.workspace = true` / `serde.workspace = true`.
            let from = if section == "[package]" { package } else { deps };
            let inherited = from.get(field).with_context(|| format!("the workspace has no `{field}` for the SDK"))?;
            Some((field.to_owned(), inherited.clone()))
        } else if section.ends_with("dependencies]") && value.contains("workspace") {
            // `serde = { workspace = true, features = [...] }`.
            let table: toml::Table =
                format!("v = {value}").parse().with_context(|| format!("sdk/Cargo.toml: {line}"))?;
            let mut local = table.get("v").and_then(toml::Value::as_table).cloned().unwrap_or_default();
            local.remove("workspace");
            let mut merged = match deps.get(key) {
                Some(toml::Value::String(v)) => {
                    toml::Table::from_iter([("version".to_owned(), toml::Value::String(v.clone()))])
                }
                Some(toml::Value::Table(t)) => t.clone(),
                _ => bail!("the workspace has no dependency `{key}` for the SDK"),
            };
            if let (Some(toml::Value::Array(extra)), Some(toml::Value::Array(features))) =
                (local.remove("features"), merged.get_mut("features"))
            {
                features.extend(extra);
            }
            merged.extend(local);
            Some((key.to_owned(), toml::Value::Table(merged)))
        } else {
            None
        };
        match resolved {
            Some((key, toml::Value::Table(t))) => {
                // An inline table on one line, as Cargo manifests write them.
                let inline: Vec<String> = t.iter().map(|(k, v)| format!("{k} = {v}")).collect();
                out.push_str(&format!("{key} = {{ {} }}\n", inline.join(", ")));
            }
            Some((key, value)) => out.push_str(&format!("{key} = {value}\n")),
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    Ok(out)
}

/// Which kind of project a directory holds.
pub fn detect(dir: &Path) -> Result<Lang> {
    if dir.join("Cargo.toml").is_file() {
        Ok(Lang::Rust)
    } else if dir.join("package.json").is_file() {
        Ok(Lang::Js)
    } else {
        bail!(
            "{} holds neither Cargo.toml nor package.json: run this in a project made by `edgerec plugin new`",
            dir.display()
        )
    }
}
