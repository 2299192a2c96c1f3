//! The quick start's first command, `conf/demo.sh`, on a machine that has only the Rust
//! toolchain: it must find that cmake (libz-ng-sys under Pingora builds zlib-ng with it) and
//! the C compiler are missing, install them with apt-get, then run `cargo run --release`.
//!
//! Each case runs the real script with a PATH of stubs only, so the machine's own cmake and
//! cc are hidden: a fake `apt-get` logs its arguments and "installs" a package by creating its
//! command; a fake `cargo` logs how it was called. No network, no real install, no build.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

struct Machine {
    dir: PathBuf,
}

impl Machine {
    /// A fake machine whose PATH holds `env`, `sudo`, `cargo` and the given extra commands.
    fn new(name: &str, tools: &[&str], with_apt: bool) -> Machine {
        let dir = std::env::temp_dir().join(format!(
            "switchyard-quickstart-{name}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        std::os::unix::fs::symlink(which("env"), dir.join("bin/env")).unwrap();
        let log = dir.join("log");
        let bin = dir.join("bin");
        stub(
            &bin.join("cargo"),
            &format!("echo \"cargo $*\" >> '{}'", log.display()),
        );
        // Tests may run as a user: the script then goes through `sudo -n`.
        stub(&bin.join("sudo"), r#"[ "$1" = -n ] && shift; exec "$@""#);
        for t in tools {
            stub(&bin.join(t), "exit 0");
        }
        if with_apt {
            // `install` creates the commands of the packages it is given, as Debian's would.
            stub(
                &bin.join("apt-get"),
                &format!(
                    r#"echo "apt-get $* DEBIAN_FRONTEND=$DEBIAN_FRONTEND" >> '{log}'
if [ "$1" = install ]; then
  for p in "$@"; do
    case "$p" in
      cmake) printf '#!/bin/sh\nexit 0\n' > '{bin}/cmake'; /bin/chmod +x '{bin}/cmake' ;;
      build-essential) printf '#!/bin/sh\nexit 0\n' > '{bin}/cc'; /bin/chmod +x '{bin}/cc' ;;
    esac
  done
fi"#,
                    log = log.display(),
                    bin = bin.display()
                ),
            );
        }
        Machine { dir }
    }

    fn run(&self, prereqs_only: bool) -> Output {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/demo.sh");
        let mut cmd = Command::new(which("bash"));
        cmd.arg(script)
            .env_clear()
            .env("PATH", self.dir.join("bin"))
            .env("HOME", &self.dir)
            .stdin(std::process::Stdio::null());
        if prereqs_only {
            cmd.env("SWITCHYARD_PREREQS_ONLY", "1");
        }
        cmd.output().unwrap()
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }
}

impl Drop for Machine {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn stub(path: &Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn which(cmd: &str) -> PathBuf {
    for dir in ["/usr/bin", "/bin", "/usr/local/bin"] {
        let p = Path::new(dir).join(cmd);
        if p.exists() {
            return p;
        }
    }
    panic!("{cmd} not found");
}

fn text(o: &Output) -> String {
    format!(
        "status {:?}\nstdout:\n{}\nstderr:\n{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[test]
fn without_cmake_the_quick_start_installs_it_then_serves_the_demo() {
    let m = Machine::new("no-cmake", &["cc"], true);
    let out = m.run(false);
    assert!(out.status.success(), "{}", text(&out));
    let log = m.log();
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(
        lines,
        [
            "apt-get update -q DEBIAN_FRONTEND=noninteractive",
            "apt-get install -y -q --no-install-recommends cmake DEBIAN_FRONTEND=noninteractive",
            "cargo run --release --",
        ],
        "{}",
        text(&out)
    );
}

#[test]
fn without_a_compiler_or_cmake_both_are_installed_in_one_go() {
    let m = Machine::new("bare", &[], true);
    let out = m.run(true);
    assert!(out.status.success(), "{}", text(&out));
    let log = m.log();
    assert!(
        log.contains("install -y -q --no-install-recommends build-essential cmake"),
        "{log}"
    );
    assert!(
        !log.contains("cargo"),
        "SWITCHYARD_PREREQS_ONLY=1 stops before the build: {log}"
    );
}

#[test]
fn with_everything_present_nothing_is_installed() {
    let m = Machine::new("ready", &["cc", "cmake"], true);
    let out = m.run(false);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(m.log().trim(), "cargo run --release --");
}

#[test]
fn without_apt_get_it_says_what_to_install() {
    let m = Machine::new("no-apt", &["cc"], false);
    let out = m.run(false);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("need to install cmake but apt-get is not available"),
        "{err}"
    );
    assert!(!m.log().contains("cargo"), "no build without cmake");
}
