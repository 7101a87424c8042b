//! Windows targets only: compiles the Event Log's message table
//! (packaging/windows/messages.mc: message 1 is "%1", the whole text) into
//! pos-connector.exe, so Event Viewer shows the agent's warnings and errors
//! as they are. Uses mingw's windmc and windres (Debian's
//! binutils-mingw-w64, installed with the cross compiler); without them the
//! exe still builds and Event Viewer says it lacks a description.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo:rerun-if-changed=../../packaging/windows/messages.mc");
    println!("cargo:rerun-if-changed=build.rs");
    if env::var("CARGO_CFG_TARGET_OS").as_deref() != Ok("windows") {
        return;
    }
    if env::var("CARGO_CFG_TARGET_ENV").as_deref() != Ok("gnu") {
        println!("cargo:warning=no Event Log message table: only the mingw (windows-gnu) build compiles it");
        return;
    }
    let out = PathBuf::from(env::var("OUT_DIR").expect("cargo sets OUT_DIR"));
    let manifest = PathBuf::from(env::var("CARGO_MANIFEST_DIR").expect("cargo sets it"));
    let mc = manifest.join("../../packaging/windows/messages.mc");
    let arch = env::var("CARGO_CFG_TARGET_ARCH").unwrap_or_else(|_| "x86_64".into());
    let tool = |name: &str| format!("{arch}-w64-mingw32-{name}");
    let ran = |cmd: &mut Command| matches!(cmd.status(), Ok(s) if s.success());
    let built = ran(Command::new(tool("windmc"))
        .arg("-h")
        .arg(&out)
        .arg("-r")
        .arg(&out)
        .arg(&mc))
        && ran(Command::new(tool("windres"))
            .arg("-I")
            .arg(&out)
            .arg(out.join("messages.rc"))
            .args(["-O", "coff", "-o"])
            .arg(out.join("messages.res.o")));
    if !built {
        println!(
            "cargo:warning=no Event Log message table: {} / {} failed (binutils-mingw-w64)",
            tool("windmc"),
            tool("windres")
        );
        return;
    }
    println!(
        "cargo:rustc-link-arg-bins={}",
        out.join("messages.res.o").display()
    );
}
