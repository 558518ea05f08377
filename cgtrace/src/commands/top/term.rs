//! The terminal side of `cgtrace top`, apart from drawing: the terminal's input waited on with
//! `poll(2)` (never by spinning), a terminal that went away (hang-up) told apart from one with
//! keys to read, the signals that end a replay's view, and stderr kept off the screen while it
//! is up (restored before a panic message is printed).
//!
//! Why not only crossterm's `event::poll(timeout)`: once the terminal is gone (the window
//! closed, `tmux kill-server`), crossterm 0.29 reads `EIO` or end-of-file from it in a loop
//! inside `poll` that never returns — a process spinning at 100% that no longer sees SIGTERM.
//! So the wait is ours, on the terminal and a signal pipe, and crossterm is asked to read only
//! when the terminal has input and has not hung up.
use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom, Write},
    os::{
        fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd},
        unix::net::UnixStream,
    },
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicI32, Ordering},
    },
    time::Duration,
};

/// Captured stderr kept while the screen is up; older text is dropped past this.
const CAPTURE_MAX: u64 = 1 << 20;

/// Whether `fd` is a terminal.
pub fn is_terminal(fd: RawFd) -> bool {
    // SAFETY: isatty only inspects the descriptor number; any value is allowed.
    unsafe { libc::isatty(fd) == 1 }
}

/// What the terminal has for us.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TtyState {
    /// Nothing to read.
    Quiet,
    /// Input to read (keys, a terminal reply).
    Input,
    /// Hung up or closed: nothing will ever come, and reading it fails or returns nothing.
    Gone,
}

/// The terminal crossterm reads keys from: stdin when it is a terminal, else `/dev/tty` (the
/// same choice crossterm makes), for waiting on with `poll(2)`.
pub struct Tty {
    fd: RawFd,
    /// Our own descriptor of `/dev/tty`, when stdin is not the terminal.
    _owned: Option<OwnedFd>,
}

impl AsRawFd for Tty {
    fn as_raw_fd(&self) -> RawFd {
        self.fd
    }
}

impl Tty {
    pub fn open() -> io::Result<Tty> {
        if is_terminal(libc::STDIN_FILENO) {
            return Ok(Tty {
                fd: libc::STDIN_FILENO,
                _owned: None,
            });
        }
        let owned = OwnedFd::from(File::options().read(true).write(true).open("/dev/tty")?);
        Ok(Tty {
            fd: owned.as_raw_fd(),
            _owned: Some(owned),
        })
    }

    /// The terminal's state now (does not wait).
    pub fn state(&self) -> io::Result<TtyState> {
        Ok(self.wait(None, Some(Duration::ZERO))?.0)
    }

    /// Waits up to `timeout` (None: for ever) until the terminal has input or hangs up, or
    /// `also` is readable; returns the terminal's state and whether `also` is readable. A signal
    /// ends the wait early (both quiet).
    pub fn wait(
        &self,
        also: Option<BorrowedFd<'_>>,
        timeout: Option<Duration>,
    ) -> io::Result<(TtyState, bool)> {
        let mut fds = [
            libc::pollfd {
                fd: self.fd,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: also.map_or(-1, |f| f.as_raw_fd()),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        let ms = match timeout {
            None => -1,
            // Rounded up, so a wait for 0.4 ms does not become a busy poll with timeout 0.
            Some(t) => i32::try_from(t.as_nanos().div_ceil(1_000_000)).unwrap_or(i32::MAX),
        };
        // SAFETY: `fds` is a valid array of two pollfd for the whole call (a negative fd is
        // ignored by poll), and its length is passed with it.
        let n = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok((TtyState::Quiet, false));
            }
            return Err(e);
        }
        let r = fds[0].revents;
        let tty = if r & (libc::POLLHUP | libc::POLLERR | libc::POLLNVAL) != 0 {
            TtyState::Gone
        } else if r & libc::POLLIN != 0 {
            TtyState::Input
        } else {
            TtyState::Quiet
        };
        Ok((tty, fds[1].revents != 0))
    }
}

/// SIGTERM, SIGINT and SIGHUP (end the view) and SIGWINCH (redraw), for a view that runs
/// without the traced run's signal handling (`top --replay`): flags, and a pipe that wakes a
/// [`Tty::wait`] on it.
pub struct StopSignals {
    quit: Arc<AtomicBool>,
    resized: Arc<AtomicBool>,
    wake: UnixStream,
}

impl StopSignals {
    pub fn install() -> io::Result<StopSignals> {
        let (wake, write) = UnixStream::pair()?;
        wake.set_nonblocking(true)?;
        write.set_nonblocking(true)?;
        let quit = Arc::new(AtomicBool::new(false));
        let resized = Arc::new(AtomicBool::new(false));
        for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGHUP] {
            signal_hook::flag::register(sig, quit.clone())?;
            signal_hook::low_level::pipe::register(sig, write.try_clone()?)?;
        }
        signal_hook::flag::register(libc::SIGWINCH, resized.clone())?;
        signal_hook::low_level::pipe::register(libc::SIGWINCH, write)?;
        Ok(StopSignals {
            quit,
            resized,
            wake,
        })
    }

    /// A signal asked the view to end.
    pub fn quit(&self) -> bool {
        self.quit.load(Ordering::Relaxed)
    }

    /// The window changed size since the last call.
    pub fn take_resized(&self) -> bool {
        self.resized.swap(false, Ordering::Relaxed)
    }

    /// Readable when a signal arrived; [`StopSignals::drain`] empties it.
    pub fn fd(&self) -> BorrowedFd<'_> {
        self.wake.as_fd()
    }

    pub fn drain(&self) {
        let mut buf = [0u8; 64];
        while matches!((&self.wake).read(&mut buf), Ok(n) if n > 0) {}
    }
}

/// The saved stderr while a capture runs (-1: none), for the panic hook.
static SAVED_STDERR: AtomicI32 = AtomicI32::new(-1);

/// Puts the saved stderr back on fd 2 if a capture runs (safe to call from a panic hook).
fn restore_stderr() {
    let fd = SAVED_STDERR.swap(-1, Ordering::SeqCst);
    if fd >= 0 {
        // SAFETY: `fd` is the capture's saved descriptor, open until the capture stops (which
        // takes it out of SAVED_STDERR first); dup2 onto fd 2 only replaces stderr.
        unsafe { libc::dup2(fd, libc::STDERR_FILENO) };
    }
}

/// Installs (once) a panic hook that gives stderr back before the previous hooks run — the
/// terminal restore ratatui installed and the default message — so the message is seen.
pub fn install_panic_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let prev = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            restore_stderr();
            prev(info);
        }));
    });
}

/// Stderr sent to a memory file while the screen is up (its text would tear the screen), and
/// printed once the terminal is back.
pub struct StderrCapture {
    saved: OwnedFd,
    file: File,
}

impl StderrCapture {
    /// Starts capturing when stderr is a terminal (else it is left alone: None).
    pub fn start() -> io::Result<Option<StderrCapture>> {
        if !is_terminal(libc::STDERR_FILENO) {
            return Ok(None);
        }
        // SAFETY: memfd_create with a valid NUL-terminated name and flags; it returns a new
        // descriptor or -1.
        let mfd = unsafe { libc::memfd_create(c"cgtrace-top-stderr".as_ptr(), libc::MFD_CLOEXEC) };
        if mfd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: mfd is a fresh descriptor that nothing else owns.
        let file = unsafe { File::from_raw_fd(mfd) };
        // SAFETY: fcntl(F_DUPFD_CLOEXEC) on fd 2 returns a new descriptor or -1.
        let saved = unsafe { libc::fcntl(libc::STDERR_FILENO, libc::F_DUPFD_CLOEXEC, 0) };
        if saved < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: saved is a fresh descriptor that nothing else owns.
        let saved = unsafe { OwnedFd::from_raw_fd(saved) };
        // SAFETY: both descriptors are open; dup2 replaces fd 2 atomically.
        if unsafe { libc::dup2(file.as_raw_fd(), libc::STDERR_FILENO) } < 0 {
            return Err(io::Error::last_os_error());
        }
        SAVED_STDERR.store(saved.as_raw_fd(), Ordering::SeqCst);
        Ok(Some(StderrCapture { saved, file }))
    }

    /// Keeps the capture bounded: past [`CAPTURE_MAX`] it starts over (fd 2 shares the offset).
    pub fn trim(&mut self) {
        if self.file.metadata().is_ok_and(|m| m.len() > CAPTURE_MAX) {
            let _ = self.file.set_len(0);
            let _ = self.file.seek(SeekFrom::Start(0));
            let _ = writeln!(self.file, "cgtrace: (earlier messages dropped)");
        }
    }

    /// Puts stderr back and prints what was captured.
    pub fn stop(mut self) {
        SAVED_STDERR.store(-1, Ordering::SeqCst);
        // SAFETY: both descriptors are open; dup2 puts the saved stderr back on fd 2.
        unsafe { libc::dup2(self.saved.as_raw_fd(), libc::STDERR_FILENO) };
        let mut text = Vec::new();
        if self.file.seek(SeekFrom::Start(0)).is_ok() && self.file.read_to_end(&mut text).is_ok() {
            let _ = io::stderr().write_all(&text);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pty pair: the master end and a [`Tty`] on the slave end.
    fn pty() -> (OwnedFd, Tty) {
        // SAFETY: posix_openpt returns a new descriptor or -1.
        let m = unsafe { libc::posix_openpt(libc::O_RDWR | libc::O_NOCTTY | libc::O_CLOEXEC) };
        assert!(m >= 0, "posix_openpt: {}", io::Error::last_os_error());
        // SAFETY: m is a fresh descriptor that nothing else owns.
        let master = unsafe { OwnedFd::from_raw_fd(m) };
        // SAFETY: grantpt/unlockpt on the master just opened.
        assert_eq!(unsafe { libc::grantpt(m) }, 0);
        // SAFETY: as above.
        assert_eq!(unsafe { libc::unlockpt(m) }, 0);
        let mut name = [0 as libc::c_char; 128];
        // SAFETY: the buffer and its length are valid; ptsname_r writes a NUL-terminated name.
        let rc = unsafe { libc::ptsname_r(m, name.as_mut_ptr(), name.len()) };
        assert_eq!(rc, 0);
        // SAFETY: ptsname_r wrote a NUL-terminated string into `name`.
        let path = unsafe { std::ffi::CStr::from_ptr(name.as_ptr()) };
        let slave = File::options()
            .read(true)
            .write(true)
            .open(path.to_str().unwrap_or_default())
            .unwrap_or_else(|e| panic!("open {path:?}: {e}"));
        let slave = OwnedFd::from(slave);
        let tty = Tty {
            fd: slave.as_raw_fd(),
            _owned: Some(slave),
        };
        (master, tty)
    }

    #[test]
    fn tells_input_from_quiet_and_hang_up() {
        let (master, tty) = pty();
        assert_eq!(tty.state().ok(), Some(TtyState::Quiet));
        let t0 = std::time::Instant::now();
        let (s, also) = tty
            .wait(None, Some(Duration::from_millis(30)))
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(
            s == TtyState::Quiet && !also && t0.elapsed() >= Duration::from_millis(25),
            "a quiet terminal waits out the timeout"
        );
        let mut m = File::from(master);
        m.write_all(b"q\n").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(tty.state().ok(), Some(TtyState::Input));
        drop(m);
        assert_eq!(
            tty.state().ok(),
            Some(TtyState::Gone),
            "closing the master end is a hang-up"
        );
        let t0 = std::time::Instant::now();
        let (s, _) = tty.wait(None, None).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(s, TtyState::Gone);
        assert!(
            t0.elapsed() < Duration::from_secs(1),
            "a hang-up ends a wait at once"
        );
    }

    #[test]
    fn wakes_on_the_other_descriptor() {
        let (_master, tty) = pty();
        let (a, mut b) = UnixStream::pair().unwrap_or_else(|e| panic!("{e}"));
        b.write_all(b"x").unwrap_or_else(|e| panic!("{e}"));
        let (s, also) = tty
            .wait(Some(a.as_fd()), None)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!((s, also), (TtyState::Quiet, true));
    }
}
