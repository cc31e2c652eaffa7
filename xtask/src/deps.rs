//! Installs what the tasks need from Debian when it is missing (as root, non-
//! interactively), or says exactly what to install.

use std::process::Command;

/// A program a task runs, and the Debian package that provides it.
pub struct Tool {
    pub program: &'static str,
    pub package: &'static str,
}

/// Programs the test suite runs under the LD_PRELOAD library.
pub const TEST_TOOLS: [Tool; 7] = [
    Tool {
        program: "cc",
        package: "gcc",
    },
    Tool {
        program: "c++",
        package: "g++",
    },
    Tool {
        program: "python3",
        package: "python3",
    },
    Tool {
        program: "perl",
        package: "perl",
    },
    Tool {
        program: "git",
        package: "git",
    },
    Tool {
        program: "sqlite3",
        package: "sqlite3",
    },
    Tool {
        program: "sort",
        package: "coreutils",
    },
];

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program} >/dev/null 2>&1")])
        .status()
        .is_ok_and(|s| s.success())
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Makes sure every program is present, installing missing Debian packages.
pub fn ensure(tools: &[Tool]) -> Result<(), String> {
    let missing: Vec<&Tool> = tools.iter().filter(|t| !have(t.program)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let pkgs: Vec<&str> = missing.iter().map(|t| t.package).collect();
    apt_install(&pkgs)?;
    let still: Vec<&str> = missing
        .iter()
        .filter(|t| !have(t.program))
        .map(|t| t.program)
        .collect();
    if still.is_empty() {
        Ok(())
    } else {
        Err(format!("still missing after install: {}", still.join(", ")))
    }
}

/// `apt-get install -y` as root; otherwise an error naming the packages.
pub fn apt_install(pkgs: &[&str]) -> Result<(), String> {
    if !is_root() {
        return Err(format!(
            "missing Debian packages; install them with: sudo apt-get install -y {}",
            pkgs.join(" ")
        ));
    }
    eprintln!("==> installing Debian packages: {}", pkgs.join(" "));
    let ok = |c: &mut Command| c.status().is_ok_and(|s| s.success());
    let env = [("DEBIAN_FRONTEND", "noninteractive")];
    let _ = ok(Command::new("apt-get").args(["update", "-qq"]).envs(env));
    if ok(Command::new("apt-get")
        .args(["install", "-y", "-qq"])
        .args(pkgs)
        .envs(env))
    {
        Ok(())
    } else {
        Err(format!("apt-get install {} failed", pkgs.join(" ")))
    }
}
