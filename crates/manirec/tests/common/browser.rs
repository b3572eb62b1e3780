//! Headless Chromium (Debian's `chromium`) for the storefront tests, with one
//! set of flags: no sandbox or GPU (a container), and none of the browser's
//! own network chatter or first-run screens in the way of what a test watches.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;

const CHROMIUM: &str = "/usr/bin/chromium";

/// A headless Chromium command on the fresh profile folder `profile`; the
/// caller adds its own flags, the URL, and runs it.
pub fn chromium(profile: &Path) -> Command {
    assert!(
        Path::new(CHROMIUM).exists(),
        "this test needs Debian's chromium (apt-get install chromium); scripts/test installs it"
    );
    let mut cmd = Command::new(CHROMIUM);
    cmd.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
    ])
    .arg(format!("--user-data-dir={}", profile.display()));
    cmd
}
