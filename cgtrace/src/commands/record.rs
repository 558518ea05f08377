//! `cgtrace record`: the session file sink, created safely, flushed in batches, synced.
use std::{
    cell::Cell,
    fs::{File, OpenOptions},
    io::{self, BufWriter, Write},
    os::unix::fs::{OpenOptionsExt, PermissionsExt},
    path::{Path, PathBuf},
    rc::Rc,
    time::{Duration, Instant},
};

use anyhow::Context as _;
use cgtrace_common::EventKind;

use crate::{
    commands::replay::RecordedOptions,
    format::units::human_bytes,
    kernel::memcg_ids::KernelMemcgs,
    model::{baseline::Baseline, event::Event, tracker::PodStats},
    pipeline::{
        Pipeline,
        facts::RunFacts,
        output::{RenderContext, Sink, Summary, SummarySink},
    },
    session::{Header, SessionWriter},
};

/// `cgtrace record` options.
#[derive(Clone, Debug)]
pub struct RecordOptions {
    pub path: PathBuf,
    /// Stop cleanly once the file reaches this many bytes.
    pub max_size: Option<u64>,
    /// Overwrite an existing file (never through a symlink).
    pub force: bool,
}

/// A recording in progress: how big the file is, for `--max-size` and the status line.
pub struct Recording {
    opts: RecordOptions,
    bytes: Rc<Cell<u64>>,
}

impl Recording {
    /// `--max-size` reached.
    pub fn full(&self) -> bool {
        let full = self.opts.max_size.is_some_and(|m| self.bytes.get() >= m);
        if full {
            eprintln!(
                "cgtrace: {} reached --max-size ({}): stopping",
                self.opts.path.display(),
                human_bytes(self.bytes.get())
            );
        }
        full
    }

    /// `recording FILE: 12s · 3400 events (283/s) · lost 0 · 41.2 KiB · dying memcgs 7`.
    pub fn status(&self, pipe: &Pipeline, elapsed: Duration) -> String {
        let secs = elapsed.as_secs_f64();
        let n: u64 = pipe.counts.seen.iter().sum();
        format!(
            "recording {}: {secs:.0}s · {n} events ({:.0}/s) · lost {} · {} · dying memcgs {}",
            self.opts.path.display(),
            n as f64 / secs.max(0.001),
            pipe.counts.lost.iter().sum::<u64>(),
            human_bytes(self.bytes.get()),
            pipe.tracker.totals().dying
        )
    }
}

/// The header of a session recorded from a run with these facts.
pub fn header(facts: &RunFacts) -> anyhow::Result<Header> {
    Ok(Header {
        cgtrace_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel_release: facts.kernel_release.clone(),
        hostname: hostname(),
        boot_id: boot_id(),
        clock: facts.clock,
        tier: facts.tier.name().to_string(),
        attach: facts.tracepoints.name().to_string(),
        hierarchies: facts.hierarchies.clone(),
        options: serde_json::to_string(&RecordedOptions::of(facts))?,
        page_size: facts.page_size,
        filters: facts.filters.clone(),
        rejected: facts.rejected.clone(),
        fallbacks: facts.fallbacks.clone(),
        oom: facts.oom.clone(),
        buffer: Some(facts.buffer.name().to_string()),
    })
}

/// `record`'s sinks: the session file, and the summary as text on stderr.
pub fn start(
    opts: &RecordOptions,
    facts: &RunFacts,
    baseline: &Baseline,
) -> anyhow::Result<(Vec<Box<dyn Sink>>, Recording)> {
    let file = create(&opts.path, opts.force)?;
    let writer = SessionWriter::new(
        BufWriter::with_capacity(1 << 16, file),
        &header(facts)?,
        baseline,
    )
    .with_context(|| format!("writing {}", opts.path.display()))?;
    let sink = SessionSink::new(writer, opts.path.clone());
    let recording = Recording {
        opts: opts.clone(),
        bytes: sink.bytes.clone(),
    };
    let ctx = RenderContext::new(facts.hierarchies.clone(), facts.clock);
    let sinks: Vec<Box<dyn Sink>> = vec![
        Box::new(sink),
        Box::new(SummarySink::new(io::stderr(), ctx)),
    ];
    Ok((sinks, recording))
}

/// Creates the session file: mode 0600, never through a symlink, refusing an existing file
/// unless `force`.
pub fn create(path: &Path, force: bool) -> anyhow::Result<File> {
    let mut oo = OpenOptions::new();
    oo.write(true)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW | libc::O_CLOEXEC);
    if force {
        oo.create(true).truncate(true);
    } else {
        oo.create_new(true);
    }
    let f = oo.open(path).map_err(|e| {
        let hint = match e.raw_os_error() {
            Some(libc::EEXIST) => " (it exists; --force overwrites it)",
            Some(libc::ELOOP) => " (it is a symlink: refusing to write through it)",
            _ => "",
        };
        anyhow::anyhow!("cannot create {}: {e}{hint}", path.display())
    })?;
    // An existing file keeps its mode on truncation: make it private too.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))
        .with_context(|| format!("chmod 600 {}", path.display()))?;
    Ok(f)
}

/// Writes every event, lost count and pod name to the session; the footer and an fsync at the
/// end. Shares the bytes written with the run loop (for `--max-size` and the status line).
pub struct SessionSink {
    writer: Option<SessionWriter<BufWriter<File>>>,
    pub bytes: Rc<Cell<u64>>,
    last_sync: Instant,
    path: PathBuf,
}

impl SessionSink {
    pub fn new(writer: SessionWriter<BufWriter<File>>, path: PathBuf) -> SessionSink {
        let bytes = Rc::new(Cell::new(writer.bytes_written()));
        SessionSink {
            writer: Some(writer),
            bytes,
            last_sync: Instant::now(),
            path,
        }
    }

    fn w(&mut self) -> io::Result<&mut SessionWriter<BufWriter<File>>> {
        self.writer
            .as_mut()
            .ok_or_else(|| io::Error::other("the session is already finished"))
    }

    fn context(&self, e: io::Error) -> io::Error {
        io::Error::new(e.kind(), format!("writing {}: {e}", self.path.display()))
    }
}

impl Sink for SessionSink {
    fn event(&mut self, ev: &Event<'_>, _pod: Option<&PodStats>) -> io::Result<()> {
        let r = self.w()?.event(ev);
        r.map_err(|e| self.context(e))
    }

    fn lost(&mut self, ts_ns: u64, kind: EventKind, count: u64) -> io::Result<()> {
        let r = self.w()?.lost(ts_ns, kind, count);
        r.map_err(|e| self.context(e))
    }

    fn note(&mut self, text: &str) -> io::Result<()> {
        let r = self.w()?.note(text);
        r.map_err(|e| self.context(e))
    }

    fn kernel_memcgs(&mut self, k: &KernelMemcgs) -> io::Result<()> {
        let r = self.w()?.kernel_memcgs(k);
        r.map_err(|e| self.context(e))
    }

    fn pod_name(&mut self, uid: &str, namespace: &str, name: &str) -> io::Result<()> {
        let r = self.w()?.pod_name(uid, namespace, name);
        r.map_err(|e| self.context(e))
    }

    fn summary(&mut self, s: &Summary) -> io::Result<()> {
        let Some(w) = self.writer.take() else {
            return Ok(());
        };
        let end = s.end_ns;
        let buf = w.finish_at(end).map_err(|e| self.context(e))?;
        let file = buf.into_inner().map_err(|e| self.context(e.into_error()))?;
        file.sync_all().map_err(|e| self.context(e))
    }

    /// Closes the current frame (a batch) and writes it; syncs about once a second so a power
    /// loss costs at most that much.
    fn flush(&mut self) -> io::Result<()> {
        let Some(w) = self.writer.as_mut() else {
            return Ok(());
        };
        let r = w.flush_batch().and_then(|()| w.get_mut().flush());
        if let Err(e) = r {
            return Err(self.context(e));
        }
        self.bytes.set(w.bytes_written());
        if self.last_sync.elapsed() >= Duration::from_secs(1) {
            self.last_sync = Instant::now();
            let r = w.get_ref().get_ref().sync_data();
            r.map_err(|e| self.context(e))?;
        }
        Ok(())
    }
}

/// The host name, the boot id: facts for the session header.
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

pub fn boot_id() -> String {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_private_files_and_refuses_symlinks_and_existing_files() {
        let dir = std::env::temp_dir().join(format!("cgtrace-record-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("dir");
        let p = dir.join("s.cgtrace");
        let f = create(&p, false).expect("create");
        drop(f);
        let mode = std::fs::metadata(&p).expect("stat").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        let e = create(&p, false).err().map(|e| e.to_string());
        assert!(e.is_some_and(|e| e.contains("--force")));
        assert!(create(&p, true).is_ok());
        let target = dir.join("victim");
        std::fs::write(&target, b"keep").expect("victim");
        let link = dir.join("link.cgtrace");
        std::os::unix::fs::symlink(&target, &link).expect("symlink");
        for force in [false, true] {
            assert!(create(&link, force).is_err(), "force={force}");
        }
        assert_eq!(std::fs::read(&target).expect("read"), b"keep");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
