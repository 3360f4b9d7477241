//! `--on-silent CMD` and `--on-end CMD`: a command run through `sh -c` when a
//! session goes silent (or ends cleanly with lines lost), with the facts in `NCU_*`
//! variables and `NCU_REPORT` naming a Markdown report of that session. The receive
//! loop only hands a job over; one supervisor thread starts at most `max` commands at
//! once (the rest wait, up to [`MAX_QUEUED`]), kills a command that runs past the
//! timeout (its whole process group), and logs each one's exit status and the tail of
//! its standard error on ncu-recv's stderr.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Hook runs waiting for a free slot; past it a run is dropped, and said so.
pub(crate) const MAX_QUEUED: usize = 256;
/// How much of a hook's standard error is logged.
const STDERR_TAIL: u64 = 512;
/// How often running hooks are looked at.
const TICK: Duration = Duration::from_millis(20);

/// One run of a hook.
pub(crate) struct Job {
    /// The command, for `sh -c`.
    pub(crate) command: String,
    /// `NCU_*` variables (`NCU_REPORT` is added).
    pub(crate) env: Vec<(&'static str, String)>,
    /// The Markdown report of the session.
    pub(crate) report: String,
    /// Who it is about, for the log: `silent hook for db-7 (session ...)`.
    pub(crate) label: String,
}

/// Hands jobs to the supervisor thread.
pub(crate) struct Hooks {
    tx: mpsc::Sender<Job>,
}

struct Running {
    child: Child,
    deadline: Instant,
    label: String,
    report: PathBuf,
    stderr: PathBuf,
}

impl Hooks {
    /// Starts the supervisor: at most `max` hooks at once, each killed after
    /// `timeout`; reports and stderr captures go under a folder of `std::env::temp_dir()`.
    pub(crate) fn start(max: usize, timeout: Duration) -> std::io::Result<Hooks> {
        let dir = std::env::temp_dir().join(format!("ncu-recv-hooks-{}", std::process::id()));
        std::fs::create_dir_all(&dir)?;
        let (tx, rx) = mpsc::channel::<Job>();
        std::thread::Builder::new()
            .name("hooks".to_owned())
            .spawn(move || supervise(&rx, max.max(1), timeout, &dir))?;
        Ok(Hooks { tx })
    }

    /// Queues a run; never blocks.
    pub(crate) fn submit(&self, job: Job) {
        let _ = self.tx.send(job);
    }
}

fn supervise(rx: &mpsc::Receiver<Job>, max: usize, timeout: Duration, dir: &std::path::Path) {
    let mut queue: VecDeque<Job> = VecDeque::new();
    let mut running: Vec<Running> = Vec::new();
    let mut next_id = 0u64;
    let mut dropped = 0u64;
    loop {
        let job = if running.is_empty() && queue.is_empty() {
            match rx.recv() {
                Ok(job) => Some(job),
                Err(_) => return,
            }
        } else {
            match rx.recv_timeout(TICK) {
                Ok(job) => Some(job),
                Err(mpsc::RecvTimeoutError::Timeout) => None,
                Err(mpsc::RecvTimeoutError::Disconnected) if running.is_empty() => return,
                Err(mpsc::RecvTimeoutError::Disconnected) => None,
            }
        };
        if let Some(job) = job {
            if queue.len() >= MAX_QUEUED {
                dropped += 1;
                eprintln!(
                    "ncu-recv: {}: not run, {MAX_QUEUED} hook runs already wait ({dropped} dropped so far)",
                    job.label
                );
            } else {
                queue.push_back(job);
            }
        }
        let now = Instant::now();
        running.retain_mut(|r| !finished(r, now));
        while running.len() < max {
            let Some(job) = queue.pop_front() else { break };
            next_id += 1;
            if let Some(r) = launch(job, dir, next_id, timeout) {
                running.push(r);
            }
        }
    }
}

/// Starts one run; a failure to start is logged.
fn launch(job: Job, dir: &std::path::Path, id: u64, timeout: Duration) -> Option<Running> {
    let report = dir.join(format!("report-{id}.md"));
    let stderr = dir.join(format!("stderr-{id}"));
    let started = std::fs::write(&report, &job.report)
        .and_then(|()| File::create(&stderr))
        .and_then(|err| {
            Command::new("/bin/sh")
                .arg("-c")
                .arg(&job.command)
                .envs(job.env.iter().map(|(k, v)| (*k, v.as_str())))
                .env("NCU_REPORT", &report)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(err)
                // Its own process group: a timeout kills what it started too.
                .process_group(0)
                .spawn()
        });
    match started {
        Ok(child) => Some(Running {
            child,
            deadline: Instant::now() + timeout,
            label: job.label,
            report,
            stderr,
        }),
        Err(e) => {
            eprintln!("ncu-recv: {}: cannot run it: {e}", job.label);
            let _ = std::fs::remove_file(&report);
            let _ = std::fs::remove_file(&stderr);
            None
        }
    }
}

/// Whether run `r` is over (then logged and cleaned up); kills it past its deadline.
fn finished(r: &mut Running, now: Instant) -> bool {
    let status = match r.child.try_wait() {
        Ok(Some(status)) => status,
        Ok(None) if now < r.deadline => return false,
        Ok(None) => {
            // SAFETY: kill takes a process group id and a signal; the child is not
            // reaped yet, so its pid (the group's id) is still ours.
            unsafe { libc::kill(-(r.child.id() as libc::pid_t), libc::SIGKILL) };
            let _ = r.child.wait();
            eprintln!(
                "ncu-recv: {}: killed, still running after its timeout{}",
                r.label,
                tail(&r.stderr)
            );
            cleanup(r);
            return true;
        }
        Err(e) => {
            eprintln!("ncu-recv: {}: cannot wait for it: {e}", r.label);
            cleanup(r);
            return true;
        }
    };
    match (status.code(), status.signal()) {
        (Some(0), _) => eprintln!("ncu-recv: {}: done (exit 0){}", r.label, tail(&r.stderr)),
        (Some(code), _) => eprintln!(
            "ncu-recv: {}: failed (exit {code}){}",
            r.label,
            tail(&r.stderr)
        ),
        (None, Some(sig)) => eprintln!(
            "ncu-recv: {}: killed by signal {sig}{}",
            r.label,
            tail(&r.stderr)
        ),
        (None, None) => eprintln!("ncu-recv: {}: ended ({status})", r.label),
    }
    cleanup(r);
    true
}

fn cleanup(r: &Running) {
    let _ = std::fs::remove_file(&r.report);
    let _ = std::fs::remove_file(&r.stderr);
}

/// `; stderr: ...` with the last bytes the run wrote to its stderr, escaped onto one
/// line; empty when it wrote nothing.
fn tail(path: &std::path::Path) -> String {
    let Ok(mut f) = File::open(path) else {
        return String::new();
    };
    let len = f.metadata().map_or(0, |m| m.len());
    let _ = f.seek(SeekFrom::Start(len.saturating_sub(STDERR_TAIL)));
    let mut bytes = Vec::new();
    let _ = f.read_to_end(&mut bytes);
    let trimmed = bytes.strip_suffix(b"\n").unwrap_or(&bytes);
    if trimmed.is_empty() {
        return String::new();
    }
    format!("; stderr: {}", crate::escape::field(trimmed))
}

/// The `NCU_*` variables of a run for `event` (silent or end) of the session
/// summarized in `summary`. Network text (the sender's name, the last line) is
/// escaped ([`crate::escape::field`]): a variable never holds a control byte.
pub(crate) fn env_of(
    event: &ncu_proto::event::Event,
    summary: Option<&ncu_proto::event::SessionSummary>,
) -> Vec<(&'static str, String)> {
    use crate::escape::field;
    use crate::output::{end_reason_name, rfc3339};
    use ncu_proto::event::Event;
    let mut env = Vec::new();
    let (kind, session) = match event {
        Event::Silent { session, .. } => ("silent", session),
        Event::End { session, .. } => ("end", session),
        _ => return env,
    };
    env.push(("NCU_EVENT", kind.to_owned()));
    env.push(("NCU_SENDER", field(session.name().as_bytes()).into_owned()));
    env.push(("NCU_SESSION", session.id_hex()));
    env.push(("NCU_ADDR", session.addr.to_string()));
    env.push(("NCU_SOURCE", session.kind.as_str().to_owned()));
    match event {
        Event::Silent {
            last_seq,
            last_text,
            last_sent_at_us,
            last_received_at_us,
            reason,
            ..
        } => {
            env.push(("NCU_LAST_SEQ", last_seq.to_string()));
            let text = last_text.as_deref().map(field).unwrap_or_default();
            env.push(("NCU_LAST_TEXT", text.into_owned()));
            env.push((
                "NCU_LAST_SENT_AT",
                last_sent_at_us.map(rfc3339).unwrap_or_default(),
            ));
            env.push(("NCU_LAST_RECEIVED_AT", rfc3339(*last_received_at_us)));
            env.push(("NCU_REASON", reason.as_str().to_owned()));
        }
        Event::End {
            last_seq,
            lines,
            reason,
            ..
        } => {
            env.push(("NCU_LAST_SEQ", last_seq.to_string()));
            env.push(("NCU_LINES_SENT", lines.to_string()));
            env.push(("NCU_REASON", end_reason_name(*reason).to_owned()));
        }
        _ => {}
    }
    if let Some(s) = summary {
        env.push(("NCU_LINES", s.lines.to_string()));
        env.push(("NCU_LOST", s.lost.to_string()));
        if let Event::End { .. } = event {
            if let Some((_, text, sent)) = &s.last_line {
                env.push(("NCU_LAST_TEXT", field(text).into_owned()));
                env.push(("NCU_LAST_SENT_AT", sent.map(rfc3339).unwrap_or_default()));
            }
        }
    }
    env
}
