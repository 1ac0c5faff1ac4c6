//! Drops informational lines a native library prints on stderr: LiteRT
//! prints "INFO: Created TensorFlow Lite XNNPACK delegate for CPU." on every
//! model compilation, and its C API exposes no log-severity setting.
//!
//! While the library call runs, file descriptor 2 points at a pipe; a thread
//! drains it; afterwards every captured line except `INFO: ` ones is written
//! to the real stderr, so warnings and errors (and anything other threads
//! printed meanwhile) still appear.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Runs `f` and shows what it printed on stderr without the lines that start
/// with `INFO: `. If the redirection cannot be set up, `f` runs as it is.
#[cfg(unix)]
pub fn without_info_lines<T>(f: impl FnOnce() -> T) -> T {
    use std::io::{Read, Write};
    use std::os::fd::FromRawFd;

    // One redirection at a time: fd 2 is process-wide.
    static REDIRECTING: Mutex<()> = Mutex::new(());
    let _one = REDIRECTING.lock().unwrap_or_else(|p| p.into_inner());
    let mut fds: [libc::c_int; 2] = [0; 2];
    // SAFETY: pipe2 writes two descriptors into the array it is given.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        return f();
    }
    let (read_end, write_end) = (fds[0], fds[1]);
    // SAFETY: duplicates fd 2 (restored from this copy before returning).
    let saved = unsafe { libc::fcntl(2, libc::F_DUPFD_CLOEXEC, 3) };
    // SAFETY: points fd 2 at the pipe; `saved` holds the original.
    let redirected = saved >= 0 && unsafe { libc::dup2(write_end, 2) } >= 0;
    if !redirected {
        // SAFETY: closing descriptors created above.
        unsafe {
            libc::close(read_end);
            libc::close(write_end);
            if saved >= 0 {
                libc::close(saved);
            }
        }
        return f();
    }
    // SAFETY: as above; fd 2 now holds the write end.
    unsafe { libc::close(write_end) };
    // SAFETY: O_NONBLOCK on our own read end, so the drain can stop even if
    // some other process inherited the write end and keeps it open.
    unsafe {
        let flags = libc::fcntl(read_end, libc::F_GETFL);
        libc::fcntl(read_end, libc::F_SETFL, flags | libc::O_NONBLOCK);
    }
    // SAFETY: read_end is a valid descriptor owned from here on by the File.
    let mut pipe = unsafe { std::fs::File::from_raw_fd(read_end) };
    let done = Arc::new(AtomicBool::new(false));
    let drain = {
        let done = done.clone();
        std::thread::spawn(move || {
            let mut captured = Vec::new();
            let mut buf = [0u8; 4096];
            loop {
                match pipe.read(&mut buf) {
                    Ok(0) => break,
                    Ok(n) => captured.extend_from_slice(&buf[..n]),
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                        if done.load(Ordering::Acquire) {
                            break;
                        }
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(_) => break,
                }
            }
            captured
        })
    };
    let out = f();
    // SAFETY: puts the original stderr back and closes the saved copy.
    unsafe {
        libc::dup2(saved, 2);
        libc::close(saved);
    }
    done.store(true, Ordering::Release);
    let captured = drain.join().unwrap_or_default();
    let text = String::from_utf8_lossy(&captured);
    let kept: String = text.split_inclusive('\n').filter(|l| !l.starts_with("INFO: ")).collect();
    if !kept.is_empty() {
        let _ = std::io::stderr().write_all(kept.as_bytes());
    }
    out
}

#[cfg(not(unix))]
pub fn without_info_lines<T>(f: impl FnOnce() -> T) -> T {
    f()
}
