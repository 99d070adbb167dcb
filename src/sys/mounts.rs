//! `/proc/self/mountinfo`, read once and parsed by plain code: where the cgroup v2
//! hierarchy is mounted (`cgroup`), and every mount point with its flags (the
//! `sandbox`'s fallback on kernels without `mount_setattr`).

use std::path::PathBuf;

/// One line of mountinfo: the fields the agent uses.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    /// The directory of the file system mounted here (for cgroup2: a cgroup path).
    pub root: String,
    pub point: PathBuf,
    /// The per-mount options (`rw,nosuid,relatime`), which a bind remount must repeat.
    pub options: String,
    pub fstype: String,
}

/// The mounts of the calling process's namespace, in mount order; empty if unreadable.
pub fn mounts() -> Vec<Mount> {
    mounts_of("/proc/self/mountinfo").unwrap_or_default()
}

/// The mounts a mountinfo file lists (`/proc/thread-self/mountinfo`: the calling
/// thread's namespace), in mount order.
pub fn mounts_of(mountinfo: &str) -> std::io::Result<Vec<Mount>> {
    std::fs::read_to_string(mountinfo).map(|text| parse(&text))
}

/// Parses mountinfo text (proc(5)): `id parent dev root point options [tags…] - type
/// source super-options`. A line that does not have that shape is skipped.
pub fn parse(text: &str) -> Vec<Mount> {
    text.lines()
        .filter_map(|line| {
            let mut fields = line.split(' ');
            let root = unescape(fields.nth(3)?);
            let point = PathBuf::from(unescape(fields.next()?));
            let options = fields.next()?.to_owned();
            let fstype = fields.skip_while(|f| *f != "-").nth(1)?.to_owned();
            Some(Mount {
                root,
                point,
                options,
                fstype,
            })
        })
        .collect()
}

/// mountinfo writes space, tab, newline and backslash as `\040`, `\011`, `\012`, `\134`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| bytes[i] == b'\\' && d.iter().all(|b| (b'0'..=b'7').contains(b)))
            .map(|d| d.iter().fold(0u32, |n, b| n * 8 + u32::from(b - b'0')));
        match octal.and_then(|n| u8::try_from(n).ok()) {
            Some(b) => {
                out.push(b);
                i += 4;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    #[test]
    fn lines_become_mounts_with_escapes_undone() {
        let text = "\
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime shared:9 - cgroup2 cgroup2 rw
22 1 8:1 / / rw,relatime - ext4 /dev/vda rw
90 22 0:50 /data /mnt/my\\040disk ro,nosuid,nodev master:3 - ext4 /dev/sdb1 rw
garbage line
";
        let m = parse(text);
        assert_eq!(m.len(), 3);
        assert_eq!(m[0].point, PathBuf::from("/sys/fs/cgroup/unified"));
        assert_eq!((m[0].root.as_str(), m[0].fstype.as_str()), ("/", "cgroup2"));
        assert_eq!(m[2].point, PathBuf::from("/mnt/my disk"));
        assert_eq!(m[2].options, "ro,nosuid,nodev");
        assert_eq!(m[2].root, "/data");
        assert_eq!(unescape("a\\134b\\0"), "a\\b\\0");
        assert!(mounts().iter().any(|m| m.point == Path::new("/")));
    }
}
