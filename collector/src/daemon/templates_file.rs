//! Templates persist across restarts, so that data arriving right after one
//! is parsed at once rather than waiting for the next template refresh.

use std::{
    io,
    path::{Path, PathBuf},
};

use crate::netflow::{Limits, TemplateCache};

/// The cache saved at `path`, or an empty one when there is none. A file
/// that cannot be read back is moved aside (`.bad`) with a warning: losing
/// templates costs only a wait for their refresh, never a failed start.
pub fn restore(path: &Path, limits: Limits, now_ms: u64) -> io::Result<TemplateCache> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(TemplateCache::new(limits)),
        Err(err) => {
            return Err(io::Error::new(
                err.kind(),
                format!("templates file {}: {err}", path.display()),
            ));
        }
    };
    match TemplateCache::restore(&bytes, limits, now_ms) {
        Ok(cache) => Ok(cache),
        Err(err) => {
            let aside = with_suffix(path, ".bad");
            tracing::warn!(
                "templates file {} unusable ({err:?}); moved to {}, starting without templates",
                path.display(),
                aside.display()
            );
            std::fs::rename(path, &aside)?;
            Ok(TemplateCache::new(limits))
        }
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename, so a
/// crash leaves the old file or the new one, never half of one.
pub fn save(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let tmp = with_suffix(path, ".tmp");
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

fn with_suffix(path: &Path, suffix: &str) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(suffix);
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_file_is_an_empty_cache_and_garbage_is_moved_aside() {
        let dir = std::env::temp_dir().join(format!("flowtally-templates-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("t");
        let cache = restore(&path, Limits::default(), 0).unwrap();
        assert_eq!(cache.compiled().count(), 0);
        save(&path, &cache.save()).unwrap();
        restore(&path, Limits::default(), 0).expect("round trip");
        std::fs::write(&path, b"\x00garbage").unwrap();
        restore(&path, Limits::default(), 0).expect("garbage is not fatal");
        assert!(with_suffix(&path, ".bad").exists());
        assert!(!path.exists());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
