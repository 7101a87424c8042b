//! Installing on a till: relative paths beside the config file, logs fit
//! for pipes, files and the journal, shell completions and the man page,
//! and `service install|status|start|...` driving systemd (a recording
//! `systemctl` on PATH stands in for the real one, which needs PID 1).

use std::path::Path;

use serde_json::{json, Value};

use crate::common::{files_under, run_bin};

#[cfg(unix)]
const BIN: &str = env!("CARGO_BIN_EXE_pos-connector");

fn write(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

/// A till's config with relative folders, in `<tmp>/etc/config.json`.
fn relative_config(dir: &Path) -> std::path::PathBuf {
    let cfg = dir.join("etc/config.json");
    write(
        &cfg,
        &json!({
            "email": "vendor@shop.jo",
            "data_dir": "state",
            "log_dir": "../logs",
            "invoice_folder": "./inbox",
            "receipts": {"dir": "state/receipts"},
        })
        .to_string(),
    );
    cfg
}

#[tokio::test]
async fn relative_paths_resolve_beside_the_config_file_not_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = relative_config(dir.path());
    let elsewhere = dir.path().join("elsewhere");
    std::fs::create_dir_all(&elsewhere).unwrap();
    // --config relative to the working directory, as an operator types it.
    let r = run_bin(
        dir.path(),
        &["--config", "etc/config.json", "--json", "check-config"],
        &[("POS_CONNECTOR_PASSWORD", "x")],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    let v: Value = serde_json::from_str(&r.stdout).unwrap();
    let etc = dir.path().join("etc");
    let shown = |k: &str| v["config"][k].as_str().unwrap().to_string();
    assert_eq!(shown("config_file"), cfg.display().to_string());
    assert_eq!(shown("data_dir"), etc.join("state").display().to_string());
    assert_eq!(
        shown("log_dir"),
        dir.path().join("logs").display().to_string()
    );
    assert_eq!(
        shown("invoice_folder"),
        etc.join("inbox").display().to_string()
    );
    assert_eq!(
        shown("pdf_dir"),
        etc.join("state/pdfs").display().to_string()
    );
    assert_eq!(
        v["config"]["receipts"]["dir"],
        etc.join("state/receipts").display().to_string()
    );

    // The human form names the folder they resolve against.
    let r = run_bin(
        &elsewhere,
        &["--config", cfg.to_str().unwrap(), "check-config"],
        &[("POS_CONNECTOR_PASSWORD", "x")],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout
            .contains(&format!("resolve against {}", etc.display())),
        "{}",
        r.stdout
    );

    // A command that opens the outbox and logs creates its files there,
    // whatever the working directory (a service's is System32 or /).
    let r = run_bin(
        &elsewhere,
        &["--config", cfg.to_str().unwrap(), "queue", "list"],
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(etc.join("state").is_dir());
    assert!(!files_under(&dir.path().join("logs")).is_empty());
    assert!(
        files_under(&elsewhere).is_empty(),
        "nothing in the working directory: {:?}",
        files_under(&elsewhere)
    );
}

#[tokio::test]
async fn logs_in_pipes_and_files_carry_no_colour_codes() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = relative_config(dir.path());
    // No local_api.api_key: the config warns, on stderr and in the file.
    let r = run_bin(
        dir.path(),
        &["--config", cfg.to_str().unwrap(), "queue", "list"],
        &[],
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stderr.contains("local_api.api_key"), "{}", r.stderr);
    assert!(
        !r.stderr.contains('\u{1b}'),
        "escape codes in a pipe: {:?}",
        r.stderr
    );
    let logs = files_under(&dir.path().join("logs"));
    let text: String = logs
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    assert!(text.contains("local_api.api_key"), "{text}");
    assert!(
        !text.contains('\u{1b}'),
        "escape codes in the file: {text:?}"
    );
}

// systemd and its journal: Linux only.
#[cfg(unix)]
/// Runs the binary with stderr going to a file, and `JOURNAL_STREAM`
/// naming that file's device and inode (as systemd names its socket), or
/// another one.
fn run_with_stderr_file(cfg: &Path, out: &Path, matching: bool) -> String {
    use std::os::unix::fs::MetadataExt;
    let file = std::fs::File::create(out).unwrap();
    let meta = file.metadata().unwrap();
    let stream = if matching {
        format!("{}:{}", meta.dev(), meta.ino())
    } else {
        format!("{}:{}", meta.dev(), meta.ino() + 1)
    };
    let status = std::process::Command::new(BIN)
        .args(["--config", cfg.to_str().unwrap(), "queue", "list"])
        .env_remove("RUST_LOG")
        .env("JOURNAL_STREAM", stream)
        .stdout(std::process::Stdio::null())
        .stderr(file)
        .status()
        .unwrap();
    assert!(status.success());
    std::fs::read_to_string(out).unwrap()
}

#[cfg(unix)]
#[tokio::test]
async fn under_systemd_each_line_carries_its_journal_priority() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = relative_config(dir.path());
    let journal = run_with_stderr_file(&cfg, &dir.path().join("journal.txt"), true);
    let warning = journal
        .lines()
        .find(|l| l.contains("local_api.api_key"))
        .unwrap_or_else(|| panic!("{journal}"));
    assert!(warning.starts_with("<4>"), "{warning:?}");
    assert!(!journal.contains('\u{1b}'), "{journal:?}");
    // No timestamp of its own: the journal adds one.
    assert!(!warning.contains(&chrono::Utc::now().format("%Y-%m-%d").to_string()));

    // JOURNAL_STREAM naming some other stream (a pipe through `tee`): plain.
    let plain = run_with_stderr_file(&cfg, &dir.path().join("plain.txt"), false);
    let warning = plain
        .lines()
        .find(|l| l.contains("local_api.api_key"))
        .unwrap_or_else(|| panic!("{plain}"));
    assert!(!warning.starts_with('<'), "{warning:?}");
}

#[tokio::test]
async fn completions_and_man_page_come_from_the_binary() {
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish", "powershell"] {
        let r = run_bin(dir.path(), &["completions", shell], &[], None).await;
        assert_eq!(r.code, 0, "{shell}: {r:?}");
        assert!(r.stdout.contains("pos-connector"), "{shell}");
        assert!(
            r.stdout.contains("check-config"),
            "{shell}: subcommands listed"
        );
    }
    let r = run_bin(dir.path(), &["completions", "tcsh"], &[], None).await;
    assert_eq!(r.code, 2, "an unknown shell is a usage error: {r:?}");
    assert!(r.stderr.contains("bash"), "names the choices: {}", r.stderr);

    let r = run_bin(dir.path(), &["man"], &[], None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains(".TH pos-connector 1"), "{}", r.stdout);
    assert!(r.stdout.contains("service"), "the page lists the commands");
}

#[cfg(unix)]
/// A `systemctl` that records its arguments and answers `show` with the
/// given LoadState / ActiveState; `fail` makes every verb but `show` fail
/// as systemd does for a non-root caller.
fn fake_systemctl(dir: &Path, load: &str, active: &str, fail: bool) -> String {
    let bin = dir.join("bin");
    let script = format!(
        "#!/bin/sh\necho \"$*\" >> '{log}'\nif [ \"$1\" = show ]; then printf 'LoadState={load}\\nActiveState={active}\\nSubState=x\\n'; exit 0; fi\n{fail}exit 0\n",
        log = dir.join("systemctl.log").display(),
        fail = if fail {
            "echo 'Failed to enable unit: Access denied' >&2; exit 1\n"
        } else {
            ""
        },
    );
    write(&bin.join("systemctl"), &script);
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(
        bin.join("systemctl"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    )
}

#[cfg(unix)]
#[tokio::test]
async fn service_verbs_drive_systemd_with_the_shipped_unit() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = relative_config(dir.path());
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    let path = fake_systemctl(dir.path(), "loaded", "active", false);
    let env = [
        ("PATH", path.as_str()),
        ("POS_CONNECTOR_SYSTEMD_UNIT_DIR", units.to_str().unwrap()),
    ];
    let r = run_bin(
        dir.path(),
        &[
            "--config",
            "etc/config.json",
            "service",
            "install",
            "--account",
            "till",
        ],
        &env,
        None,
    )
    .await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(
        r.stdout.contains("the user till does not exist") && r.stdout.contains("useradd"),
        "{}",
        r.stdout
    );
    let unit = std::fs::read_to_string(units.join("pos-connector.service")).unwrap();
    assert!(unit.contains(&format!("\nExecStart={BIN} run\n")), "{unit}");
    assert!(unit.contains(&format!(
        "\nEnvironment=POS_CONNECTOR_CONFIG={}\n",
        cfg.display()
    )));
    assert!(unit.contains("\nUser=till\n"));
    // The config's folders are outside the unit's own: opened explicitly.
    let etc = dir.path().join("etc");
    assert!(unit.contains(&format!(
        "\nReadWritePaths=-{}\n",
        etc.join("inbox").display()
    )));
    assert!(unit.contains(&format!(
        "\nReadWritePaths=-{}\n",
        etc.join("state").display()
    )));
    assert!(
        unit.contains("\nProtectSystem=strict\n"),
        "the hardening is kept"
    );
    let calls = std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap();
    assert_eq!(calls, "daemon-reload\nenable pos-connector.service\n");

    let r = run_bin(dir.path(), &["service", "status"], &env, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(r.stdout.contains("running"), "{}", r.stdout);
    let r = run_bin(dir.path(), &["service", "stop"], &env, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    let r = run_bin(dir.path(), &["service", "uninstall"], &env, None).await;
    assert_eq!(r.code, 0, "{r:?}");
    assert!(!units.join("pos-connector.service").exists());
    let calls = std::fs::read_to_string(dir.path().join("systemctl.log")).unwrap();
    assert!(calls.contains("\nstop pos-connector.service\n"), "{calls}");
    assert!(
        calls.contains("\ndisable pos-connector.service\n"),
        "{calls}"
    );

    // Not installed: status says so (exit 1), start is a usage error (2).
    let path = fake_systemctl(dir.path(), "not-found", "inactive", false);
    let env = [("PATH", path.as_str())];
    let r = run_bin(dir.path(), &["--json", "service", "status"], &env, None).await;
    assert_eq!(r.code, 1, "{r:?}");
    assert!(r.stdout.contains("not installed"), "{}", r.stdout);
    let r = run_bin(dir.path(), &["service", "start"], &env, None).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("service install"), "{}", r.stderr);

    // systemd refuses a non-root caller: exit 2 with what to do.
    let path = fake_systemctl(dir.path(), "loaded", "inactive", true);
    let env = [("PATH", path.as_str())];
    let r = run_bin(dir.path(), &["service", "start"], &env, None).await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(
        r.stderr.contains("Access denied") && r.stderr.contains("root"),
        "{}",
        r.stderr
    );

    // A broken config is refused at install time, not at the next boot.
    write(&cfg, "{\"email\": \"nope\"}");
    let r = run_bin(
        dir.path(),
        &["--config", "etc/config.json", "service", "install"],
        &env,
        None,
    )
    .await;
    assert_eq!(r.code, 2, "{r:?}");
    assert!(r.stderr.contains("email"), "{}", r.stderr);
}
