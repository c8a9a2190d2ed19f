//! The berth agent under test, as a process: started with the bench's arguments, its
//! readiness, resident memory and CPU time read from the outside (`/readyz`, `/proc`), its
//! own counters from `/metrics`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result, anyhow, bail};

/// The node name every bench agent runs as; instance ids are `bench:<container>:<port>`.
pub const NODE: &str = "bench";

/// A running `berth run`. Killed when dropped.
#[derive(Debug)]
pub struct AgentProc {
    child: Child,
    admin: String,
    pub log: PathBuf,
    http: reqwest::Client,
}

impl AgentProc {
    /// Starts `berth run` with the bench's standard flags (node name, host IP 127.0.0.1,
    /// JSON logs at info, an admin port of its own), the registry's flags and `extra`.
    /// Returns it and the wall-clock time just before it was started.
    pub fn spawn(
        berth: &Path,
        registry: &[String],
        extra: &[String],
        log: PathBuf,
    ) -> Result<(AgentProc, SystemTime)> {
        let admin = format!("127.0.0.1:{}", berth_e2e::free_port());
        let file = std::fs::File::create(&log)
            .with_context(|| format!("create the agent log {}", log.display()))?;
        let mut cmd = Command::new(berth);
        cmd.arg("run")
            .args(registry)
            .args([
                "--node-name",
                NODE,
                "--host-ip",
                "127.0.0.1",
                "--log-format",
                "json",
                "--admin-addr",
                &admin,
            ])
            .args(extra)
            .env("BERTH_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::from(file.try_clone()?))
            .stderr(Stdio::from(file));
        let started = SystemTime::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("start {}", berth.display()))?;
        Ok((
            AgentProc {
                child,
                admin,
                log,
                http: reqwest::Client::builder()
                    .timeout(Duration::from_secs(5))
                    .build()?,
            },
            started,
        ))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Polls `/readyz` every 5 ms until it answers 200; when that was.
    pub async fn ready(&mut self, timeout: Duration) -> Result<SystemTime> {
        let deadline = tokio::time::Instant::now() + timeout;
        let url = format!("http://{}/readyz", self.admin);
        loop {
            if let Ok(r) = self.http.get(&url).send().await
                && r.status().is_success()
            {
                return Ok(SystemTime::now());
            }
            if let Some(status) = self.child.try_wait()? {
                bail!("berth exited ({status}); log: {}", self.log.display());
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "berth not ready after {timeout:?}; log: {}",
                    self.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// `/metrics`, as text.
    pub async fn metrics(&self) -> Result<String> {
        Ok(self
            .http
            .get(format!("http://{}/metrics", self.admin))
            .send()
            .await?
            .text()
            .await?)
    }

    /// The sum of every series of metric family `name` (e.g. all `op`s of
    /// `berth_registry_writes_total`), or of the series whose labels contain `filter`.
    pub async fn metric_sum(&self, name: &str, filter: &str) -> Result<f64> {
        Ok(sum_series(&self.metrics().await?, name, filter))
    }

    /// Resident memory now, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> Result<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid()))?;
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.split_whitespace().next())
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| anyhow!("no VmRSS for berth"))
    }

    /// CPU time used so far (user + system), in clock ticks of 10 ms.
    pub fn cpu_ticks(&self) -> Result<u64> {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.pid()))?;
        // Fields after the command name, which is in parentheses and may hold spaces.
        let rest = stat
            .rsplit_once(')')
            .map(|(_, r)| r)
            .ok_or_else(|| anyhow!("unreadable /proc stat"))?;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
        let utime: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0);
        let stime: u64 = fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        Ok(utime + stime)
    }

    /// SIGTERM, then waits up to 15 s for it to exit.
    pub async fn stop(mut self) -> Result<()> {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid().to_string()])
            .status();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        while self.child.try_wait()?.is_none() {
            if tokio::time::Instant::now() > deadline {
                bail!("berth did not exit within 15 s of SIGTERM");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        Ok(())
    }
}

impl Drop for AgentProc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// The sum of the series of family `name` whose labels contain `filter`.
pub fn sum_series(text: &str, name: &str, filter: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit_once(' '))
        .filter(|(series, _)| {
            let family = series.split('{').next().unwrap_or_default();
            family == name && series.contains(filter)
        })
        .filter_map(|(_, v)| v.parse::<f64>().ok())
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn series_are_summed_by_family_and_filter() {
        let text = "# HELP x\nberth_registry_writes_total{op=\"register\"} 3\n\
                    berth_registry_writes_total{op=\"health\"} 2\n\
                    berth_registry_writes_total_other 9\n";
        assert_eq!(sum_series(text, "berth_registry_writes_total", ""), 5.0);
        assert_eq!(
            sum_series(text, "berth_registry_writes_total", "register"),
            3.0
        );
    }
}
