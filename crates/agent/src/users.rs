//! User lookup from `/etc/passwd`, parsed by hand: the agent is linked statically, so the
//! NSS-backed libc functions (`getpwnam` & co.) must not be used.

use std::path::Path;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PasswdEntry {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
}

/// Parses passwd-format text (`name:pw:uid:gid:gecos:home:shell`), skipping malformed lines.
pub fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|line| {
            let line = line.trim_end_matches('\r');
            if line.is_empty() || line.starts_with('#') {
                return None;
            }
            let f: Vec<&str> = line.split(':').collect();
            if f.len() < 7 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
                shell: f[6].to_string(),
            })
        })
        .collect()
}

/// Finds `name` (or a numeric uid given as a string) in the passwd file at `path`.
pub fn lookup_in(path: &Path, name: &str) -> std::io::Result<Option<PasswdEntry>> {
    let text = std::fs::read_to_string(path)?;
    let entries = parse_passwd(&text);
    if let Some(e) = entries.iter().find(|e| e.name == name) {
        return Ok(Some(e.clone()));
    }
    if let Ok(uid) = name.parse::<u32>() {
        return Ok(entries.into_iter().find(|e| e.uid == uid));
    }
    Ok(None)
}

/// Finds `name` in `/etc/passwd`.
pub fn lookup(name: &str) -> std::io::Result<Option<PasswdEntry>> {
    lookup_in(Path::new("/etc/passwd"), name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_passwd_lines() {
        let text = "root:x:0:0:root:/root:/bin/bash\n\
                    # comment\n\
                    broken line\n\
                    nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n\
                    bad:x:notanumber:1::/:/bin/sh\n";
        let e = parse_passwd(text);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].name, "root");
        assert_eq!(e[1].uid, 65534);
        assert_eq!(e[1].home, "/nonexistent");
    }

    #[test]
    fn looks_up_by_name_and_uid() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("passwd");
        std::fs::write(&p, "dev:x:1000:1001:Dev:/home/dev:/bin/sh\n").unwrap();
        assert_eq!(lookup_in(&p, "dev").unwrap().unwrap().gid, 1001);
        assert_eq!(lookup_in(&p, "1000").unwrap().unwrap().name, "dev");
        assert!(lookup_in(&p, "nope").unwrap().is_none());
    }
}
