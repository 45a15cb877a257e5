//! Running hooks, scripts and check commands: environment, timeout, captured output.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Environment a hook or script sees.
pub type Env = Vec<(String, String)>;

/// Runs `argv` with `env`, killing it after `timeout`. The `jota` binary's directory comes
/// first on `PATH`, so `jota` in a hook is the same jota. Output is logged, not shown.
pub fn run(argv: &[String], env: &Env, timeout: Duration) -> Result<(), String> {
    let (prog, args) = argv
        .split_first()
        .ok_or_else(|| "empty command".to_string())?;
    let mut cmd = Command::new(prog);
    cmd.args(args)
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    if let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| p.parent().map(|p| p.to_path_buf()))
    {
        let path = std::env::var("PATH").unwrap_or_default();
        cmd.env("PATH", format!("{}:{path}", dir.display()));
    }
    let mut child = cmd.spawn().map_err(|e| format!("`{prog}`: {e}"))?;
    // Drain output on threads so a chatty command cannot block on a full pipe.
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    let start = Instant::now();
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break s,
            Ok(None) if start.elapsed() >= timeout => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`{prog}` timed out after {}s", timeout.as_secs()));
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => return Err(format!("`{prog}`: {e}")),
        }
    };
    let text = |h: Option<std::thread::JoinHandle<String>>| {
        h.and_then(|h| h.join().ok()).unwrap_or_default()
    };
    let (o, e) = (text(out), text(err));
    if !o.trim().is_empty() {
        tracing::info!(command = %prog, output = %o.trim(), "command output");
    }
    if status.success() {
        Ok(())
    } else {
        let tail: String = e
            .trim()
            .chars()
            .rev()
            .take(400)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect();
        Err(format!(
            "`{prog}` failed ({status}){}",
            if tail.is_empty() {
                String::new()
            } else {
                format!(": {tail}")
            }
        ))
    }
}

fn drain<R: std::io::Read + Send + 'static>(mut r: R) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut s = String::new();
        let _ = r.read_to_string(&mut s);
        s
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_passes_env_and_times_out() {
        let env = vec![("JOTA_X".to_string(), "7".to_string())];
        let sh = |s: &str| vec!["sh".to_string(), "-c".to_string(), s.to_string()];
        run(&sh("test \"$JOTA_X\" = 7"), &env, Duration::from_secs(5)).unwrap();
        let e = run(&sh("echo broken >&2; exit 3"), &env, Duration::from_secs(5)).unwrap_err();
        assert!(e.contains("broken") && e.contains("3"), "{e}");
        let e = run(&sh("sleep 5"), &env, Duration::from_millis(200)).unwrap_err();
        assert!(e.contains("timed out"), "{e}");
        assert!(run(
            &["/nonexistent/x".to_string()],
            &env,
            Duration::from_secs(1)
        )
        .is_err());
    }
}
