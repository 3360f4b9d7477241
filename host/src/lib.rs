//! The IO both binaries share and `ncu-proto` keeps out of itself: reading and
//! creating key files (the text is `ncu_proto::seal`'s to parse and format),
//! randomness from the OS, and the one `poll(2)` wrapper of both loops.

use std::io::{self, Read, Write};
use std::path::Path;

use ncu_proto::seal::{self, KeyError, KeyErrorKind, Keys, KEY_LEN, MAX_KEY_FILE_LEN};

/// Reads and parses a key file, refusing one that group or others may read or
/// write (mode & 0o077 != 0), as ssh does with private keys. The mode is checked on
/// the opened file, so a swap between check and read cannot slip through.
pub fn load_keys(path: &Path) -> Result<Keys, KeyError> {
    let with_path = |kind| KeyError::new(Some(path.to_owned()), kind);
    let file = std::fs::File::open(path).map_err(|e| with_path(KeyErrorKind::Io(e)))?;
    let meta = file
        .metadata()
        .map_err(|e| with_path(KeyErrorKind::Io(e)))?;
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = meta.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(with_path(KeyErrorKind::TooOpen { mode }));
        }
    }
    if !meta.is_file() {
        return Err(with_path(KeyErrorKind::Io(io::Error::new(
            io::ErrorKind::InvalidInput,
            "not a regular file",
        ))));
    }
    let mut text = String::new();
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(|e| with_path(KeyErrorKind::Io(e)))?;
    if text.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(with_path(KeyErrorKind::TooLarge));
    }
    let parsed = Keys::parse(&text).map_err(|e| with_path(e.into_kind()));
    seal::wipe(&mut text.into_bytes());
    parsed
}

/// Creates a new key file at `path` holding one fresh random key, with mode 0600
/// from the start (the file is never readable by others, even briefly). Refuses to
/// overwrite an existing file.
pub fn generate_key_file(path: &Path) -> Result<(), KeyError> {
    let with_path = |kind| KeyError::new(Some(path.to_owned()), kind);
    let mut key = [0u8; KEY_LEN];
    getrandom::getrandom(&mut key)
        .map_err(|e| with_path(KeyErrorKind::Random(io::Error::other(e.to_string()))))?;
    let text = seal::key_file_text(&key);
    seal::wipe(&mut key);
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options
        .open(path)
        .map_err(|e| with_path(KeyErrorKind::Io(e)))?;
    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    seal::wipe(&mut text.into_bytes());
    if let Err(e) = written {
        drop(file);
        let _ = std::fs::remove_file(path);
        return Err(with_path(KeyErrorKind::Io(e)));
    }
    Ok(())
}

/// A `pollfd` asking for `events` on `fd`.
pub fn pollfd(fd: std::os::fd::RawFd, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// `poll(2)` on `fds`; `None` waits without limit, a timeout is rounded up to whole
/// milliseconds (so the deadline has passed when it returns: waking a little late
/// beats spinning until it). A signal (EINTR) or an error returns with every
/// `revents` 0; the error is returned, EINTR is not.
pub fn poll(fds: &mut [libc::pollfd], timeout: Option<std::time::Duration>) -> io::Result<()> {
    let ms = match timeout {
        None => -1,
        Some(t) => libc::c_int::try_from(t.as_micros().div_ceil(1000)).unwrap_or(libc::c_int::MAX),
    };
    // SAFETY: `fds` is a valid slice of pollfd for its length.
    let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
    if rc >= 0 {
        return Ok(());
    }
    let err = io::Error::last_os_error();
    for fd in fds.iter_mut() {
        fd.revents = 0;
    }
    if err.kind() == io::ErrorKind::Interrupted {
        Ok(())
    } else {
        Err(err)
    }
}

/// Eight random bytes from the OS, as a number (session ids, NACK counters' seed).
pub fn random_u64() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    getrandom::getrandom(&mut bytes).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(u64::from_le_bytes(bytes))
}

/// As [`random_u64`], but fails at once (`WouldBlock`) instead of waiting while
/// the kernel's generator is not initialised yet (early boot, an initramfs): for
/// bits that need not be secret, where waiting would delay the first records.
pub fn random_u64_now() -> io::Result<u64> {
    let mut bytes = [0u8; 8];
    // SAFETY: getrandom writes at most `bytes.len()` bytes into `bytes`.
    let rc =
        unsafe { libc::getrandom(bytes.as_mut_ptr().cast(), bytes.len(), libc::GRND_NONBLOCK) };
    if rc == bytes.len() as isize {
        Ok(u64::from_le_bytes(bytes))
    } else if rc < 0 {
        Err(io::Error::last_os_error())
    } else {
        Err(io::Error::other("short read from getrandom"))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use ncu_proto::seal::OpenError;

    use super::*;

    fn temp_path(name: &str) -> std::path::PathBuf {
        std::env::temp_dir().join(format!("ncu-host-test-{}-{name}", std::process::id()))
    }

    #[test]
    fn group_readable_key_file_is_refused() {
        let path = temp_path("key0640");
        std::fs::write(&path, format!("{}\n", "ab".repeat(32))).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = load_keys(&path).unwrap_err();
        assert!(matches!(err.kind(), KeyErrorKind::TooOpen { mode: 0o640 }));
        let message = err.to_string();
        assert!(
            message.contains(&format!("chmod 600 {}", path.display())),
            "{message}"
        );
        assert!(message.contains("0640"), "{message}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o604)).unwrap();
        assert!(load_keys(&path).is_err());
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(load_keys(&path).unwrap().len(), 1);
        std::fs::remove_file(&path).unwrap();

        let missing = load_keys(&path).unwrap_err();
        assert!(matches!(missing.kind(), KeyErrorKind::Io(_)));
        assert!(missing.to_string().contains(&path.display().to_string()));
    }

    #[test]
    fn generated_key_file_is_private_and_loads() {
        let path = temp_path("generated");
        let _ = std::fs::remove_file(&path);
        generate_key_file(&path).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let keys = load_keys(&path).unwrap();
        assert_eq!(keys.len(), 1);
        // Never overwrites, and two keys differ.
        let again = generate_key_file(&path).unwrap_err();
        assert!(
            matches!(again.kind(), KeyErrorKind::Io(e) if e.kind() == io::ErrorKind::AlreadyExists)
        );
        let other = temp_path("generated2");
        let _ = std::fs::remove_file(&other);
        generate_key_file(&other).unwrap();
        let mut framer = ncu_proto::framer::Framer::new(0x6553_f100_dead_beef, "k", 200);
        let mut outbox = ncu_proto::framer::Outbox::default();
        framer.push_line(0, b"secret", 1_700_000_000_000_000, &mut outbox);
        framer.flush(&mut outbox);
        let plain = outbox.datagrams().next().expect("a datagram").to_vec();
        let mut sealed = Vec::new();
        seal::seal(&keys, &plain, &mut sealed);
        let mut out = Vec::new();
        assert_eq!(seal::open(&keys, &sealed, &mut out), Ok(()));
        assert_eq!(
            seal::open(&load_keys(&other).unwrap(), &sealed, &mut out),
            Err(OpenError::Auth)
        );
        std::fs::remove_file(&path).unwrap();
        std::fs::remove_file(&other).unwrap();
    }
}
