//! The committed browser build is what the sources give: `web/build.mjs` run into a temporary
//! directory must reproduce `web/src/gen/` (from `proto/tickroom.proto`) and `web/dist/` (the
//! files the server embeds) byte for byte. Also the library's unit tests (`npm test`), which
//! check the view example of docs/protocol.md.
//!
//! Needs Node.js and `web/node_modules` (`make web-deps`, i.e. `cd web && npm ci`); without
//! them these tests fail and say so.

use std::path::{Path, PathBuf};
use std::process::Command;

fn web() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("web")
}

fn require_node_modules() {
    let node = Command::new("node").arg("--version").output();
    assert!(
        node.is_ok_and(|o| o.status.success()),
        "node (Node.js 20 or later) is not on PATH: install nodejs and npm (apt-get install \
         nodejs npm; .ci/run does)"
    );
    for tool in ["esbuild", "buf", "protoc-gen-es", "tsc"] {
        assert!(
            web().join("node_modules/.bin").join(tool).exists(),
            "web/node_modules/.bin/{tool} is missing: run `make web-deps` (cd web && npm ci)"
        );
    }
}

/// Every file under `dir`, relative to it, sorted.
fn files(dir: &Path) -> Vec<PathBuf> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                out.push(path.strip_prefix(root).unwrap().to_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

fn same_tree(committed: &Path, built: &Path, what: &str) {
    let (c, b) = (files(committed), files(built));
    assert_eq!(
        c, b,
        "{what}: the committed files differ from a fresh build; run `make web` and commit"
    );
    for f in &c {
        let (old, new) = (
            std::fs::read(committed.join(f)).unwrap(),
            std::fs::read(built.join(f)).unwrap(),
        );
        assert!(
            old == new,
            "{what}: {} is stale ({} bytes committed, {} built); run `make web` and commit",
            f.display(),
            old.len(),
            new.len()
        );
    }
}

#[test]
fn the_committed_web_build_is_what_the_sources_give() {
    require_node_modules();
    let tmp = std::env::temp_dir().join(format!("tickroom-web-build-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let out = Command::new("node")
        .arg("build.mjs")
        .arg("--outdir")
        .arg(tmp.join("dist"))
        .arg("--gen-output")
        .arg(&tmp)
        .current_dir(web())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "web/build.mjs failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    same_tree(&web().join("src/gen"), &tmp.join("src/gen"), "web/src/gen");
    same_tree(&web().join("dist"), &tmp.join("dist"), "web/dist");
    std::fs::remove_dir_all(&tmp).unwrap();
}

#[test]
fn the_library_unit_tests_pass() {
    require_node_modules();
    let out = Command::new("node")
        .arg("test/unit.mjs")
        .current_dir(web())
        .output()
        .expect("node runs");
    assert!(
        out.status.success(),
        "npm test failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
