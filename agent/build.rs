//! Names the commit and the target in `weir --version`: `git` when the source is a checkout,
//! else `WEIR_COMMIT` from the environment (a build from a tarball), else "unknown commit".

use std::path::PathBuf;
use std::process::Command;

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?;
    (out.status.success() && !text.trim().is_empty()).then(|| text.trim().to_string())
}

fn main() {
    println!("cargo:rerun-if-env-changed=WEIR_COMMIT");
    let commit = match git(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) => {
            // Rebuild when HEAD moves: HEAD itself, the branch it names, packed refs.
            for dir in [
                git(&["rev-parse", "--git-dir"]),
                git(&["rev-parse", "--git-common-dir"]),
            ]
            .into_iter()
            .flatten()
            {
                let dir = PathBuf::from(dir);
                let branch = git(&["symbolic-ref", "-q", "HEAD"]);
                let files = ["HEAD", "packed-refs"].map(String::from);
                // Only files that exist: a missing one would make cargo rerun this each time.
                for f in files.iter().chain(&branch).map(|f| dir.join(f)) {
                    if f.exists() {
                        println!("cargo:rerun-if-changed={}", f.display());
                    }
                }
            }
            c
        }
        None => std::env::var("WEIR_COMMIT").unwrap_or_else(|_| "unknown commit".into()),
    };
    let target = std::env::var("TARGET").unwrap_or_else(|_| "unknown target".into());
    println!("cargo:rustc-env=WEIR_COMMIT={commit}");
    println!("cargo:rustc-env=WEIR_TARGET={target}");
}
