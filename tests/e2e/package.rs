//! The units and the Debian package, with the real tools: `systemd-analyze verify`
//! on every unit (before installation, and installed with its man pages), then the
//! package `scripts/package.sh` built (`scripts/test.sh` builds it before the tests
//! run) installed with `dpkg -i`: `man` renders both pages, bash completes an
//! option, and `dpkg -r` / `dpkg -P` remove it cleanly. Needs root, like the lab.

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the workspace")
        .to_path_buf()
}

const UNITS: [&str; 3] = ["ncu-recv.socket", "ncu-recv.service", "ncu-send.service"];

/// `systemd-analyze verify ARGS UNITS` in `dir`: status and everything it said.
fn verify(dir: &Path, args: &[&str]) -> (bool, String) {
    let out = Command::new("systemd-analyze")
        .arg("verify")
        .args(args)
        .args(UNITS.iter().map(|u| dir.join(u)))
        .output()
        .expect("systemd-analyze runs (packaging/setup.sh installs it)");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), said)
}

#[test]
fn systemd_analyze_accepts_every_unit() {
    // Before installation: the units as shipped, their binaries pointed at this
    // build (verify checks that ExecStart's program exists).
    let dir = std::env::temp_dir().join(format!("ncu-units-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("a scratch folder");
    let bin = ncu_tests::bin_path("ncu-recv");
    let bin_dir = bin.parent().expect("the target folder");
    for unit in UNITS {
        let text =
            std::fs::read_to_string(repo().join("packaging/systemd").join(unit)).expect("the unit");
        assert!(text.contains("/usr/bin/ncu-") || unit.ends_with(".socket"));
        let text = text.replace("/usr/bin/", &format!("{}/", bin_dir.display()));
        std::fs::write(dir.join(unit), text).expect("a copy");
    }
    let (ok, said) = verify(&dir, &["--man=no"]);
    assert!(
        ok && said.trim().is_empty(),
        "systemd-analyze verify: {said}"
    );
    // And it does catch a broken unit.
    let broken = std::fs::read_to_string(dir.join("ncu-recv.service"))
        .expect("the copy")
        .replace("Type=notify", "Type=notifyy");
    std::fs::write(dir.join("ncu-recv.service"), broken).expect("a broken copy");
    let (_, said) = verify(&dir, &["--man=no"]);
    assert!(
        said.contains("notifyy"),
        "verify missed a bad Type=: {said}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

fn run(cmd: &str) -> (bool, String) {
    let out = Command::new("bash")
        .arg("-c")
        .arg(cmd)
        .output()
        .expect("bash runs");
    (
        out.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
    )
}

#[test]
fn the_debian_package_installs_renders_completes_and_removes() {
    let debs: Vec<PathBuf> = std::fs::read_dir(repo().join("target/debian"))
        .map(|d| {
            d.flatten()
                .map(|e| e.path())
                .filter(|p| p.extension().is_some_and(|x| x == "deb"))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        debs.len(),
        1,
        "one package in target/debian (make it with: bash scripts/package.sh): {debs:?}"
    );
    let deb = debs[0].display().to_string();
    let (ok, said) = run(&format!("dpkg -i {deb}"));
    assert!(ok, "dpkg -i: {said}");
    let installed = [
        "/usr/bin/ncu-recv",
        "/usr/bin/ncu-send",
        "/lib/systemd/system/ncu-recv.service",
        "/lib/systemd/system/ncu-recv.socket",
        "/lib/systemd/system/ncu-send.service",
        "/etc/logrotate.d/ncu-recv",
        "/etc/default/ncu-recv",
        "/etc/default/ncu-send",
        "/usr/share/man/man1/ncu-recv.1.gz",
        "/usr/share/bash-completion/completions/ncu-recv",
        "/usr/share/zsh/vendor-completions/_ncu-send",
        "/usr/share/fish/vendor_completions.d/ncu-recv.fish",
    ];
    for path in installed {
        assert!(Path::new(path).exists(), "{path} not installed");
    }
    // Nothing is enabled: no DEST has been given.
    let (_, enabled) = run("ls /etc/systemd/system/*.wants/ 2>/dev/null | grep ncu || true");
    assert!(
        enabled.trim().is_empty(),
        "enabled on installation: {enabled}"
    );
    // The man pages render, from the same definitions as --help.
    for bin in ["ncu-recv", "ncu-send"] {
        let (ok, page) = run(&format!("MANPAGER=cat MANWIDTH=80 man {bin}"));
        assert!(ok, "man {bin}: {page}");
        assert!(page.contains("--key-file"), "man {bin}: {page}");
    }
    let (_, page) = run("MANPAGER=cat man ncu-recv");
    assert!(page.contains("--sync-every"), "{page}");
    // bash completes an option from the installed completion file.
    let (ok, words) = run("source /usr/share/bash-completion/completions/ncu-recv; \
         fn=$(complete -p ncu-recv | sed 's/.*-F \\([^ ]*\\).*/\\1/'); \
         COMP_WORDS=(ncu-recv --sync); COMP_CWORD=1; COMP_LINE='ncu-recv --sync'; \
         COMP_POINT=${#COMP_LINE}; $fn ncu-recv --sync ncu-recv; echo \"${COMPREPLY[@]}\"");
    assert!(ok && words.contains("--sync-every"), "completion: {words}");
    // Installed, with their man pages: systemd-analyze checks the Documentation= too.
    let (ok, said) = verify(Path::new("/lib/systemd/system"), &[]);
    assert!(ok && said.trim().is_empty(), "installed units: {said}");
    // Removed cleanly: binaries and units gone; purge takes the conffiles too.
    let (ok, said) = run("dpkg -r ncu");
    assert!(ok, "dpkg -r: {said}");
    for path in ["/usr/bin/ncu-recv", "/lib/systemd/system/ncu-recv.service"] {
        assert!(!Path::new(path).exists(), "{path} left after dpkg -r");
    }
    let (ok, said) = run("dpkg -P ncu");
    assert!(ok, "dpkg -P: {said}");
    for path in ["/etc/default/ncu-send", "/etc/logrotate.d/ncu-recv"] {
        assert!(!Path::new(path).exists(), "{path} left after dpkg -P");
    }
}
